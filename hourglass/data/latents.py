"""``latents``: precomputed latents, one ``.npy`` array ``(C, H, W)`` per item, optionally labelled by subfolder.

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
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from hourglass.data._base import ImageDataset, check_split, parse_resolution
from hourglass.data._walk import walk_files
from hourglass.registry import DATASET
from hourglass.spec import Problem, Spec

__all__ = ["LatentsDataset", "LatentsDatasetSpec", "LATENT_EXTENSIONS"]

LATENT_EXTENSIONS: tuple[str, ...] = (".npy",)


class LatentsDatasetSpec(Spec):
    """Spec of :class:`LatentsDataset`."""

    type: Literal["latents"] = "latents"
    root: str = Field(description="folder searched recursively for .npy latents; '~' is expanded, relative to the cwd")
    classes: Literal["none", "subfolders"] = Field(
        "none", description="none: unconditional; subfolders: class ids by sorted top-level folder name"
    )
    channels: int = Field(4, ge=1, description="channels C of every latent (Stable Diffusion's VAE: 4)")
    scale: float = Field(1.0, gt=0, description="multiplies every latent (0.18215 for unscaled SD-VAE latents)")
    hflip: float = Field(0.0, ge=0.0, le=1.0, description="probability of a horizontal flip of the latent")


@DATASET.register("latents")
class LatentsDataset(ImageDataset):
    """Every ``.npy`` latent under ``spec.root`` (see the module docstring).

    Built as ``DATASET.build({"type": "latents", "root": "data/in256_latents", "classes": "subfolders"},
    resolution=32, split="train")``. Items: ``image (C, H, W)`` the latent times ``scale``,
    ``class_cond ()``, ``aug_cond (9,)`` zeros.

    Raises:
        FileNotFoundError: ``root`` is missing or holds no ``.npy`` file.
        ValueError: a latent whose shape is not ``(channels, *resolution)``, naming the file.
    """

    Spec = LatentsDatasetSpec
    #: latents are not confined to [-1, 1]
    value_range: ClassVar[tuple[float, float] | None] = None
    holds_latents: ClassVar[bool] = True

    @classmethod
    def classes_of(cls, spec: LatentsDatasetSpec) -> int | None:
        """0 for ``classes = "none"``; with subfolders, known once the files are listed (``None``)."""
        return 0 if spec.classes == "none" else None

    @classmethod
    def channels_of(cls, spec: Any) -> int:
        """``spec.channels``."""
        return spec.channels

    @classmethod
    def availability_problems(cls, spec: LatentsDatasetSpec) -> list[Problem]:
        """``root`` must be a folder holding at least one ``.npy`` file (in a class subfolder with subfolders)."""
        root = Path(spec.root).expanduser()
        fix = "set data.dataset.root to the folder of your precomputed latents (one .npy (C, H, W) per image)"
        if not root.is_dir():
            what = "does not exist" if not root.exists() else "is a file, not a folder"
            return [Problem("root", f"folder '{root}' {what}", fix, spec.root)]
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
        paths = walk_files(root, LATENT_EXTENSIONS)
        if spec.classes == "subfolders":
            loose = [p for p in paths if p.parent == root]
            if loose:
                warnings.warn(f"ignored {len(loose)} latent(s) lying directly in '{root}' because classes='subfolders' "
                              "takes the class from the top-level folder", UserWarning, stacklevel=2)
            paths = [p for p in paths if p.parent != root]
            top = [p.relative_to(root).parts[0] for p in paths]
            self.class_names = sorted(set(top))
            ids = {name: i for i, name in enumerate(self.class_names)}
            self.labels = [ids[t] for t in top]
        else:
            self.class_names = []
            self.labels = [0] * len(paths)
        if not paths:
            raise FileNotFoundError(f"latents folder '{root}' holds no .npy file"
                                    + (" inside a class subfolder" if spec.classes == "subfolders" else ""))
        self.files = paths
        self.num_classes = len(self.class_names)
        self._check_shape(np.load(paths[0], mmap_mode="r", allow_pickle=False).shape, paths[0])

    def _check_shape(self, shape: tuple[int, ...], path: Path) -> None:
        expected = (self.channels, *self.resolution)
        if tuple(shape) != expected:
            raise ValueError(f"latent {path} has shape {tuple(shape)}; this dataset needs {expected} (data.dataset."
                             "channels and the model's input_size); encode the images at the model's size")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        path = self.files[index]
        array = np.load(path, allow_pickle=False)
        self._check_shape(array.shape, path)
        latent = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if self.spec.scale != 1.0:
            latent = latent * self.spec.scale
        if self.spec.hflip > 0 and float(torch.rand((), generator=generator)) < self.spec.hflip:
            latent = latent.flip(-1)
        return latent, self.labels[index]
