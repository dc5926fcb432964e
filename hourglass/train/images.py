"""Images out of the model: [-1, 1] tensors to 8-bit PNG files and grids."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["to_uint8", "make_grid", "save_image", "save_grid"]


def to_uint8(images: Tensor) -> np.ndarray:
    """Map ``[-1, 1]`` floats to 8-bit pixels.

    Args:
        images: ``(B, C, H, W)`` or ``(C, H, W)`` with C in {1, 3}; values outside [-1, 1] are clipped.

    Returns:
        ``(B, H, W, C)`` or ``(H, W, C)`` ``uint8`` array.
    """
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile a batch into one image, row-major.

    Args:
        images: ``(B, C, H, W)`` in [-1, 1].
        nrow: images per row (default: ``ceil(sqrt(B))``).
        padding: pixels between (and around) images.
        pad_value: colour of the padding, in [-1, 1].

    Returns:
        ``(C, rows * (H + padding) + padding, nrow * (W + padding) + padding)``.
    """
    if images.ndim != 4:
        raise ValueError(f"make_grid expects a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / nrow)
    grid = images.new_full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def save_image(image: Tensor, path: str | os.PathLike) -> Path:
    """Write one ``(C, H, W)`` image in [-1, 1] as PNG (C = 1 grey, C = 3 RGB).

    Returns:
        The written path (parent folders are created).
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects (C, H, W) with C in {{1, 3}}, got shape {tuple(image.shape)}")
    pixels = to_uint8(image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if pixels.shape[-1] == 1 else "RGB"
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode).save(path)
    return path


def save_grid(images: Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2) -> Path:
    """Tile ``(B, C, H, W)`` images in [-1, 1] with :func:`make_grid` and write a PNG.

    Returns:
        The written path.
    """
    return save_image(make_grid(images, nrow=nrow, padding=padding), path)
