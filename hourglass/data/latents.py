"""``latents``: precomputed latents: latent shards, or one ``.npy`` array ``(C, H, W)`` per item.

Latent diffusion models such as DiT (Peebles & Xie 2023) and U-ViT's ImageNet 256/512 models (Bao
et al. 2023) train on Stable Diffusion VAE latents of the images (4 x 32 x 32 for 256 px), often
encoded once ahead of training (U-ViT's ``imagenet256_features``; fast-DiT's features). This dataset
reads such latents: every ``.npy`` file under ``root`` (recursive, hidden entries skipped, sorted by
relative path), each one array of shape ``(channels, H, W)`` with ``(H, W)`` the model's input size,
loaded with ``numpy.load(allow_pickle=False)`` and multiplied by ``scale`` (e.g. 0.18215 for
unscaled SD-VAE latents; 1 for latents saved already scaled). ``hflip`` flips a latent horizontally
with that probability (the latent of a flipped image is close to, not exactly, the flipped latent).

Classes as in ``imagefolder``: ``classes = "subfolders"`` labels each file by the top-level folder
under ``root`` that holds it (ids in sorted folder order). Latents are not images: their values are
not confined to ``[-1, 1]`` (the dataset declares ``value_range = None``).

**Latent shards.** A ``root`` holding ``latents.json`` is a shard folder written by ``hourglass data
latents`` (format: :mod:`hourglass.data.latent_shards`): every item has the latent of its image and the
latent of the image's horizontal flip, so ``hflip`` picks the stored flipped latent (exact, as in
DiT's and U-ViT's feature pipelines) with the flip decided by the item's draw key. ``classes =
"stored"`` takes the class ids the shards store (``"none"``: unconditional); the index declares the
channels, the latent grid and the classes, so validation checks them before anything is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from hourglass.data._base import ImageDataset, check_split, parse_resolution
from hourglass.data._walk import label_by_subfolder, walk_files
from hourglass.data.latent_shards import INDEX_FILE, ShardReader, read_index
from hourglass.registry import DATASET
from hourglass.spec import Problem, Spec

__all__ = ["LatentsDataset", "LatentsDatasetSpec", "LATENT_EXTENSIONS"]

LATENT_EXTENSIONS: tuple[str, ...] = (".npy",)


class LatentsDatasetSpec(Spec):
    """Spec of :class:`LatentsDataset`."""

    type: Literal["latents"] = "latents"
    root: str = Field(
        description="a latent shard folder (latents.json, from hourglass data latents), or a folder "
        "searched recursively for .npy latents; '~' is expanded, relative to the cwd"
    )
    classes: Literal["none", "subfolders", "stored"] = Field(
        "none",
        description="none: unconditional; subfolders: class ids by sorted top-level folder name (.npy); "
        "stored: the class ids stored in latent shards",
    )
    channels: int = Field(4, ge=1, description="channels C of every latent (Stable Diffusion's VAE: 4)")
    scale: float = Field(1.0, gt=0, description="multiplies every latent (0.18215 for unscaled SD-VAE latents)")
    hflip: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="probability of a horizontal flip: shards give the "
        "stored latent of the flipped image, .npy latents are flipped",
    )


def _shard_index(root: Path) -> dict[str, Any] | None:
    """The shard index of ``root`` (None: not a shard folder). Raises ValueError for an unreadable one."""
    return read_index(root) if (root / INDEX_FILE).is_file() else None


def _shard_problems(spec: LatentsDatasetSpec, root: Path, index: dict[str, Any]) -> list[Problem]:
    """What keeps the shard folder ``root`` (its ``index``) from being read as ``spec`` asks."""
    if not index.get("complete"):
        return [
            Problem(
                "root",
                f"the latent shards in '{root}' are unfinished (the encode stopped)",
                "rerun the same hourglass data latents command: it continues where it stopped",
                spec.root,
            )
        ]
    if spec.classes == "subfolders":
        return [
            Problem(
                "classes",
                "'subfolders' labels .npy files by folder, but latent shards store class ids",
                'set data.dataset.classes = "stored" (or "none")',
                spec.classes,
            )
        ]
    channels = index["latent_shape"][0]
    if channels != spec.channels:
        return [
            Problem(
                "channels",
                f"{spec.channels}, but the latent shards in '{root}' have {channels} channels",
                f"set data.dataset.channels = {channels}",
                spec.channels,
            )
        ]
    missing = [shard["file"] for shard in index["shards"] if not (root / shard["file"]).is_file()]
    if missing:
        return [
            Problem(
                "root",
                f"'{root}' lacks {len(missing)} shard file(s) its index lists, e.g. {missing[0]}",
                "copy the whole shard folder, or re-encode it",
                spec.root,
            )
        ]
    return []


@DATASET.register("latents")
class LatentsDataset(ImageDataset):
    """Latent shards or every ``.npy`` latent under ``spec.root`` (see the module docstring).

    Built as ``DATASET.build({"type": "latents", "root": "data/in256_latents", "classes": "stored"},
    resolution=32, split="train")``. Items: ``image (C, H, W)`` the latent times ``scale``,
    ``class_cond ()``, ``aug_cond (9,)`` zeros.

    Raises:
        FileNotFoundError: ``root`` is missing or holds no ``.npy`` file (nor a shard index).
        ValueError: a latent whose shape is not ``(channels, *resolution)``, naming the file; latent shards
            that are unfinished or do not fit the spec.
    """

    Spec = LatentsDatasetSpec
    #: latents are not confined to [-1, 1]
    value_range: ClassVar[tuple[float, float] | None] = None
    holds_latents: ClassVar[bool] = True

    @staticmethod
    def _declared_index(spec: LatentsDatasetSpec) -> dict[str, Any] | None:
        """The shard index when ``root`` is a complete, readable shard folder, else None (nothing raised)."""
        try:
            index = _shard_index(Path(spec.root).expanduser())
        except ValueError:
            return None
        return index if index is not None and index.get("complete") else None

    @classmethod
    def classes_of(cls, spec: LatentsDatasetSpec) -> int | None:
        """0 for ``classes = "none"``; ``"stored"``: the shard index's class count when it is there; else
        known once the files are listed (``None``)."""
        if spec.classes == "none":
            return 0
        index = cls._declared_index(spec) if spec.classes == "stored" else None
        return int(index["num_classes"]) if index is not None else None

    @classmethod
    def class_names_of(cls, spec: LatentsDatasetSpec) -> list[str] | None:
        """``"stored"``: the class names the shard index holds, when it is there."""
        index = cls._declared_index(spec) if spec.classes == "stored" else None
        return list(index["class_names"]) if index is not None and index["class_names"] else None

    @classmethod
    def channels_of(cls, spec: Any) -> int:
        """``spec.channels`` (checked against a shard index by :meth:`availability_problems`)."""
        return spec.channels

    @classmethod
    def availability_problems(cls, spec: LatentsDatasetSpec) -> list[Problem]:
        """``root`` must be a complete shard folder that fits the spec, or a folder holding at least one ``.npy``
        file (in a class subfolder with subfolders)."""
        root = Path(spec.root).expanduser()
        fix = (
            "set data.dataset.root to a folder written by hourglass data latents, or to a folder of precomputed "
            "latents (one .npy (C, H, W) per image)"
        )
        if not root.is_dir():
            what = "does not exist" if not root.exists() else "is a file, not a folder"
            return [Problem("root", f"folder '{root}' {what}", fix, spec.root)]
        try:
            index = _shard_index(root)
        except ValueError as exc:
            return [Problem("root", str(exc), fix, spec.root)]
        if index is not None:
            return _shard_problems(spec, root, index)
        if spec.classes == "stored":
            return [
                Problem(
                    "classes",
                    f"'stored' reads class ids from latent shards, but '{root}' holds no {INDEX_FILE}",
                    'set data.dataset.classes = "subfolders" or "none" for .npy latents',
                    spec.classes,
                )
            ]
        if not walk_files(root, LATENT_EXTENSIONS, first=True, in_subfolders=spec.classes == "subfolders"):
            where = " inside a class subfolder" if spec.classes == "subfolders" else ""
            return [Problem("root", f"folder '{root}' holds no .npy latent{where}", fix, spec.root)]
        return []

    def __init__(self, spec: LatentsDatasetSpec, *, resolution: int | tuple[int, int], split: str = "train") -> None:
        self.spec = spec = LatentsDatasetSpec.model_validate(spec)
        self.resolution = parse_resolution(resolution, what="latents dataset")
        self.split = check_split(split, ("train",), "the latents dataset", "point 'root' at the folder of that split")
        self.channels = spec.channels
        self.root = root = Path(spec.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"latents folder '{root}' does not exist or is not a folder; fix 'root'")
        index = _shard_index(root)
        self.shards = None if index is None else self._open_shards(index)
        if self.shards is not None:
            return
        if spec.classes == "stored":
            raise ValueError(
                f"classes = 'stored' reads latent shards, but '{root}' holds no {INDEX_FILE}; "
                "use classes = 'subfolders' or 'none' for .npy latents"
            )
        paths = walk_files(root, LATENT_EXTENSIONS)
        if spec.classes == "subfolders":
            paths, self.class_names, self.labels = label_by_subfolder(root, paths, "latent(s)")
        else:
            self.class_names = []
            self.labels = [0] * len(paths)
        if not paths:
            raise FileNotFoundError(
                f"latents folder '{root}' holds no .npy file"
                + (" inside a class subfolder" if spec.classes == "subfolders" else "")
            )
        self.files = paths
        self.num_classes = len(self.class_names)
        self._check_shape(np.load(paths[0], mmap_mode="r", allow_pickle=False).shape, paths[0])

    def _open_shards(self, index: dict[str, Any]) -> ShardReader:
        """Check the shard ``index`` against the spec and the resolution; the reader of its shards."""
        problems = _shard_problems(self.spec, self.root, index)
        if problems:
            raise ValueError(f"data.dataset.{problems[0]}")
        self._check_shape(tuple(index["latent_shape"]), self.root / INDEX_FILE)
        stored = self.spec.classes == "stored"
        self.num_classes = int(index["num_classes"]) if stored else 0
        self.class_names = list(index["class_names"]) if stored else []
        return ShardReader(self.root, index)

    def _check_shape(self, shape: tuple[int, ...], path: Path) -> None:
        expected = (self.channels, *self.resolution)
        if tuple(shape) != expected:
            raise ValueError(
                f"latent {path} has shape {tuple(shape)}; this dataset needs {expected} (data.dataset."
                "channels and the model's input_size); encode the images at the model's size"
            )

    def __len__(self) -> int:
        return self.shards.count if self.shards is not None else len(self.files)

    def load(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        flip = self.spec.hflip > 0 and float(torch.rand((), generator=generator)) < self.spec.hflip
        if self.shards is not None:
            latent, label = self.shards.read(index, flipped=flip)
            label = label if self.num_classes else 0
        else:
            path = self.files[index]
            array = np.load(path, allow_pickle=False)
            self._check_shape(array.shape, path)
            latent = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            latent, label = (latent.flip(-1) if flip else latent), self.labels[index]
        if self.spec.scale != 1.0:
            latent = latent * self.spec.scale
        return latent, label
