"""Optimiser parameter groups shared by every model.

As in the authors' HDiT code (k-diffusion's ``image_transformer_v2.param_groups``; HDiT, Crowson et al.
2024, arXiv 2401.11605, Table 7 gives the base lr 5e-4 and weight decay 1e-2).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hourglass.nn._init import lr_group_of

__all__ = ["param_groups"]


def param_groups(
    model: nn.Module, lr: float, weight_decay: float = 1e-2, mapping_lr_scale: float = 1 / 3
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay only on Linear weights; lr x ``mapping_lr_scale`` for parameters
    under a module tagged ``"mapping"`` (the mapping network and every adaptive-norm projection).

    Returns:
        Up to four non-empty groups, each with ``params``, ``lr``, ``weight_decay`` and ``name``.
    """
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    mapping: set[int] = set()
    for module in model.modules():
        if lr_group_of(module) == "mapping":
            mapping.update(id(p) for p in module.parameters())
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in mapping, id(p) in linear_weights), []).append(p)
    out = []
    for (is_mapping, decays), params in sorted(groups.items()):
        out.append({
            "name": f"{'mapping' if is_mapping else 'main'}_{'wd' if decays else 'no_wd'}",
            "params": params,
            "lr": lr * (mapping_lr_scale if is_mapping else 1.0),
            "weight_decay": weight_decay if decays else 0.0,
        })
    return out
