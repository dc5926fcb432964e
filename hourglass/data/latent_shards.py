"""The on-disk format of latent shards: what ``hourglass data latents`` writes and the ``latents`` dataset reads.

A shard folder holds:

* ``latents.json``, the index: ``format = "hourglass-latent-shards"``, ``version``, ``complete`` (False
  while an encode is under way), ``count`` (items), ``shard_size``, ``shards`` (``[{"file", "count"}]``),
  ``latent_shape`` ``[C, h, w]``, ``image_size`` ``[H, W]``, ``dtype``, ``latents`` (``"mean"`` or
  ``"sample"``), ``seed``, ``vae`` (its spec with the resolved ``scaling_factor`` and ``shift_factor``),
  ``dataset`` (the source spec) and ``split``, ``num_classes`` and ``class_names``;
* ``shard-00000.safetensors``, ...: each holds ``latents (n, 2, C, h, w)`` (index 0: the image's latent,
  1: the latent of its horizontal flip, both already multiplied by the VAE's scaling factor) and
  ``labels (n,)`` int64 class ids, for items ``k * shard_size ... k * shard_size + n - 1`` of the source.

Every file is written to a temporary name and renamed into place (:func:`write_atomic`), so a shard
file that exists is complete: a killed encode leaves no half shard, and a new run continues with the
shards that are missing. The index says ``complete = true`` only once every shard is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "INDEX_FILE",
    "FORMAT",
    "VERSION",
    "shard_name",
    "read_index",
    "write_index",
    "write_shard",
    "write_atomic",
    "ShardReader",
]

#: the index file of a shard folder
INDEX_FILE = "latents.json"
#: ``format`` of the index
FORMAT = "hourglass-latent-shards"
#: ``version`` of the format this code writes and reads
VERSION = 1


def shard_name(k: int) -> str:
    """The file name of shard ``k``: ``shard-00000.safetensors``."""
    return f"shard-{k:05d}.safetensors"


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path`` (all or nothing)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def read_index(root: str | os.PathLike) -> dict[str, Any]:
    """The index of the shard folder ``root``.

    Raises:
        ValueError: one line, when ``latents.json`` is unreadable, not JSON or not of this format/version.
    """
    path = Path(root) / INDEX_FILE
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"cannot read the latent shard index {path}: {exc}; re-encode with hourglass data latents"
        ) from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a latent shard index (format {FORMAT!r}); re-encode with hourglass data latents"
        )
    if index.get("version") != VERSION:
        raise ValueError(
            f"{path} is version {index.get('version')} of the latent shard format; this hourglass reads "
            f"version {VERSION}: re-encode with hourglass data latents"
        )
    return index


def write_index(root: str | os.PathLike, index: dict[str, Any]) -> None:
    """Write ``index`` as ``root/latents.json`` (atomically)."""
    text = json.dumps(index, indent=1, sort_keys=True) + "\n"
    write_atomic(Path(root) / INDEX_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_shard(path: Path, latents: Tensor, flipped: Tensor, labels: Tensor, dtype: torch.dtype) -> None:
    """Write one shard atomically.

    Args:
        path: the shard file.
        latents: ``(n, C, h, w)`` latents of the images.
        flipped: ``(n, C, h, w)`` latents of their horizontal flips.
        labels: ``(n,)`` class ids.
        dtype: the stored dtype of the latents (``torch.float32`` or ``torch.float16``).
    """
    from safetensors.torch import save_file

    pairs = torch.stack([latents, flipped], dim=1).to(dtype).contiguous()
    tensors = {"latents": pairs, "labels": labels.to(torch.int64).contiguous()}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))


class ShardReader:
    """Random access to the items of a complete shard folder (safetensors files opened lazily, per process).

    Args:
        root: the folder.
        index: its :func:`read_index`.
    """

    def __init__(self, root: Path, index: dict[str, Any]) -> None:
        self.root = root
        self.files = [root / shard["file"] for shard in index["shards"]]
        self.starts: list[int] = []
        total = 0
        for shard in index["shards"]:
            self.starts.append(total)
            total += int(shard["count"])
        self.count = total
        self._open: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}}  # open files stay with the process that opened them

    def _handle(self, k: int) -> Any:
        if k not in self._open:
            from safetensors import safe_open

            self._open[k] = safe_open(str(self.files[k]), framework="pt")
        return self._open[k]

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, row)`` of item ``index``."""
        import bisect

        k = bisect.bisect_right(self.starts, index) - 1
        return k, index - self.starts[k]

    def read(self, index: int, flipped: bool) -> tuple[Tensor, int]:
        """Item ``index``: its latent ``(C, h, w)`` float32 (of the flipped image if ``flipped``) and class id."""
        k, row = self.locate(index)
        handle = self._handle(k)
        latent = handle.get_slice("latents")[row : row + 1, int(flipped) : int(flipped) + 1][0, 0]
        label = handle.get_slice("labels")[row : row + 1]
        return latent.to(torch.float32), int(label[0])
