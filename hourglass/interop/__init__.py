"""Import checkpoints and configs from other code bases."""
