"""Checks of the ``dataset`` family (private): a dataset built at 16 px and a few of its items."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor

from hourglass.registry import Registry
from hourglass.testing._common import fail

__all__ = ["RESOLUTION", "check_dataset"]

#: the side of the images the dataset check builds
RESOLUTION = 16
#: how far outside [-1, 1] a pixel may lie (float rounding of ``2 x - 1``)
_RANGE_TOL = 1e-6


def _item(dataset: Any, key: Any) -> dict[str, Tensor]:
    if not getattr(dataset, "uses_draw_keys", False):
        torch.manual_seed(key[1])  # a plain int key draws from torch's global RNG
        key = key[0]
    return dataset[key]


def _check_item(fam: str, name: str, item: Any, index: int, channels: int, num_classes: int,
                value_range: tuple[float, float] | None = (-1.0, 1.0)) -> None:
    where = f"item {index}"
    if not isinstance(item, dict) or not {"image", "class_cond", "aug_cond"} <= set(item):
        raise fail(fam, name, "dataset", f"{where} is {type(item).__name__} with keys "
                   f"{sorted(item) if isinstance(item, dict) else None}; expected a dict with image, class_cond, aug_cond")
    image, label, aug = item["image"], item["class_cond"], item["aug_cond"]
    shape = (channels, RESOLUTION, RESOLUTION)
    if not isinstance(image, Tensor) or image.dtype != torch.float32 or tuple(image.shape) != shape:
        raise fail(fam, name, "dataset", f"{where}: image is {getattr(image, 'dtype', type(image).__name__)} "
                   f"{tuple(getattr(image, 'shape', ()))}; expected float32 {shape} (channels, resolution)")
    if not bool(torch.isfinite(image).all()):
        raise fail(fam, name, "dataset", f"{where}: the image has NaN or inf pixels")
    lo, hi = image.min().item(), image.max().item()
    if value_range is not None and (lo < value_range[0] - _RANGE_TOL or hi > value_range[1] + _RANGE_TOL):
        raise fail(fam, name, "dataset", f"{where}: pixels span [{lo:.3g}, {hi:.3g}]; images must lie in "
                   f"[{value_range[0]:g}, {value_range[1]:g}]")
    if not isinstance(label, Tensor) or label.dtype != torch.int64 or label.ndim != 0:
        raise fail(fam, name, "dataset", f"{where}: class_cond is {label!r}; expected a 0-d int64 tensor")
    if not 0 <= int(label) < max(num_classes, 1):
        raise fail(fam, name, "dataset", f"{where}: class_cond {int(label)} is not a class id in "
                   f"[0, {max(num_classes, 1)}) (num_classes {num_classes}; 0 when unconditional)")
    if not isinstance(aug, Tensor) or aug.dtype != torch.float32 or tuple(aug.shape) != (9,):
        raise fail(fam, name, "dataset", f"{where}: aug_cond is {getattr(aug, 'dtype', type(aug).__name__)} "
                   f"{tuple(getattr(aug, 'shape', ()))}; expected float32 (9,)")


def _check_conditions(fam: str, name: str, item: dict[str, Tensor], index: int, dim: int, cond_channels: int) -> None:
    """``mapping_cond (dim,)`` and ``cond_image (cond_channels, h, w)``, float32 and finite, present exactly
    when the dataset declares them."""
    for key, want, width in (("mapping_cond", 1, dim), ("cond_image", 3, cond_channels)):
        value = item.get(key)
        if not width:
            if value is not None:
                raise fail(fam, name, "dataset", f"item {index} has a {key} but the dataset declares none (0)")
            continue
        if (not isinstance(value, Tensor) or value.dtype != torch.float32 or value.ndim != want
                or value.shape[0] != width or not bool(torch.isfinite(value).all())):
            got = None if value is None else f"{getattr(value, 'dtype', type(value).__name__)} {tuple(value.shape)}"
            raise fail(fam, name, "dataset", f"item {index}: {key} is {got}; expected finite float32 with "
                       f"{want} dim(s), the first {width}")


def check_dataset(registry: Registry, spec: BaseModel, context: dict[str, Any], seed: int) -> list[str]:
    """Built at ``RESOLUTION`` px, split ``"train"``: non-empty; items follow the item contract; classes
    and channels (and ``mapping_cond_dim`` / ``cond_channels``, 0 when absent) equal the declared ``classes_of(spec)`` /
    ``channels_of(spec)`` / ``mapping_cond_dim_of(spec)`` / ``cond_channels_of(spec)``, and items carry ``mapping_cond``
    / ``cond_image`` exactly when declared; a key gives the same
    item twice; some pixel of the checked items is below 0 (images left in [0, 1] are the usual slip); pixels
    lie in the dataset's ``value_range`` (``[-1, 1]`` unless it declares another, or None: latents)."""
    fam, name = registry.family, spec.type  # type: ignore[attr-defined]
    cls = registry.get(name)
    ctx = {"resolution": RESOLUTION, "split": "train", **context}
    try:
        dataset = registry.build(spec, **ctx)
    except Exception as exc:
        raise fail(fam, name, "dataset", f"building it from {spec!r} with {ctx} raised {type(exc).__name__}: {exc}") from exc
    n = len(dataset)
    if n < 1:
        raise fail(fam, name, "dataset", "it has no items")
    num_classes, channels = getattr(dataset, "num_classes", None), getattr(dataset, "channels", None)
    for what, value in (("num_classes", num_classes), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if what == "num_classes" else 1):
            raise fail(fam, name, "dataset", f"its instances must expose {what} (an int), got {value!r}")
    dim, cond_channels = getattr(dataset, "mapping_cond_dim", 0), getattr(dataset, "cond_channels", 0)
    for what, declared, built in (("classes_of", cls.classes_of(spec), num_classes),
                                  ("channels_of", cls.channels_of(spec), channels),
                                  ("mapping_cond_dim_of", cls.mapping_cond_dim_of(spec), dim),
                                  ("cond_channels_of", cls.cond_channels_of(spec), cond_channels)):
        if declared is not None and declared != built:
            raise fail(fam, name, "dataset", f"{what}(spec) declares {declared} but the built dataset has {built}; "
                       "recipe validation compares the declaration with the model")
    names = getattr(dataset, "class_names", None)
    if names is not None and len(names) != num_classes:
        raise fail(fam, name, "dataset", f"it has {len(names)} class_names for {num_classes} classes")
    resolution = getattr(dataset, "resolution", None)
    if resolution is not None and tuple(resolution) != (RESOLUTION, RESOLUTION):
        raise fail(fam, name, "dataset", f"built at resolution {RESOLUTION} its resolution is {resolution!r}")
    darkest = 1.0
    for index in sorted({0, n // 2, n - 1}):
        key = (index, seed + index)
        item = _item(dataset, key)
        _check_item(fam, name, item, index, channels, num_classes, getattr(cls, "value_range", (-1.0, 1.0)))
        _check_conditions(fam, name, item, index, dim, cond_channels)
        darkest = min(darkest, item["image"].min().item())
        again = _item(dataset, key)
        if not all(torch.equal(item[k], again[k]) for k in item):
            raise fail(fam, name, "dataset", f"the key {key if getattr(dataset, 'uses_draw_keys', False) else index} "
                       "gave two different items; every random choice must come from the key's draw seed")
    if darkest >= 0:
        raise fail(fam, name, "dataset", f"no pixel of items 0, {n // 2} and {n - 1} is below 0: the images look scaled "
                   "to [0, 1]; map them to [-1, 1] (2 x - 1)")
    return ["dataset"]
