"""Conditions beyond the class for :class:`~hourglass.pipeline.Pipeline` calls: ``mapping_cond`` vectors and
condition images, checked against the model (private to the pipeline)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from hourglass.pipeline._errors import PipelineError

__all__ = ["call_conditions", "conditioning_of", "vector_width"]


def conditioning_of(recipe: Any) -> Any:
    """The recipe's ``[conditioning]`` section (None without a recipe or the section)."""
    return getattr(recipe, "conditioning", None)


def vector_width(model: Any, recipe: Any) -> int:
    """Width ``D`` of the data's ``mapping_cond`` vectors: the model's ``mapping_cond_dim`` less what
    ``[conditioning]`` adds (the condition's noise level)."""
    spec = conditioning_of(recipe)
    return int(model.spec.mapping_cond_dim) - (spec.mapping_extra if spec is not None else 0)


def _tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise PipelineError(f"{name} must be a tensor or numpy array, got {type(value).__name__}")
    return value.float()


def call_conditions(model: Any, recipe: Any, n: int, mapping_cond: Any, cond_image: Any) -> dict[str, Tensor] | None:
    """Per-image conditions of a call drawing ``n`` images, cycled like classes.

    Args:
        mapping_cond: ``(D,)`` (one vector for every image) or ``(k, D)`` (cycled), or None.
        cond_image: ``(C', h, w)`` or ``(k, C', h, w)`` condition images in [-1, 1] (cycled), or None.

    Returns:
        ``{"mapping_cond": (n, D), "cond_image": (n, C', h, w)}`` (the given ones), or None.

    Raises:
        PipelineError: a condition the model does not take, one it needs but lacks, or a wrong shape.
    """
    width = vector_width(model, recipe)
    spec = conditioning_of(recipe)
    channels = spec.image_channels if spec is not None else 0
    out: dict[str, Tensor] = {}
    for name, value, size, ndim, what in (
        ("mapping_cond", mapping_cond, width, 1, "vectors"),
        ("cond_image", cond_image, channels, 3, "condition images"),
    ):
        if value is None:
            if size:
                raise PipelineError(f"this model takes {what} ({name} of {size}); pass {name}=...")
            continue
        if not size:
            raise PipelineError(f"this model takes no {what}; drop {name}")
        value = _tensor(value, name)
        value = value[None] if value.ndim == ndim else value
        if value.ndim != ndim + 1 or value.shape[1] != size or len(value) == 0:
            raise PipelineError(
                f"{name} must be ({size}{', h, w' if ndim == 3 else ''}) or (k, {size}"
                f"{', h, w' if ndim == 3 else ''}), got {tuple(value.shape)}"
            )
        out[name] = value[torch.arange(n) % len(value)]
    return out or None
