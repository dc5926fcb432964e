"""Small recipes shared by the tests (procedural ``shapes`` data; a training step takes milliseconds)."""

from __future__ import annotations

__all__ = ["SMALL_RECIPE", "tiny_recipe_text"]

#: 32 px, unconditional, a neighborhood level over a global one: for recipe and CLI tests.
SMALL_RECIPE = """[model]
type = "hdit"
input_size = 32
num_classes = 0
mapping = { type = "hdit", depth = 1, width = 32, d_ff = 64 }

[[model.levels]]
depth = 1
width = 32
attention = { type = "neighborhood", kernel_size = 3, d_head = 16 }

[[model.levels]]
depth = 1
width = 64
attention = { type = "global", d_head = 16 }

[data]
dataset = { type = "shapes", size = 64 }
batch_size = 8
"""


def tiny_recipe_text(
    *, dataset_size: int = 64, checkpoint_every: int = 2, sample_steps: int = 2, sample_n: int = 6
) -> str:
    """TOML text of the tiny training recipe: 16 px, two levels of global attention, 6 classes, 4 steps of
    batch 8, every checkpoint kept, no grids while training."""
    return f"""
[model]
preset = "hdit_test"
num_classes = 6
input_size = 16
levels = [
  {{depth = 1, width = 32, attention = {{type = "global", d_head = 16}}}},
  {{depth = 1, width = 64, attention = {{type = "global", d_head = 16}}}},
]

[data]
dataset = {{type = "shapes", size = {dataset_size}}}
batch_size = 8
num_workers = 0

[train]
steps = 4
lr = 2e-3
checkpoint_every = {checkpoint_every}
sample_every = 0
log_every = 1
keep_last = 0

[sample]
sampler = "euler"
steps = {sample_steps}
n = {sample_n}
batch_size = {sample_n}

[runtime]
device = "cpu"
"""
