"""Recipe rules for conditioning beyond class labels: ``mapping_cond`` vectors and ``[conditioning]`` images.

* The model's ``mapping_cond_dim`` is the data's vector width (:meth:`mapping_cond_dim_of` of the
  dataset) plus the entries ``[conditioning]`` adds (the condition's noise level).
* With ``conditioning.image_channels``, the data yields condition images of that many channels
  (:meth:`cond_channels_of`), the model takes ``in_channels = data channels + image_channels``
  (checked by the channel rule of :mod:`hourglass.recipe.schema` on ``in_channels - image_channels``),
  and Karras augmentation, which would move the image but not its condition, is off.
"""

from __future__ import annotations

from typing import Any

from hourglass.registry import DATASET
from hourglass.spec import Problem

__all__ = ["cond_image_channels", "conditioning_problems", "mapping_cond_problems"]


def cond_image_channels(conditioning: Any) -> int:
    """Input channels the condition image takes (0 without ``[conditioning]``)."""
    return conditioning.image_channels if conditioning is not None else 0


def mapping_cond_problems(model_dim: int, data_dim: int, extra: int, dataset: str) -> list[Problem]:
    """The rule between ``model.mapping_cond_dim`` and the data's vectors (plus ``extra`` entries of
    ``[conditioning]``), at path ``model.mapping_cond_dim``."""
    want = data_dim + extra
    if model_dim == want:
        return []
    parts = [f"the {data_dim}-wide mapping_cond vectors of data.dataset ({dataset})"] if data_dim else []
    parts += ["1 entry for the condition's noise level ([conditioning])"] if extra else []
    needs = " plus ".join(parts) or f"no mapping_cond (data.dataset ({dataset}) has no vectors)"
    return [
        Problem(
            "model.mapping_cond_dim",
            f"{model_dim} does not fit {needs}",
            f"set model.mapping_cond_dim = {want}",
            model_dim,
        )
    ]


def conditioning_problems(model: Any, data: Any, conditioning: Any, eval: Any = None) -> list[Problem]:  # noqa: A002
    """Cross-section rules of conditioning (sections given as None are skipped), with absolute paths."""
    problems: list[Problem] = []
    image_channels = cond_image_channels(conditioning)
    extra = conditioning.mapping_extra if conditioning is not None else 0
    if data is not None:
        dataset = DATASET.get(data.dataset.type)
        if model is not None:
            data_dim = dataset.mapping_cond_dim_of(data.dataset)
            if data_dim is not None:
                problems += mapping_cond_problems(model.mapping_cond_dim, data_dim or 0, extra, data.dataset.type)
        data_cond = dataset.cond_channels_of(data.dataset)
        if data_cond is not None and data_cond != image_channels:
            problems.append(cond_channel_problem(image_channels, data_cond, data.dataset.type))
        if image_channels and data.augment.p > 0:
            problems.append(
                Problem(
                    "data.augment.p",
                    f"{data.augment.p} would augment the image but not its condition image",
                    "set data.augment.p = 0 with [conditioning] image_channels",
                )
            )
    conditioned = image_channels or (model is not None and model.mapping_cond_dim > extra)
    if conditioned and eval is not None:
        problems.append(
            Problem(
                "eval",
                "evaluation during training does not pass condition images or mapping_cond vectors",
                "remove [eval]; sample with the conditions (Pipeline.sample(cond_image=..., mapping_cond=...)) and "
                "score the images with hourglass eval, or hourglass.evaluation.superres",
            )
        )
    return problems


def cond_channel_problem(image_channels: int, data_channels: int, dataset: str) -> Problem:
    """The rule between ``conditioning.image_channels`` and the data's condition images."""
    if not data_channels:
        return Problem(
            "conditioning.image_channels",
            f"{image_channels}, but data.dataset ({dataset}) has no cond_image",
            'set conditioning.image_channels = 0, or wrap the data (type = "superres" or "paired")',
            image_channels,
        )
    return Problem(
        "conditioning.image_channels",
        f"{image_channels} does not match the {data_channels}-channel cond_image of data.dataset ({dataset})",
        f"set conditioning.image_channels = {data_channels}",
        image_channels,
    )
