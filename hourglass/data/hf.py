"""``hf_datasets``: a Hugging Face ``datasets`` dataset on local disk (Arrow or Parquet), indexed or streamed.

Sources (``path``, nothing is downloaded):

* a folder written by ``Dataset.save_to_disk`` (it holds ``state.json``): memory-mapped Arrow,
  read by random access (``load_from_disk``); it cannot stream.
* Parquet files: a folder of ``*.parquet`` (sorted by name), one file, or a glob. Indexed, they are
  loaded with ``load_dataset("parquet", ...)`` (which converts them once to Arrow in the ``datasets``
  cache); with ``streaming = true`` they are read as an ``IterableDataset`` (``streaming=True``),
  each file one shard, split over ranks and workers by :mod:`hourglass.data.stream`.

Columns: ``image_column`` holds the encoded image (a ``datasets.Image`` feature, a
``{"bytes", "path"}`` struct, raw bytes or a file path); ``label_column`` (optional) the class id,
an int (the class count is the largest id plus one) or a ``ClassLabel`` (its names become the class
names). Items are made as ``imagefolder`` makes them; rows whose image does not decode are skipped
and counted (``load_failures``).
"""

from __future__ import annotations

import glob
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import Tensor

from hourglass.data._base import check_split, parse_resolution
from hourglass.data._shards import ShardedImageDataset
from hourglass.data.imagefolder import ImageOptions, read_image
from hourglass.registry import DATASET
from hourglass.spec import Problem

__all__ = ["HFDataset", "HFDatasetSpec", "parquet_files"]

_ROWS_PER_READ = 64
_FIX = "set data.dataset.path to a save_to_disk folder or to Parquet files (a folder of *.parquet, a file or a glob)"


class HFDatasetSpec(ImageOptions):
    """Spec of :class:`HFDataset`."""

    type: Literal["hf_datasets"] = "hf_datasets"
    path: str = Field(description="a Dataset.save_to_disk folder, or Parquet files: a folder, a file or a glob")
    image_column: str = Field("image", description="the column of the encoded images")
    label_column: str | None = Field(None, description="the column of the class ids (unset: unconditional)")
    streaming: bool = Field(False, description="stream the Parquet files (each one a shard) instead of indexing")


def _saved_folder(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file()


def parquet_files(path: str) -> list[str]:
    """The Parquet files ``path`` names (a folder of ``*.parquet``, a file or a glob), sorted.

    Returns:
        Absolute paths; ``[]`` when there is none.
    """
    where = Path(path).expanduser()
    if where.is_dir():
        return sorted(str(p.resolve()) for p in where.glob("*.parquet"))
    if where.is_file():
        return [str(where.resolve())]
    return sorted(str(Path(p).resolve()) for p in glob.glob(str(where)) if p.endswith(".parquet"))


@DATASET.register("hf_datasets")
class HFDataset(ShardedImageDataset):
    """A local Hugging Face dataset of encoded images (see the module docstring).

    Built as ``DATASET.build({"type": "hf_datasets", "path": "data/parquet", "label_column": "label"},
    resolution=64, split="train")``. Items: ``image (C, H, W)`` in [-1, 1], ``class_cond ()``,
    ``aug_cond (9,)`` zeros.

    Args:
        spec: the :class:`HFDatasetSpec`.
        resolution: an int or ``(H, W)``.
        split: only ``"train"``; point ``path`` at the files of another split.

    Raises:
        FileNotFoundError: when ``path`` names no data.
        ValueError: when a column is missing, or a save_to_disk folder is asked to stream.
    """

    Spec = HFDatasetSpec
    kind = "hf_datasets"

    @classmethod
    def classes_of(cls, spec: HFDatasetSpec) -> int | None:
        """0 without ``label_column``; otherwise known once the data is opened (``None``)."""
        return 0 if spec.label_column is None else None

    @classmethod
    def channels_of(cls, spec: Any) -> int:
        """``spec.channels``."""
        return spec.channels

    @classmethod
    def availability_problems(cls, spec: HFDatasetSpec) -> list[Problem]:
        """``path`` must be a save_to_disk folder or name Parquet files (a save_to_disk folder cannot stream)."""
        where = Path(spec.path).expanduser()
        if _saved_folder(where):
            if spec.streaming:
                return [
                    Problem(
                        "path",
                        f"'{where}' is a save_to_disk folder, which cannot stream",
                        "set data.dataset.streaming = false, or point path at Parquet files",
                        spec.path,
                    )
                ]
            return []
        if parquet_files(spec.path):
            return []
        what = "holds no *.parquet file and no state.json" if where.is_dir() else "names no Parquet file"
        rel = "" if where.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        return [Problem("path", f"'{where}' {what}{rel}", _FIX, spec.path)]

    def __init__(self, spec: HFDatasetSpec, *, resolution: int | tuple[int, int], split: str = "train") -> None:
        import datasets

        self.spec = self.options = spec = HFDatasetSpec.model_validate(spec)
        self.resolution = parse_resolution(resolution, what="hf_datasets dataset")
        self.split = check_split(split, ("train",), "the hf_datasets dataset", "point 'path' at that split's files")
        self.channels, self.streams = spec.channels, spec.streaming
        problems = self.availability_problems(spec)
        if problems:
            raise FileNotFoundError(f"{problems[0].message}; {problems[0].hint}")
        where = Path(spec.path).expanduser()
        if _saved_folder(where):
            table: Any = datasets.load_from_disk(str(where))
            self.shard_names = [where.name]
        else:
            files = parquet_files(spec.path)
            self.shard_names = [Path(f).name for f in files]
            table = datasets.load_dataset("parquet", data_files=files, split="train", streaming=spec.streaming)
        features = table.features
        for role, column in (("image_column", spec.image_column), ("label_column", spec.label_column)):
            if column is not None and column not in features:
                raise ValueError(f"{where} has no column {column!r} ({role}); its columns are {sorted(features)}")
        if isinstance(features[spec.image_column], datasets.Image):
            table = table.cast_column(spec.image_column, datasets.Image(decode=False))
        self.table = table
        if spec.streaming:
            import pyarrow.parquet as pq

            self.shard_sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
            labels = (
                pq.read_table(files, columns=[spec.label_column]).column(0).to_pylist()
                if spec.label_column is not None
                else []
            )
        else:
            self.shard_sizes = [len(table)]
            labels = table[spec.label_column] if spec.label_column is not None else []
        label_feature = features[spec.label_column] if spec.label_column is not None else None
        if isinstance(label_feature, datasets.ClassLabel):
            self.class_names = list(label_feature.names)
        else:
            ids = [int(v) for v in labels if v is not None]
            self.class_names = [str(i) for i in range(max(ids) + 1)] if ids else []
            if spec.label_column is not None and not ids:
                raise ValueError(f"the column {spec.label_column!r} of {where} holds no class id; unset label_column")
        self.num_classes = len(self.class_names)
        if len(self) == 0:
            raise FileNotFoundError(f"'{where}' holds no row; {_FIX}")
        self.load_failures = 0

    def records(self, shard: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        """The rows of Parquet file ``shard`` (streaming) from row ``skip`` on."""
        if not self.streams:
            yield from itertools.islice(iter(self.table), skip, None)
            return
        part = self.table.shard(num_shards=len(self.shard_sizes), index=shard, contiguous=True)
        # .iter(batch_size), not iter(): in a loader worker, iter() would split the shard over the workers again
        for rows in (part.skip(skip) if skip else part).iter(batch_size=_ROWS_PER_READ):
            columns = list(rows)
            yield from (dict(zip(columns, values, strict=True)) for values in zip(*rows.values(), strict=True))

    def record_at(self, index: int) -> dict[str, Any]:
        """Row ``index`` (a streamed dataset reads its shard from the start up to it)."""
        if not self.streams:
            return self.table[index]
        for shard, size in enumerate(self.shard_sizes):
            if index < size:
                return next(iter(self.records(shard, index)))
            index -= size
        raise IndexError(index)

    def decode(self, record: dict[str, Any]) -> tuple[Tensor, int]:
        """Pixels of the row's image and its class id (0 when unconditional).

        Raises:
            ValueError: when the image cell is empty or the class id is not one of the classes.
        """
        cell = record[self.spec.image_column]
        if isinstance(cell, dict):
            cell = cell.get("bytes") or cell.get("path")
        if isinstance(cell, (bytes, bytearray, memoryview)):
            source: Any = io.BytesIO(bytes(cell))
        elif isinstance(cell, str) and cell:
            source = cell
        else:
            raise ValueError(f"the image cell is {type(cell).__name__}, not encoded bytes or a path")
        label = 0
        if self.num_classes:
            label = int(record[self.spec.label_column])
            if not 0 <= label < self.num_classes:
                raise ValueError(f"class id {label} is not in [0, {self.num_classes})")
        return read_image(source, self.resolution, self.options), label
