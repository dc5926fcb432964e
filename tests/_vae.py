"""Tiny randomly initialised ``AutoencoderKL`` folders and Hugging Face cache layouts for the VAE tests.

Nothing is downloaded: the VAE is built from a small config and written with diffusers'
``save_pretrained``; :func:`hub_cache` lays a folder out the way ``huggingface_hub`` caches a
repository (``models--owner--name/blobs``, ``snapshots/<commit>/...`` links, ``refs/main``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["TINY_VAE", "COMMIT", "DOCS_VAE", "DIT_VAE", "make_tiny_vae", "hub_cache", "latent_recipe_text", "docs_recipe_text",
           "docs_vae_cache"]

ROOT = Path(__file__).resolve().parents[1]
#: the Hub id docs/vae.md names, laid out offline with a tiny factor-8 VAE in its place
DOCS_VAE = "stabilityai/sd-vae-ft-ema"

#: 3 blocks: factor 4, 4 latent channels, about 20k parameters; scaling_factor 0.5 (not the default 0.18215)
TINY_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3, "block_out_channels": [8, 8, 8], "layers_per_block": 1,
    "latent_channels": 4, "norm_num_groups": 4, "sample_size": 32, "scaling_factor": 0.5,
}
#: the Hub id of the VAE a converted DiT names (docs/dit-uvit.md), laid out with the same stand-in
DIT_VAE = "stabilityai/sd-vae-ft-mse"
#: the commit hash of the laid-out snapshot
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_tiny_vae(folder: str | os.PathLike, seed: int = 0, **config: Any) -> Path:
    """Write a randomly initialised ``AutoencoderKL`` (:data:`TINY_VAE` updated with ``config``) to ``folder``."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**{**TINY_VAE, **config})
    vae.save_pretrained(str(folder))
    return Path(folder)


def hub_cache(cache: str | os.PathLike, repo_id: str, folder: str | os.PathLike, subfolder: str = "") -> Path:
    """Lay ``folder``'s files out in ``cache`` as huggingface_hub caches model repository ``repo_id``.

    The files go under ``subfolder`` of the snapshot (``"vae"``: as in a pipeline repository);
    returns the snapshot folder.
    """
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / COMMIT
    blobs.mkdir(parents=True, exist_ok=True)
    for file in sorted(Path(folder).iterdir()):
        data = file.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        target = snapshot / subfolder / file.name if subfolder else snapshot / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(blob, target.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def latent_recipe_text(vae_path: str, *, in_channels: int = 4, extra: str = "") -> str:
    """A tiny latent recipe: DiT on 4x8x8 latents of 32x32 shapes images (the tiny VAE's factor 4), 6 classes,
    2 steps of batch 4, a 2-step grid of 4 images at the end."""
    return f"""
[model]
type = "dit"
input_size = 8
patch_size = 2
in_channels = {in_channels}
num_classes = 6
depth = 1
width = 32
attention = {{type = "global", d_head = 16}}

[vae]
type = "autoencoder_kl"
path = "{vae_path}"
{extra}
[diffusion]
denoiser = {{type = "karras", sigma_data = 1.0}}

[data]
dataset = {{type = "shapes", size = 16}}
batch_size = 4
num_workers = 0
augment = {{p = 0.0}}

[train]
steps = 2
checkpoint_every = 2
sample_every = 0
log_every = 1

[sample]
sampler = "euler"
steps = 2
n = 4
batch_size = 4
"""


def docs_recipe_text() -> str:
    """The recipe ``docs/vae.md`` shows: its TOML block titled ``latent.toml``."""
    import re

    page = (ROOT / "docs" / "vae.md").read_text(encoding="utf-8")
    (block,) = re.findall(r'^```toml title="latent.toml"\n(.*?)^```', page, flags=re.S | re.M)
    return block


def docs_vae_cache(cache: str | os.PathLike, work: str | os.PathLike) -> Path:
    """A Hugging Face cache in ``cache`` holding :data:`DOCS_VAE` and :data:`DIT_VAE` (one tiny factor-8 VAE
    written under ``work``): with ``HF_HUB_CACHE`` pointing there and ``HF_HUB_OFFLINE=1`` the docs' recipe
    and a converted DiT load it."""
    four = ["DownEncoderBlock2D"] * 4
    folder = make_tiny_vae(Path(work) / "docs_vae", block_out_channels=[8] * 4, down_block_types=four,
                           up_block_types=["UpDecoderBlock2D"] * 4, scaling_factor=0.18215)
    hub_cache(cache, DIT_VAE, folder)
    return hub_cache(cache, DOCS_VAE, folder)
