"""Resumable, shardable sampling: finished images go to a parts folder, one file per index range.

Images ``0 .. n-1`` are cut into chunks of ``chunk`` consecutive indices (the last one shorter);
image ``i`` uses seed ``seed + i`` and every chunk is drawn as one batch, so the images depend
neither on the number of processes nor on which process drew a chunk. A :class:`PartsFolder` holds

- ``settings.json``: what was asked for (checkpoint, n, seed, sampler, ...) and the chunk size; a
  rerun with other settings is refused (:meth:`PartsFolder.prepare`);
- one file per finished chunk, named by its index range, ``0000000-0000064.npz`` (``arr_0``: the
  ``uint8 (b, H, W, C)`` images, ``arr_1``: the ``int64 (b,)`` class labels of a class-conditional
  model) or, when only PNGs are written, an empty ``0000000-0000064.done`` marker written after the
  chunk's PNGs.

Every file is written to a temporary name starting with ``.`` and then renamed (``os.replace``),
so a process killed at any moment leaves only complete parts; temporary files are ignored and
overwritten. :func:`assemble_npz` writes the final ``.npz`` in the layout of the ADM evaluator
(guided-diffusion's and DiT's ``sample_ddp.py``): ``arr_0`` ``uint8 (N, H, W, C)`` in index order,
plus ``arr_1`` ``int64 (N,)`` labels for a class-conditional model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["PartsFolder", "assemble_npz", "atomic_write", "chunk_ranges", "parts_folder_for"]

SETTINGS_FILE = "settings.json"
_PART = re.compile(r"^(\d{7})-(\d{7})\.(npz|done)$")


def chunk_ranges(n: int, chunk: int) -> list[tuple[int, int]]:
    """The index ranges ``[(0, chunk), (chunk, 2 * chunk), ..., (k, n)]`` that cover ``0 .. n-1``."""
    if n < 1 or chunk < 1:
        raise ValueError(f"n and chunk must be positive, got n={n}, chunk={chunk}")
    return [(start, min(start + chunk, n)) for start in range(0, n, chunk)]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(binary file)`` into a temporary file beside it, then rename it.

    A reader (or a rerun after ``kill -9``) sees the old file, or none, or the whole new one; the
    temporary file's name starts with ``.`` and ends with ``.tmp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _save_npz(f: IO[bytes], images: np.ndarray, labels: np.ndarray | None) -> None:
    arrays = {"arr_0": images} if labels is None else {"arr_0": images, "arr_1": labels}
    np.savez(f, **arrays)


def parts_folder_for(npz: str | os.PathLike | None, out: str | os.PathLike | None) -> Path:
    """The parts folder of a run: ``<npz>.parts`` when a ``.npz`` is written, else ``<out>/.parts``."""
    if npz is not None:
        npz = Path(npz)
        return npz.with_name(npz.name + ".parts")
    if out is None:
        raise ValueError("give the .npz file or the PNG folder")
    return Path(out) / ".parts"


class PartsFolder:
    """The parts of one sampling run (see the module docstring).

    Args:
        path: the folder (made by :meth:`prepare`).
        kind: ``"npz"`` (each part holds its images) or ``"done"`` (empty markers: the PNGs hold them).
    """

    def __init__(self, path: str | os.PathLike, kind: str = "npz") -> None:
        if kind not in ("npz", "done"):
            raise ValueError(f"kind must be 'npz' or 'done', got {kind!r}")
        self.path = Path(path)
        self.kind = kind

    def prepare(self, settings: dict[str, Any], chunk: int) -> tuple[int, str | None]:
        """Make the folder for ``settings``, or check that an earlier run's matches them.

        Args:
            settings: JSON-able settings that decide the images (not the batch size).
            chunk: images per part for a new folder.

        Returns:
            ``(chunk, problem)``: the chunk size to use (an earlier run's, when resuming) and None, or
            a one-line message saying why the folder cannot be resumed.
        """
        file = self.path / SETTINGS_FILE
        if self.path.exists():
            try:
                recorded = json.loads(file.read_text(encoding="utf-8"))
                old_settings, old_chunk = recorded["settings"], int(recorded["chunk"])
            except (OSError, ValueError, KeyError, TypeError):
                return chunk, (f"{self.path} holds no readable {SETTINGS_FILE} (not the parts of a sampling run); "
                               "delete the folder or write to another path")
            if old_settings != settings:
                changed = sorted(k for k in set(old_settings) | set(settings) if old_settings.get(k) != settings.get(k))
                what = ", ".join(f"{k} {old_settings.get(k)!r} -> {settings.get(k)!r}" for k in changed)
                return old_chunk, (f"{self.path} holds the parts of a run with other settings ({what}); rerun with "
                                   "the same settings to resume it, or delete the folder or write to another path")
            return old_chunk, None
        text = json.dumps({"settings": settings, "chunk": chunk}, indent=1, sort_keys=True) + "\n"
        atomic_write(file, lambda f: f.write(text.encode("utf-8")))
        return chunk, None

    def _name(self, start: int, stop: int) -> Path:
        return self.path / f"{start:07d}-{stop:07d}.{self.kind}"

    def finished(self) -> set[tuple[int, int]]:
        """The index ranges ``(start, stop)`` whose parts are complete."""
        found = set()
        for entry in os.listdir(self.path) if self.path.is_dir() else []:
            match = _PART.match(entry)
            if match and match.group(3) == self.kind:
                found.add((int(match.group(1)), int(match.group(2))))
        return found

    def write(self, start: int, stop: int, images: np.ndarray | None = None, labels: np.ndarray | None = None) -> Path:
        """Record the finished chunk ``[start, stop)``.

        Args:
            start, stop: its index range.
            images: ``uint8 (stop - start, H, W, C)`` (kind ``"npz"``; ignored for ``"done"``).
            labels: ``int64 (stop - start,)`` class labels, or None.
        """
        if self.kind == "done":
            return atomic_write(self._name(start, stop), lambda f: None)
        if images is None or images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != stop - start:
            raise ValueError(f"part {start}-{stop} needs uint8 (b, H, W, C) images with b = {stop - start}")
        return atomic_write(self._name(start, stop), lambda f: _save_npz(f, images, labels))

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The ``uint8 (b, H, W, C)`` images and ``int64 (b,)`` labels (or None) of a finished ``npz`` part."""
        with np.load(self._name(start, stop)) as data:
            return data["arr_0"], (data["arr_1"] if "arr_1" in data.files else None)

    def remove(self) -> None:
        """Delete the folder: renamed first (one atomic step), so a kill leaves it whole or gone."""
        if not self.path.exists():
            return
        trash = self.path.with_name(f".{self.path.name}.{os.getpid()}.removed")
        os.replace(self.path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def assemble_npz(parts: PartsFolder, ranges: list[tuple[int, int]], path: str | os.PathLike) -> Path:
    """Join the ``npz`` parts ``ranges`` (in index order) into one ``.npz`` written atomically.

    Returns:
        ``path``; it holds ``arr_0`` ``uint8 (N, H, W, C)`` and, when the parts have labels,
        ``arr_1`` ``int64 (N,)``.
    """
    first, labels0 = parts.read(*ranges[0])
    n = ranges[-1][1]
    images = np.empty((n, *first.shape[1:]), dtype=np.uint8)
    labels = None if labels0 is None else np.empty((n,), dtype=np.int64)
    for start, stop in ranges:
        chunk, chunk_labels = (first, labels0) if start == ranges[0][0] else parts.read(start, stop)
        images[start:stop] = chunk
        if labels is not None:
            labels[start:stop] = chunk_labels
    return atomic_write(path, lambda f: _save_npz(f, images, labels))
