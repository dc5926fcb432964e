"""Tiny sharded datasets for the tests: image folders, WebDataset shards, Parquet files, save_to_disk folders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["image_folder", "parquet_files", "saved_folder", "webdataset_shards"]


def image_folder(root: Path, n: int = 12, classes: tuple[str, ...] = ("cats", "dogs"), size: int = 20) -> Path:
    """``n`` random RGB PNGs (sizes vary around ``size``) spread over class subfolders of ``root``."""
    rng = np.random.default_rng(0)
    for i in range(n):
        where = root / classes[i % len(classes)]
        where.mkdir(parents=True, exist_ok=True)
        h, w = size + i % 3, size + 4 - i % 2
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(where / f"{i:03d}.png")
    return root


def webdataset_shards(folder: Path, out: Path, per_shard: int = 2, classes: str = "subfolders") -> Path:
    """The images of ``folder`` as WebDataset shards in ``out`` (with ``shards.json``)."""
    from hourglass.data.write_shards import list_images, write_shards

    images, names = list_images(folder, classes)
    write_shards(images, out, class_names=names, samples_per_shard=per_shard)
    return out


def _rows(n: int, start: int, num_classes: int, size: int = 20, corrupt: int | None = None) -> dict[str, list]:
    rng = np.random.default_rng(start)
    images, labels = [], []
    for i in range(start, start + n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size + i % 3, 3), dtype=np.uint8)).save(buffer, "PNG")
        images.append({"bytes": b"not an image" if i == corrupt else buffer.getvalue(), "path": None})
        labels.append(i % num_classes)
    return {"image": images, "label": labels}


def parquet_files(out: Path, files: int = 4, rows: int = 3, num_classes: int = 3, corrupt: int | None = None) -> Path:
    """``files`` Parquet files of ``rows`` rows each (an ``image`` struct column and an int ``label``); row
    number ``corrupt`` (if set) holds bytes that are no image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        pq.write_table(pa.table(_rows(rows, f * rows, num_classes, corrupt=corrupt)), out / f"part-{f:03d}.parquet")
    return out


def saved_folder(out: Path, rows: int = 6, num_classes: int = 2) -> Path:
    """A ``Dataset.save_to_disk`` folder with a ``datasets.Image`` column and a ``ClassLabel`` label."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    datasets.Dataset.from_dict(_rows(rows, 0, num_classes), features=features).save_to_disk(str(out))
    return out
