"""``hourglass sample`` in parts: resumable, and shared by the processes of a ``torchrun`` launch.

Rank 0 makes (or checks) the parts folder (:mod:`hourglass.pipeline.parts`) and tells every rank
which chunks are still missing; rank ``r`` of ``N`` draws the missing chunks ``r, r + N, ...``, each
as one batch (so the images are those of a single process), and writes each one's PNGs and part
atomically. After a barrier rank 0 checks that every chunk is there, writes the ``.npz`` and removes
the parts folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hourglass.cli._common import CLIError

__all__ = ["GRID_LIMIT", "check_npz_path", "sample_in_parts"]

#: grid.png shows at most this many images (the first ones)
GRID_LIMIT = 256


def _save_png(pixels: np.ndarray, path: Path) -> None:
    """Write one ``uint8 (H, W, C)`` image (C = 1 or 3) as a PNG, atomically."""
    from PIL import Image

    from hourglass.pipeline.parts import atomic_write

    image = Image.fromarray(pixels[..., 0], mode="L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, mode="RGB")
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def _read_png(path: Path, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        array = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def _as_float(pixels: np.ndarray) -> Tensor:
    """``uint8 (B, H, W, C)`` to ``(B, C, H, W)`` floats in [-1, 1] that quantise back to the same pixels."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1


def sample_in_parts(
    pipe: Any,
    *,
    info: Any,
    n: int,
    settings: dict[str, Any],
    options: dict[str, Any],
    batch_size: int,
    npz: Path | None,
    out: Path | None,
    pngs: bool,
    grid: bool,
    progress: bool,
    report: Any,
) -> Tensor | None:
    """Draw images ``0 .. n-1`` of ``pipe`` into parts, resuming an interrupted run with the same settings.

    Args:
        pipe: the :class:`hourglass.pipeline.Pipeline`.
        info: this process's :class:`hourglass.train.distributed.DistInfo`.
        n: number of images.
        settings: what decides the images (recorded; a rerun with others is refused). Its
            ``"classes"`` are the class ids to cycle (None: every class), ``"seed"`` the first seed.
        options: the other :meth:`Pipeline.sample` arguments (cfg, sampler, steps, resolution, dtype).
        batch_size: images per chunk (each chunk is one batch) of a new run.
        npz: the ``.npz`` to write, or None.
        out: the PNG folder (``pngs``/``grid``), or None.
        pngs: write ``out/000000.png``, ...
        grid: return the first :data:`GRID_LIMIT` images for ``grid.png`` (rank 0).
        progress: show a progress bar (rank 0 only).
        report: prints a line (rank 0 only).

    Returns:
        On rank 0 with ``grid``: ``(min(n, GRID_LIMIT), C, H, W)`` images in [-1, 1]; else None.

    Raises:
        CLIError: the parts folder belongs to a run with other settings, or chunks are missing at the end.
    """
    from hourglass.pipeline.parts import PartsFolder, assemble_npz, chunk_ranges, parts_folder_for
    from hourglass.train.distributed import barrier, broadcast_object
    from hourglass.train.images import to_uint8
    from hourglass.train.sampling import class_labels

    parts = PartsFolder(parts_folder_for(npz, out), "npz" if npz is not None else "done")
    plan: Any = None
    if info.is_main:
        chunk, problem = parts.prepare(settings, batch_size)
        plan = (chunk, problem, sorted(parts.finished()) if problem is None else [])
    chunk, problem, finished = broadcast_object(plan, info)
    if problem is not None:
        raise CLIError(problem)
    ranges = chunk_ranges(n, chunk)
    done = set(map(tuple, finished))
    todo = [r for r in ranges if r not in done]
    mine = todo[info.rank :: info.world_size]
    if done:
        report(f"resuming {parts.path}: {sum(b - a for a, b in ranges if (a, b) in done)} of {n} images are done")
    if chunk != batch_size:
        report(f"using the parts' batch size {chunk} (the run being resumed drew its images in batches of {chunk})")
    labels = class_labels(n, pipe.num_classes, settings["classes"])
    bar = None
    if progress and info.is_main and mine:
        from tqdm.auto import tqdm

        where = f" (rank 0 of {info.world_size})" if info.world_size > 1 else ""
        bar = tqdm(total=sum(b - a for a, b in mine), desc=f"sample{where}", unit="img", dynamic_ncols=True)
    try:
        for start, stop in mine:
            chunk_labels = None if labels is None else labels[start:stop]
            classes = None if chunk_labels is None else [
                None if c == pipe.num_classes else c for c in chunk_labels.tolist()]
            rows = {k: options[k][start:stop] for k in ("mapping_cond", "cond_image") if k in options}
            images = pipe.sample(stop - start, classes=classes, seed=settings["seed"] + start,
                                 batch_size=stop - start, **{**options, **rows})
            pixels = to_uint8(images)
            if pngs:
                for i, image in enumerate(pixels):
                    _save_png(image, out / f"{start + i:06d}.png")
            parts.write(start, stop, pixels, None if chunk_labels is None else chunk_labels.numpy())
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    barrier(info)
    if not info.is_main:
        return None
    missing = [r for r in ranges if r not in parts.finished()]
    if missing:
        raise CLIError(f"{len(missing)} of {len(ranges)} parts are missing from {parts.path} (did a process fail?); "
                       "rerun the same command to draw them")
    shown = None
    if grid:
        k = min(n, GRID_LIMIT)
        if npz is not None:
            pixels = np.concatenate([parts.read(a, b)[0] for a, b in ranges if a < k])[:k]
        else:
            pixels = np.stack([_read_png(out / f"{i:06d}.png", pipe.channels) for i in range(k)])
        shown = _as_float(pixels)
    if npz is not None:
        assemble_npz(parts, ranges, npz)
    parts.remove()
    return shown


def check_npz_path(path: str) -> Path:
    """``--npz`` as a path ending in ``.npz`` whose folder exists (or can be made)."""
    npz = Path(path)
    if npz.suffix != ".npz":
        raise CLIError(f"--npz {path}: the file name must end in .npz (e.g. samples.npz)")
    if npz.is_dir():
        raise CLIError(f"--npz {path} is a folder; give a file name ending in .npz")
    os.makedirs(npz.parent if str(npz.parent) else ".", exist_ok=True)
    return npz
