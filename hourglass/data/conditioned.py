"""Datasets whose items carry a condition beyond the class: a vector, or an image.

* ``vectors``: wraps any dataset and adds ``"mapping_cond": (D,) float32`` per item, read from a
  ``.npy`` file of shape ``(N, D)`` in the dataset's order, or from a table (``.csv`` / ``.parquet``)
  whose ``key`` column holds each image's path relative to the folder (imagefolder's ``files``) and
  whose ``columns`` are the vector's entries.
* ``superres``: wraps any image dataset and adds ``"cond_image"``: the image downsampled by
  ``factor`` (bicubic, antialiased), the low-resolution input of super-resolution.
* ``paired``: paired image-to-image from ``root/<target>/...`` (the images learned) and
  ``root/<source>/...`` (their conditions, ``cond_image``), matched by relative path without the
  extension.

Items follow the contract of :mod:`hourglass.data._base`; the wrappers pass the inner dataset's
keys (``int`` or ``(index, draw)``) through unchanged.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field
from torch import Tensor

from hourglass.data._base import DatasetComponent, ImageDataset, resize_cover
from hourglass.data._walk import walk_files
from hourglass.data.imagefolder import IMAGE_EXTENSIONS, ImageFolderDataset, pil_to_tensor
from hourglass.diffusion.conditioning import resize_image
from hourglass.registry import DATASET
from hourglass.spec import Component, Problem, Spec

__all__ = [
    "PairedFolderDataset",
    "PairedFolderDatasetSpec",
    "SuperResDataset",
    "SuperResDatasetSpec",
    "VectorsDataset",
    "VectorsDatasetSpec",
    "read_vectors",
]


class _Wrapper(DatasetComponent, torch.utils.data.Dataset):
    """A dataset that adds a condition to the items of ``inner`` (its spec's ``dataset``)."""

    def __init__(self, spec: Any, *, resolution: Any, split: str = "train") -> None:
        self.spec = spec = type(self).Spec.model_validate(spec)
        self.inner = DATASET.build(spec.dataset, resolution=resolution, split=split)
        for name in ("num_classes", "channels", "resolution", "class_names", "uses_draw_keys", "value_range"):
            setattr(self, name, getattr(self.inner, name))
        self.mapping_cond_dim = getattr(self.inner, "mapping_cond_dim", 0)
        self.cond_channels = getattr(self.inner, "cond_channels", 0)

    @classmethod
    def classes_of(cls, spec: Any) -> int | None:
        """The inner dataset's."""
        return DATASET.get(spec.dataset.type).classes_of(spec.dataset)

    @classmethod
    def channels_of(cls, spec: Any) -> int | None:
        """The inner dataset's."""
        return DATASET.get(spec.dataset.type).channels_of(spec.dataset)

    @classmethod
    def class_names_of(cls, spec: Any) -> list[str] | None:
        """The inner dataset's."""
        return DATASET.get(spec.dataset.type).class_names_of(spec.dataset)

    @classmethod
    def mapping_cond_dim_of(cls, spec: Any) -> int | None:
        """The inner dataset's."""
        return DATASET.get(spec.dataset.type).mapping_cond_dim_of(spec.dataset)

    @classmethod
    def cond_channels_of(cls, spec: Any) -> int | None:
        """The inner dataset's."""
        return DATASET.get(spec.dataset.type).cond_channels_of(spec.dataset)

    @classmethod
    def availability_problems(cls, spec: Any) -> list[Problem]:
        """The inner dataset's, under ``dataset``."""
        return [p.under("dataset") for p in DATASET.get(spec.dataset.type).availability_problems(spec.dataset)]

    def __len__(self) -> int:
        return len(self.inner)

    @staticmethod
    def index_of(key: Any) -> int:
        """The item index of a key (``int`` or ``(index, draw)``)."""
        return int(key[0] if isinstance(key, (tuple, list)) else key)


class VectorsDatasetSpec(Spec):
    """Spec of :class:`VectorsDataset`."""

    type: Literal["vectors"] = "vectors"
    dataset: Component(DATASET) = Field(..., description="the dataset whose items get the vectors")  # type: ignore[valid-type]
    file: str = Field(..., description="a .npy (N, D) in the dataset's order, or a .csv / .parquet table keyed by path")
    key: str = Field("path", description="table column holding each image's path relative to the dataset's root")
    columns: tuple[str, ...] = Field((), description="table columns forming the vector, in order (a .npy needs none)")


@functools.lru_cache(maxsize=4)
def read_vectors(file: str, key: str = "path", columns: tuple[str, ...] = ()) -> tuple[np.ndarray, list[str] | None]:
    """Read a vector file: ``(vectors (N, D) float32, keys or None)``.

    A ``.npy`` holds ``(N, D)`` rows in dataset order (keys None); a ``.csv`` / ``.parquet`` table
    gives ``columns`` as the vector and ``key`` as each row's relative path.

    Raises:
        ValueError: an unknown suffix, a missing column, or an array that is not 2-d.
        OSError: the file cannot be read.
    """
    path = Path(file).expanduser()
    if path.suffix == ".npy":
        vectors = np.load(path, allow_pickle=False)
        if vectors.ndim != 2:
            raise ValueError(f"'{file}' holds a {vectors.ndim}-d array; save the vectors as one (N, D) array")
        return vectors.astype(np.float32), None
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"'{file}' is neither .npy, .csv nor .parquet; save the vectors in one of those")
    try:
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise ValueError(
            f"reading the vectors of '{file}' needs pyarrow: pip install \"hourglass-diffusion[tables]\", "
            "or save them as a .npy in the dataset's order"
        ) from None

    table = pyarrow.parquet.read_table(path) if path.suffix == ".parquet" else pyarrow.csv.read_csv(path)
    missing = [c for c in (key, *columns) if c not in table.column_names]
    if missing or not columns:
        raise ValueError(
            f"'{file}' lacks column(s) {missing or 'for the vector'}; it has {table.column_names}: set "
            "key and columns to the path column and the vector's columns"
        )
    vectors = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns], axis=1)
    return vectors.astype(np.float32), [str(v) for v in table.column(key).to_pylist()]


@DATASET.register("vectors")
class VectorsDataset(_Wrapper):
    """Any dataset with a per-item ``mapping_cond (D,)`` vector from a file.

    Built as ``DATASET.build({"type": "vectors", "dataset": {...}, "file": "v.npy"}, resolution=32)``.
    A ``.npy`` must have one row per item of the *whole* inner dataset, in its order; a table is matched
    by relative path (the inner dataset must list ``files``, as imagefolder does).

    Raises:
        ValueError: rows that do not match the items, or items without a row.
    """

    Spec = VectorsDatasetSpec

    @classmethod
    def mapping_cond_dim_of(cls, spec: VectorsDatasetSpec) -> int | None:
        """``D`` from a ``.npy`` header (a table's column count); ``None`` while the file is not there."""
        path = Path(spec.file).expanduser()
        if path.suffix != ".npy":
            return len(spec.columns) or None
        try:
            shape = np.load(path, mmap_mode="r").shape
        except (OSError, ValueError):
            return None
        return int(shape[1]) if len(shape) == 2 else None

    @classmethod
    def availability_problems(cls, spec: VectorsDatasetSpec) -> list[Problem]:
        """The inner dataset's, and a missing vector file."""
        problems = super().availability_problems(spec)
        if not Path(spec.file).expanduser().is_file():
            problems.append(
                Problem("file", f"'{spec.file}' is not a file", "point file at the vectors (.npy, .csv or .parquet)")
            )
        return problems

    def __init__(self, spec: VectorsDatasetSpec, *, resolution: Any, split: str = "train") -> None:
        super().__init__(spec, resolution=resolution, split=split)
        vectors, keys = read_vectors(self.spec.file, self.spec.key, tuple(self.spec.columns))
        if keys is None:
            if len(vectors) != len(self.inner):
                raise ValueError(
                    f"'{self.spec.file}' has {len(vectors)} rows for the {len(self.inner)} items of "
                    f"data.dataset.dataset ({self.spec.dataset.type}); write one row per item, in order"
                )
            self._vectors = vectors
        else:
            files = getattr(self.inner, "files", None)
            if files is None:
                raise ValueError(
                    f"a table of vectors is matched by path, but {self.spec.dataset.type} lists no "
                    "files; use a .npy in the dataset's order"
                )
            rows = {k: i for i, k in enumerate(keys)}
            absent = [f for f in files if f not in rows]
            if absent:
                raise ValueError(
                    f"'{self.spec.file}' has no row for {len(absent)} image(s), e.g. '{absent[0]}'; add "
                    f"rows whose {self.spec.key!r} is the path relative to the dataset's root"
                )
            self._vectors = vectors[[rows[f] for f in files]]
        self.mapping_cond_dim = int(vectors.shape[1])

    def __getitem__(self, key: Any) -> dict[str, Tensor]:
        """The inner item plus ``"mapping_cond": (D,) float32``."""
        item = dict(self.inner[key])
        item["mapping_cond"] = torch.from_numpy(self._vectors[self.index_of(key) % len(self)].copy())
        return item


class SuperResDatasetSpec(Spec):
    """Spec of :class:`SuperResDataset`."""

    type: Literal["superres"] = "superres"
    dataset: Component(DATASET) = Field(..., description="the high-resolution images")  # type: ignore[valid-type]
    factor: int = Field(4, ge=2, description="downsampling factor of the low-resolution condition")


@DATASET.register("superres")
class SuperResDataset(_Wrapper):
    """Super-resolution pairs: each image with itself downsampled ``factor`` times as ``cond_image``.

    Built as ``DATASET.build({"type": "superres", "dataset": {"type": "lfw"}, "factor": 4}, resolution=32)``:
    items gain ``"cond_image": (C, H / factor, W / factor)`` (bicubic, antialiased, values clamped to [-1, 1]).

    Raises:
        ValueError: a resolution that ``factor`` does not divide.
    """

    Spec = SuperResDatasetSpec

    @classmethod
    def cond_channels_of(cls, spec: SuperResDatasetSpec) -> int | None:
        """The inner dataset's channels."""
        return cls.channels_of(spec)

    def __init__(self, spec: SuperResDatasetSpec, *, resolution: Any, split: str = "train") -> None:
        super().__init__(spec, resolution=resolution, split=split)
        h, w = self.resolution
        if h % self.spec.factor or w % self.spec.factor:
            raise ValueError(
                f"superres: factor {self.spec.factor} does not divide the resolution {h}x{w}; "
                "use a model.input_size that it divides"
            )
        self.cond_channels = self.channels

    def __getitem__(self, key: Any) -> dict[str, Tensor]:
        """The inner item plus ``"cond_image": (C, H / factor, W / factor)``."""
        item = dict(self.inner[key])
        h, w = self.resolution
        size = (h // self.spec.factor, w // self.spec.factor)
        item["cond_image"] = resize_image(item["image"][None], size)[0].clamp(-1.0, 1.0)
        return item


class PairedFolderDatasetSpec(Spec):
    """Spec of :class:`PairedFolderDataset`."""

    type: Literal["paired"] = "paired"
    root: str = Field(..., description="folder holding the source and target folders")
    source: str = Field("source", description="sub-folder of the condition images")
    target: str = Field("target", description="sub-folder of the images learned")
    channels: Literal[1, 3] = Field(3, description="channels of the target images")
    source_channels: Literal[1, 3] = Field(3, description="channels of the source (condition) images")


@DATASET.register("paired")
class PairedFolderDataset(ImageDataset):
    """Paired image-to-image: ``root/target/a/b.png`` learned with ``root/source/a/b.*`` as ``cond_image``.

    Both are centre-cropped and resized to the model's resolution. Items: ``image (C, H, W)``,
    ``cond_image (C', H, W)`` in [-1, 1], ``class_cond`` 0, ``aug_cond`` zeros.

    Raises:
        ValueError: a target without a source image of the same relative path and stem.
    """

    Spec = PairedFolderDatasetSpec

    @classmethod
    def classes_of(cls, spec: PairedFolderDatasetSpec) -> int:
        """0: unlabelled."""
        return 0

    @classmethod
    def channels_of(cls, spec: PairedFolderDatasetSpec) -> int:
        """``spec.channels``."""
        return spec.channels

    @classmethod
    def cond_channels_of(cls, spec: PairedFolderDatasetSpec) -> int:
        """``spec.source_channels``."""
        return spec.source_channels

    @classmethod
    def availability_problems(cls, spec: PairedFolderDatasetSpec) -> list[Problem]:
        """A missing source or target folder."""
        root = Path(spec.root).expanduser()
        return [
            Problem(name, f"'{root / sub}' is not a folder", f"put the {name} images under '{root / sub}'")
            for name, sub in (("source", spec.source), ("target", spec.target))
            if not (root / sub).is_dir()
        ]

    def __init__(self, spec: PairedFolderDatasetSpec, *, resolution: Any, split: str = "train") -> None:
        self.spec = spec = PairedFolderDatasetSpec.model_validate(spec)
        root = Path(spec.root).expanduser()
        self.targets = ImageFolderDataset(
            {"type": "imagefolder", "root": str(root / spec.target), "channels": spec.channels},
            resolution=resolution,
            split=split,
        )
        self.resolution, self.channels, self.cond_channels = (
            self.targets.resolution,
            spec.channels,
            spec.source_channels,
        )
        sources = {
            str(Path(p).relative_to(root / spec.source).with_suffix("").as_posix()): p
            for p in walk_files(root / spec.source, IMAGE_EXTENSIONS)
        }
        stems = [str(Path(f).with_suffix("").as_posix()) for f in self.targets.files]
        absent = [s for s in stems if s not in sources]
        if absent:
            raise ValueError(
                f"paired: {len(absent)} target image(s) have no source, e.g. '{absent[0]}'; put a source "
                f"image of the same name under '{root / spec.source}'"
            )
        self.sources = [sources[s] for s in stems]

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        """The target image ``(C, H, W)`` in [-1, 1] and 0."""
        return self.targets.load(index, generator)[0], 0

    def __getitem__(self, key: Any) -> dict[str, Tensor]:
        """Target item plus ``"cond_image": (C', H, W)``."""
        item = super().__getitem__(key)
        index, _ = self.resolve_key(key)
        with Image.open(self.sources[index]) as image:
            pixels = pil_to_tensor(image, self.cond_channels)
        item["cond_image"] = (resize_cover(pixels, self.resolution).clamp(0.0, 1.0) * 2 - 1).contiguous()
        return item
