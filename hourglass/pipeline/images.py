"""Images in and out of the pipeline: reading files and folders, masks, PIL images, comparison grids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hourglass.pipeline._errors import PipelineError

__all__ = ["list_images", "load_images", "load_masks", "to_pil", "comparison_grid"]


def list_images(path: str | os.PathLike) -> list[Path]:
    """An image file, or the image files directly inside a folder (sorted by name, hidden ones skipped).

    Raises:
        PipelineError: the path does not exist, is not an image file, or the folder holds none.
    """
    from hourglass.data.imagefolder import IMAGE_EXTENSIONS

    path = Path(path)
    kinds = " ".join(IMAGE_EXTENSIONS)
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise PipelineError(f"folder {path} holds no image files ({kinds})")
        return files
    if not path.exists():
        raise PipelineError(f"image {path} does not exist; check the path")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise PipelineError(f"{path} is not an image file: expected one of {kinds}")
    return [path]


def _expand_sources(sources: Any) -> list[Any]:
    from PIL import Image

    if isinstance(sources, (str, os.PathLike, Image.Image)):
        sources = [sources]
    out: list[Any] = []
    for item in sources:
        if isinstance(item, Image.Image):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            out += list_images(item)
        else:
            raise TypeError(f"images are paths, folders or PIL images, got {type(item).__name__}")
    if not out:
        raise PipelineError("no images given")
    return out


def _read(item: Any, channels: int, size: tuple[int, int], mode: str) -> Tensor:
    """``(channels, H, W)`` in [0, 1]: read, EXIF-rotated, scaled to cover ``size`` and centre-cropped."""
    from PIL import Image, ImageOps

    from hourglass.data._base import resize_cover
    from hourglass.data.imagefolder import pil_to_tensor

    if isinstance(item, Image.Image):
        image = item
    else:
        try:
            with Image.open(item) as opened:
                image = ImageOps.exif_transpose(opened)
                image.load()
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise PipelineError(f"cannot read {item} as an image: {exc}") from None
    return resize_cover(pil_to_tensor(image, channels), size, mode=mode).clamp(0.0, 1.0)


def load_images(sources: Any, *, size: int | tuple[int, int], channels: int = 3) -> Tensor:
    """Images for :meth:`Pipeline.image_to_image` and :meth:`Pipeline.inpaint`, prepared as the datasets do.

    Each is read with PIL (EXIF orientation applied, transparency over white), converted to
    ``channels`` (grey replicated, or the luma of RGB), scaled so its shorter side covers ``size``
    (bicubic, antialiased) and centre-cropped.

    Args:
        sources: an image path, a folder (its image files, sorted), a PIL image, or a list of them.
        size: ``(H, W)`` or a side.
        channels: 1 or 3.

    Returns:
        ``(B, channels, H, W)`` float32 in ``[-1, 1]``.

    Raises:
        PipelineError: a missing file, a file without an image extension, a file PIL cannot read.
    """
    from hourglass.spec import as_pair

    hw = as_pair(size)
    return torch.stack([_read(item, channels, hw, "bicubic") for item in _expand_sources(sources)]) * 2 - 1


def load_masks(sources: Any, *, size: int | tuple[int, int]) -> Tensor:
    """Inpainting masks from images: white (1) = generate, black (0) = keep; grey levels blend.

    Read as grey, scaled to cover ``size`` (bilinear, so values stay in [0, 1]) and centre-cropped:
    the same geometry as :func:`load_images`, so a mask drawn on its image stays aligned with it.

    Returns:
        ``(B, 1, H, W)`` float32 in ``[0, 1]``.
    """
    from hourglass.spec import as_pair

    hw = as_pair(size)
    return torch.stack([_read(item, 1, hw, "bilinear") for item in _expand_sources(sources)])


def to_pil(images: Tensor) -> list[Any]:
    """``(B, C, H, W)`` or ``(C, H, W)`` images in ``[-1, 1]`` (clipped) as 8-bit PIL images (L or RGB)."""
    from PIL import Image

    from hourglass.train.images import to_uint8

    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"to_pil expects (B, C, H, W) or (C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}")
    pixels = to_uint8(images)
    return [Image.fromarray(p[..., 0], mode="L") if p.shape[-1] == 1 else Image.fromarray(p, mode="RGB")
            for p in pixels]


def comparison_grid(inputs: Tensor, results: Tensor, masks: Tensor | None = None, ncol: int = 8) -> Tensor:
    """Rows of inputs, masks (when given) and results, ``ncol`` images per row, for :func:`save_grid`.

    Args:
        inputs: ``(B, C, H, W)`` in [-1, 1].
        results: ``(B, C, H, W)`` in [-1, 1].
        masks: ``(B or 1, 1, H, W)`` in [0, 1] (shown white where generated).
        ncol: images per row; longer batches continue in further groups of rows.

    Returns:
        ``(groups * rows * ncol, C, H, W)`` images to tile with ``nrow=ncol`` (a short last group is
        filled with white).
    """
    b, c = results.shape[:2]
    rows = [inputs.float().cpu()]
    if masks is not None:
        rows.append(masks.float().cpu().expand(b, c, *results.shape[2:]) * 2 - 1)
    rows.append(results.float().cpu())
    ncol = max(1, min(ncol, b))
    cells = []
    for start in range(0, b, ncol):
        for row in rows:
            part = row[start : start + ncol]
            if part.shape[0] < ncol:  # a short last group: fill with white
                part = torch.cat([part, part.new_ones(ncol - part.shape[0], *part.shape[1:])])
            cells.append(part)
    return torch.cat(cells)
