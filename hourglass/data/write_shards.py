"""Writing an image folder as WebDataset tar shards (what ``hourglass data shards`` runs).

Each image file (found as ``imagefolder`` finds them, sorted by relative path) becomes one sample:
its bytes unchanged under the key ``NNNNNNNN`` (the sample's number) with the file's lower-case
extension, plus ``.cls`` (the class id as decimal text) when the classes come from the subfolders.
Shards are ``shard-000000.tar``, ``shard-000001.tar``, ... written by ``webdataset.ShardWriter``;
a shard closes after ``samples_per_shard`` samples or once it holds ``max_shard_bytes`` (so it may pass
that by one sample).
``shards.json`` lists the shards with their sample counts and the class names, which is what
:class:`~hourglass.data.webdataset.WebDataset` reads instead of scanning the shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hourglass.data._walk import label_by_subfolder, walk_files
from hourglass.data.imagefolder import IMAGE_EXTENSIONS
from hourglass.data.webdataset import SHARDS_FILE

__all__ = ["ShardsWritten", "list_images", "write_shards"]

#: the shard file names (``%`` formatted with the shard number)
SHARD_PATTERN = "shard-%06d.tar"


@dataclass
class ShardsWritten:
    """What :func:`write_shards` wrote.

    Attributes:
        samples: samples written.
        shards: shard files written.
        bytes: total size of the shards.
        class_names: one name per class id (empty when unconditional).
    """

    samples: int
    shards: int
    bytes: int
    class_names: list[str]


def list_images(folder: Path, classes: str) -> tuple[list[tuple[Path, int]], list[str]]:
    """The image files of ``folder`` with their class ids, and the class names.

    Args:
        folder: the image folder.
        classes: ``"subfolders"`` (ids by sorted top-level folder; files directly in ``folder``
            are left out) or ``"none"`` (every id 0).

    Returns:
        ``[(path, class id)]`` sorted by relative path, and the class names.
    """
    paths = walk_files(folder, IMAGE_EXTENSIONS, in_subfolders=classes == "subfolders")
    if classes != "subfolders":
        return [(p, 0) for p in paths], []
    paths, names, ids = label_by_subfolder(folder, paths, "image(s)")
    return list(zip(paths, ids, strict=True)), names


def write_shards(
    images: list[tuple[Path, int]],
    out: Path,
    *,
    class_names: list[str],
    samples_per_shard: int = 1000,
    max_shard_bytes: int = 1 << 30,
    on_sample: Callable[[int], None] | None = None,
) -> ShardsWritten:
    """Write ``images`` as WebDataset tar shards and ``shards.json`` into the folder ``out``.

    Args:
        images: ``[(image file, class id)]`` in sample order (see :func:`list_images`).
        out: the folder to write (created; it should be empty).
        class_names: one name per class id; empty: no ``.cls`` members (unconditional).
        samples_per_shard: the most samples in one shard.
        max_shard_bytes: a shard closes once it holds this many bytes (its last sample may pass it).
        on_sample: called with the size in bytes of each sample written (a progress bar).

    Returns:
        A :class:`ShardsWritten`.
    """
    from webdataset import ShardWriter

    out.mkdir(parents=True, exist_ok=True)
    counts: list[int] = []
    writer = ShardWriter(str(out / SHARD_PATTERN), maxcount=samples_per_shard, maxsize=max_shard_bytes, verbose=0)
    try:
        for number, (path, label) in enumerate(images):
            data = path.read_bytes()
            sample = {"__key__": f"{number:08d}", path.suffix.lower().lstrip("."): data}
            if class_names:
                sample["cls"] = str(label).encode()
            writer.write(sample)
            if writer.shard > len(counts):  # the writer opened the next shard for this sample
                counts.append(0)
            counts[-1] += 1
            if on_sample is not None:
                on_sample(len(data))
    finally:
        writer.close()
    names = [os.path.basename(SHARD_PATTERN % i) for i in range(len(counts))]
    listing = {
        "format": "hourglass-webdataset",
        "format_version": 1,
        "classes": class_names,
        "shards": [{"name": n, "samples": c} for n, c in zip(names, counts, strict=True)],
    }
    (out / SHARDS_FILE).write_text(json.dumps(listing, indent=1) + "\n")
    return ShardsWritten(
        samples=sum(counts),
        shards=len(counts),
        bytes=sum((out / n).stat().st_size for n in names),
        class_names=class_names,
    )
