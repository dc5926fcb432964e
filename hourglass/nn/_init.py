"""Parameter initialisation and optimiser tags shared by the leaf components.

HDiT (Crowson et al. 2024, arXiv 2401.11605) zero-initialises the output projections of its attention and
FFN blocks (Sec. 4.2) and the adaptive-norm projections (App. E.3).
"""

from __future__ import annotations

from torch import nn

__all__ = ["zero_init", "tag_lr_group", "lr_group_of"]


def zero_init(layer: nn.Module) -> nn.Module:
    """Zero a layer's weight (and bias) in place and return it (HDiT paper, Sec. 4.2: output projections)."""
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def tag_lr_group(module: nn.Module, group: str) -> nn.Module:
    """Mark every parameter of ``module`` as belonging to optimiser group ``group``.

    HDiT's code (k-diffusion's ``image_transformer_v2.param_groups``) trains the mapping network and every
    AdaRMSNorm projection at lr/3;
    ``group="mapping"`` marks them for :func:`hourglass.nn.param_groups`.
    """
    module._hg_lr_group = group  # type: ignore[attr-defined]
    return module


def lr_group_of(module: nn.Module) -> str | None:
    """The optimiser group tag set by :func:`tag_lr_group`, if any."""
    return getattr(module, "_hg_lr_group", None)
