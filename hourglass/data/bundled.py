"""Small datasets bundled inside installed packages (no download): ``digits`` and ``lfw``.

* ``digits``: scikit-learn's ``load_digits``: 1797 grey 8x8 handwritten digits, 10 classes,
  intensities 0..16 with 16 = ink. Mapped so that background is -1 (black) and ink +1 (white),
  like MNIST.
* ``lfw``: scikit-image's ``data.lfw_subset()``: 200 grey 25x25 crops from Labeled Faces in the Wild;
  the first 100 are faces, the last 100 non-faces (background patches of the same photos).

Both are resized to the requested resolution by bilinear interpolation (antialiased when shrinking;
a non-square resolution matches the shorter side and centre-crops) and are either 1 channel or the
grey replicated to 3 (``channels``). Neither has an official split: ``split="train"`` holds every
image, except that ``lfw`` with ``holdout = N`` keeps its last N images apart as ``split="test"``.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from hourglass.data._base import ImageDataset, check_split, parse_resolution, resize_cover, to_channels
from hourglass.registry import DATASET
from hourglass.spec import Spec

__all__ = ["DigitsDataset", "DigitsDatasetSpec", "LFWDataset", "LFWDatasetSpec"]


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.images, dtype=np.float32) / 16.0, np.asarray(bunch.target, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _lfw() -> np.ndarray:
    from skimage import data

    images = np.asarray(data.lfw_subset())
    if images.dtype == np.uint8:  # documented as uint8; current releases return float64 in [0, 1]
        return images.astype(np.float32) / 255.0
    return np.clip(images.astype(np.float32), 0.0, 1.0)


class _GreyArrayDataset(ImageDataset):
    """Grey images from an ``(N, h, w)`` array in [0, 1], resized per item."""

    _images: np.ndarray
    _labels: np.ndarray

    def __len__(self) -> int:
        return len(self._images)

    def load(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        """``(C, H, W)`` in [-1, 1] and the class id of item ``index`` (no randomness)."""
        grey = torch.from_numpy(self._images[index])[None]
        image = resize_cover(grey, self.resolution, mode="bilinear").clamp(0.0, 1.0)
        return to_channels(image * 2 - 1, self.channels), int(self._labels[index])


class DigitsDatasetSpec(Spec):
    """Spec of :class:`DigitsDataset`."""

    type: Literal["digits"] = "digits"
    channels: Literal[1, 3] = Field(1, description="1: grey; 3: the grey replicated to RGB")
    digits: tuple[int, ...] = Field(
        tuple(range(10)),
        min_length=1,
        description="which digits to keep; class ids follow this order (so (3, 7) gives ids 0 and 1)",
    )
    class_cond: bool = Field(True, description="label items with their digit; false: unconditional")


@DATASET.register("digits")
class DigitsDataset(_GreyArrayDataset):
    """scikit-learn's 8x8 handwritten digits, upsampled (1797 items, 10 classes).

    Built as ``DATASET.build({"type": "digits"}, resolution=32, split="train")``.
    Items: ``image (C, H, W)`` in [-1, 1] (ink is +1), ``class_cond ()`` the position of the digit
    in ``spec.digits`` (0 when unconditional), ``aug_cond (9,)`` zeros.

    Args:
        spec: the :class:`DigitsDatasetSpec`.
        resolution: an int or ``(H, W)``.
        split: only ``"train"`` (all 1797 images; the set has no official split).
    """

    Spec = DigitsDatasetSpec

    @classmethod
    def classes_of(cls, spec: DigitsDatasetSpec) -> int:
        """``len(spec.digits)`` with ``class_cond``, else 0."""
        return len(spec.digits) if spec.class_cond else 0

    @classmethod
    def class_names_of(cls, spec: DigitsDatasetSpec) -> list[str] | None:
        """The digits, in class-id order (None when unconditional)."""
        return [str(d) for d in spec.digits] if spec.class_cond else None

    @classmethod
    def channels_of(cls, spec: Any) -> int:
        """``spec.channels``."""
        return spec.channels

    def __init__(self, spec: DigitsDatasetSpec, *, resolution: int | tuple[int, int], split: str = "train") -> None:
        self.spec = spec = DigitsDatasetSpec.model_validate(spec)
        bad = [d for d in spec.digits if not 0 <= d <= 9]
        if bad or len(set(spec.digits)) != len(spec.digits):
            raise ValueError(f"digits {list(spec.digits)} must be distinct values in 0..9; fix spec.digits")
        self.resolution = parse_resolution(resolution, what="digits dataset")
        self.split = check_split(split, ("train",), "the digits dataset", "it has no official split")
        self.channels = spec.channels
        images, targets = _digits()
        keep = np.isin(targets, spec.digits)
        self._images = images[keep]
        ids = {d: i for i, d in enumerate(spec.digits)}
        self._labels = np.array([ids[t] for t in targets[keep]], dtype=np.int64)
        if spec.class_cond:
            self.num_classes = len(spec.digits)
            self.class_names = [str(d) for d in spec.digits]
        else:
            self.num_classes, self.class_names = 0, []
            self._labels = np.zeros_like(self._labels)


class LFWDatasetSpec(Spec):
    """Spec of :class:`LFWDataset`."""

    type: Literal["lfw"] = "lfw"
    channels: Literal[1, 3] = Field(1, description="1: grey; 3: the grey replicated to RGB")
    subset: Literal["all", "faces", "non_faces"] = Field(
        "all", description="which of the 200 crops: all, the 100 faces, or the 100 non-faces"
    )
    class_cond: bool = Field(
        True,
        description="with subset='all', label faces 0 and non-faces 1; false (or a single subset): unconditional",
    )
    holdout: int = Field(
        0, ge=0, lt=100, description="the last N selected images form split 'test' and are left out of 'train'"
    )


@DATASET.register("lfw")
class LFWDataset(_GreyArrayDataset):
    """scikit-image's LFW subset: 100 face and 100 non-face grey 25x25 crops, resized.

    Built as ``DATASET.build({"type": "lfw"}, resolution=32, split="train")``. With
    ``subset="all"`` and ``class_cond`` it has 2 classes, ``["face", "non_face"]``; otherwise it is
    unconditional. Items: ``image (C, H, W)`` in [-1, 1], ``class_cond ()``, ``aug_cond (9,)`` zeros.

    Args:
        spec: the :class:`LFWDatasetSpec`.
        resolution: an int or ``(H, W)``.
        split: ``"train"`` (every selected image but the last ``holdout``), or with ``holdout`` ``"test"``
            (those last ones).
    """

    Spec = LFWDatasetSpec

    @classmethod
    def classes_of(cls, spec: LFWDatasetSpec) -> int:
        """2 (face, non-face) for ``subset = "all"`` with ``class_cond``, else 0."""
        return 2 if spec.subset == "all" and spec.class_cond else 0

    @classmethod
    def class_names_of(cls, spec: LFWDatasetSpec) -> list[str] | None:
        """``["face", "non_face"]`` when labelled, else None."""
        return ["face", "non_face"] if cls.classes_of(spec) else None

    @classmethod
    def channels_of(cls, spec: Any) -> int:
        """``spec.channels``."""
        return spec.channels

    def __init__(self, spec: LFWDatasetSpec, *, resolution: int | tuple[int, int], split: str = "train") -> None:
        self.spec = spec = LFWDatasetSpec.model_validate(spec)
        self.resolution = parse_resolution(resolution, what="lfw dataset")
        splits = ("train", "test") if spec.holdout else ("train",)
        self.split = check_split(split, splits, "the lfw dataset", "set holdout = N for a 'test' split of N images")
        self.channels = spec.channels
        images = _lfw()
        labels = np.repeat(np.array([0, 1], dtype=np.int64), len(images) // 2)
        chosen = {"all": slice(None), "faces": labels == 0, "non_faces": labels == 1}[spec.subset]
        self._images, self._labels = images[chosen], labels[chosen]
        if spec.holdout:
            part = slice(-spec.holdout, None) if split == "test" else slice(None, -spec.holdout)
            self._images, self._labels = self._images[part], self._labels[part]
        if spec.subset == "all" and spec.class_cond:
            self.num_classes, self.class_names = 2, ["face", "non_face"]
        else:
            self.num_classes, self.class_names = 0, []
            self._labels = np.zeros_like(self._labels)
