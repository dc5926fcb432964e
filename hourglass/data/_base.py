"""Shared machinery of the built-in datasets: the item contract, keys with draw seeds, resizing.

Every built-in dataset is an :class:`ImageDataset`. Its items are dicts::

    {"image": (C, H, W) float32 in [-1, 1], "class_cond": () int64, "aug_cond": (9,) float32}

An item is addressed by a *key*: either a plain ``int`` index, or a pair ``(index, draw)`` where
``draw`` is a 63-bit seed for every random choice made while loading that item (random crop,
flip, augmentation). The loader of :mod:`hourglass.data.loader` sends pairs whose ``draw`` is a
pure function of ``(seed, epoch, position)``, which is what makes a resumed run see exactly the
batches an uninterrupted run would have seen. A plain ``int`` key draws from torch's global RNG,
like a torchvision transform.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from hourglass.registry import DATASET, Contract
from hourglass.spec import Problem

__all__ = [
    "DatasetComponent", "ImageDataset", "check_split", "make_item", "mix_seed", "parse_resolution", "resize_cover",
    "to_channels",
]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """Hash a sequence of integers into one well-mixed seed in ``[0, 2**63)``.

    Order matters (``mix_seed(1, 2) != mix_seed(2, 1)``); negative values are accepted.

    Args:
        *values: integers such as ``(seed, epoch, position)``.

    Returns:
        A non-negative ``int`` below ``2**63``, valid for ``torch.Generator.manual_seed``
        and ``numpy.random.default_rng``.
    """
    h = 0x243F6A8885A308D3  # digits of pi: an arbitrary non-zero start
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


def parse_resolution(resolution: Any, *, minimum: int = 1, what: str = "dataset") -> tuple[int, int]:
    """Turn the ``resolution`` build context into ``(H, W)``.

    Args:
        resolution: an ``int`` (square) or a pair ``(H, W)`` of ``int``.
        minimum: the smallest side allowed.
        what: the dataset name used in error messages.

    Returns:
        ``(H, W)``.

    Raises:
        ValueError: if it is not an int or a pair of ints of at least ``minimum``.
    """
    if isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool):
        hw = (int(resolution), int(resolution))
    elif (
        isinstance(resolution, (tuple, list))
        and len(resolution) == 2
        and all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in resolution)
    ):
        hw = (int(resolution[0]), int(resolution[1]))
    else:
        raise ValueError(
            f"{what}: resolution must be an int or a pair (height, width) of ints, got {resolution!r}; "
            "pass e.g. resolution=32 or resolution=(32, 64)"
        )
    if min(hw) < minimum:
        raise ValueError(f"{what}: resolution {hw[0]}x{hw[1]} is too small; every side must be at least {minimum} px")
    return hw


def to_channels(image: Tensor, channels: int) -> Tensor:
    """Convert a ``(1 or 3, H, W)`` image to ``channels`` (1: ITU-R 601 luma, 3: replicate grey).

    Args:
        image: ``(c, H, W)`` with ``c`` in {1, 3}.
        channels: 1 or 3.

    Returns:
        ``(channels, H, W)``, same dtype.
    """
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return image.expand(3, -1, -1).clone()
    if c == 3 and channels == 1:
        weights = image.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        return (image * weights).sum(0, keepdim=True)
    raise ValueError(f"cannot convert an image with {c} channels to {channels}; use 1 or 3 channels")


def resize_cover(
    image: Tensor,
    size: tuple[int, int],
    *,
    random_crop: bool = False,
    generator: torch.Generator | None = None,
    mode: str = "bicubic",
) -> Tensor:
    """Resize so the image covers ``size``, then crop to it (the shorter side is matched).

    Scales by ``max(H/h, W/w)`` (up or down, antialiased when shrinking), then crops the centre
    or, with ``random_crop``, a uniformly random window drawn from ``generator`` (or torch's
    global RNG when ``generator`` is None).

    Args:
        image: ``(C, h, w)`` float.
        size: target ``(H, W)``.
        random_crop: crop a random window instead of the centre.
        generator: RNG for the random crop.
        mode: ``F.interpolate`` mode, ``"bicubic"`` or ``"bilinear"``.

    Returns:
        ``(C, H, W)`` (values may overshoot the input range slightly with bicubic).
    """
    height, width = size
    _, h, w = image.shape
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        new_h = max(height, round(h * scale))
        new_w = max(width, round(w * scale))
        if (new_h, new_w) != (h, w):
            image = F.interpolate(image[None], size=(new_h, new_w), mode=mode, align_corners=False, antialias=True)[0]
    _, h, w = image.shape
    if random_crop:
        top = int(torch.randint(h - height + 1, (), generator=generator))
        left = int(torch.randint(w - width + 1, (), generator=generator))
    else:
        top, left = (h - height) // 2, (w - width) // 2
    return image[:, top : top + height, left : left + width]


def make_item(image: Tensor, label: int) -> dict[str, Tensor]:
    """The item of an ``image (C, H, W)`` in [-1, 1] with class id ``label`` (no augmentation).

    Returns:
        ``{"image": (C, H, W) float32, "class_cond": () int64, "aug_cond": (9,) zeros}``.
    """
    return {
        "image": image.to(torch.float32).contiguous(),
        "class_cond": torch.tensor(label, dtype=torch.int64),
        "aug_cond": torch.zeros(9, dtype=torch.float32),
    }


class DatasetComponent(Contract):
    """Contract of the ``dataset`` family: what a dataset declares before it is built, and its items.

    Built as ``cls(spec, resolution=(H, W), split="train")``; items are
    ``{"image": (C, H, W) float32 in [-1, 1], "class_cond": () int64, "aug_cond": (9,) float32}``;
    instances expose ``num_classes``, ``channels``, ``resolution``, ``class_names`` and
    ``uses_draw_keys``; the class declares :attr:`holds_latents`. Items may also carry
    ``"mapping_cond": (D,) float32`` (a per-sample vector for the model's mapping network) and
    ``"cond_image": (C', h, w) float32`` (an image condition); instances then expose
    ``mapping_cond_dim`` and ``cond_channels``. Recipe validation compares
    :meth:`classes_of`, :meth:`channels_of`, :meth:`mapping_cond_dim_of` and :meth:`cond_channels_of` with the model; a dataset that learns them only from its files returns ``None`` and is
    checked once it is built. :meth:`availability_problems` is checked by ``hourglass validate``
    and before training builds anything (never while a spec is validated: a checkpoint's recipe
    must load on a machine without the data). :meth:`class_names_of` names the classes when the
    spec alone tells them.
    """

    num_classes: int
    channels: int
    resolution: tuple[int, int]
    class_names: list[str]
    uses_draw_keys: bool = False
    #: the range item values lie in: ``(-1, 1)`` for images; None for data that is not confined (latents)
    value_range: tuple[float, float] | None = (-1.0, 1.0)
    #: True for data that is already in a VAE's latent space (precomputed latents): a recipe's ``[vae]``
    #: then only decodes samples, and the model's channels are checked against the data's, not the VAE's images
    holds_latents: ClassVar[bool] = False

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """``holds_latents``."""
        return {"holds_latents": cls.holds_latents}

    @classmethod
    def classes_of(cls, spec: Any) -> int | None:
        """Classes the dataset built from ``spec`` has (0: unlabelled), or ``None`` if known only after loading."""
        return None

    @classmethod
    def channels_of(cls, spec: Any) -> int | None:
        """Channels of its images, or ``None`` if known only after loading."""
        return None

    @classmethod
    def mapping_cond_dim_of(cls, spec: Any) -> int | None:
        """Width ``D`` of the ``mapping_cond (D,)`` vector its items carry (0: none), or ``None`` if known only
        after loading."""
        return 0

    @classmethod
    def cond_channels_of(cls, spec: Any) -> int | None:
        """Channels of the ``cond_image`` its items carry (0: none), or ``None`` if known only after loading."""
        return 0

    @classmethod
    def class_names_of(cls, spec: Any) -> list[str] | None:
        """One name per class id, if the spec alone tells them (``None``: unknown before loading, or unnamed)."""
        return None

    @classmethod
    def availability_problems(cls, spec: Any) -> list[Problem]:
        """What keeps the data of ``spec`` from being read here (a missing folder, no image in it, ...).

        Cheap (it must not index the whole dataset), and run by ``hourglass validate`` and before
        training builds anything, never by spec validation. Paths are relative to the dataset spec
        (``"root"``); the recipe layer prefixes ``data.dataset``.

        Returns:
            The problems found; ``[]`` (the default) when the data is there or needs no files.
        """
        return []


DATASET.set_contract(DatasetComponent)


class ImageDataset(DatasetComponent, Dataset):
    """Base of the built-in datasets: the item contract and key handling.

    Subclasses set ``num_classes``, ``channels``, ``resolution`` and ``class_names`` and implement
    ``__len__`` and ``load(index, generator) -> (image, label)``.

    Attributes:
        num_classes: number of classes; 0 for an unconditional dataset (then ``class_cond`` is 0).
        channels: ``C`` of every image.
        resolution: ``(H, W)`` of every image.
        class_names: one name per class id (empty when unconditional).
        uses_draw_keys: True: ``dataset[(index, draw)]`` is understood (see the module docstring).
    """

    uses_draw_keys = True
    num_classes: int = 0
    channels: int = 3
    resolution: tuple[int, int] = (0, 0)
    class_names: list[str] = []

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        """Load item ``index`` (already range-checked, non-negative).

        Args:
            index: item number in ``[0, len)``.
            generator: RNG for random choices, or None for torch's global RNG.

        Returns:
            ``image (C, H, W)`` float32 in [-1, 1] and the class id (0 when unconditional).
        """
        raise NotImplementedError

    def resolve_key(self, key: Any) -> tuple[int, int | None]:
        """Split a key into ``(index, draw)``; ``draw`` is None for a plain int.

        Raises:
            IndexError: if the index is out of range (negative indices count from the end).
            TypeError: if the key is neither an int nor an ``(int, int)`` pair.
        """
        draw = None
        if isinstance(key, (tuple, list)) and len(key) == 2:
            key, draw = key
            if not isinstance(draw, (int, np.integer)):
                raise TypeError(f"the draw seed of key {key!r} must be an int, got {draw!r}")
            draw = int(draw)
        if isinstance(key, Tensor) and key.numel() == 1:
            key = int(key.item())
        if not isinstance(key, (int, np.integer)) or isinstance(key, bool):
            raise TypeError(f"{type(self).__name__} keys are an int index or an (index, draw_seed) pair, got {key!r}")
        n = len(self)
        index = int(key) + n if key < 0 else int(key)
        if not 0 <= index < n:
            raise IndexError(f"index {key} is out of range for {type(self).__name__} of {n} items")
        return index, draw

    def __getitem__(self, key: Any) -> dict[str, Tensor]:
        """Item for ``key``: ``{"image": (C,H,W), "class_cond": (), "aug_cond": (9,)}``."""
        index, draw = self.resolve_key(key)
        generator = None if draw is None else torch.Generator().manual_seed(draw)
        return make_item(*self.load(index, generator))

    def __repr__(self) -> str:
        h, w = self.resolution
        return f"{type(self).__name__}({len(self)} items, {self.channels}x{h}x{w}, num_classes={self.num_classes})"


def check_split(split: Any, allowed: tuple[str, ...], what: str, hint: str = "") -> str:
    """Validate the ``split`` build context.

    Raises:
        ValueError: naming the allowed splits (and ``hint``) when ``split`` is not one of them.
    """
    if split not in allowed:
        raise ValueError(
            f"{what} has no split {split!r}; use one of {', '.join(map(repr, allowed))}" + (f"; {hint}" if hint else "")
        )
    return split
