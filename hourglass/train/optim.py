"""AdamW with HDiT's parameter groups and learning-rate schedules.

HDiT (Crowson et al. 2024, arXiv 2401.11605) trains with AdamW at a constant learning rate 5e-4,
betas (0.9, 0.95), eps 1e-8 and weight decay 1e-2 (Sec. 5.1 and Table 7); the parameter groups follow
the authors' k-diffusion (``image_transformer_v2.param_groups``).

The learning rate is a pure function of the step (``base_lr * lr_factor(step)``), set on every
group before each optimizer step, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["LR_SCHEDULES", "lr_factor", "create_optimizer", "set_lr"]

LR_SCHEDULES = ("constant", "linear_warmup", "cosine")


def lr_factor(step: int, schedule: str = "constant", warmup_steps: int = 0, total_steps: int | None = None) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Args:
        step: the step about to be taken.
        schedule: ``"constant"`` (1 after the optional warm-up), ``"linear_warmup"`` (linear from
            ``1/warmup_steps`` to 1 over ``warmup_steps`` steps, then 1) or ``"cosine"`` (the
            warm-up, then a half cosine down to 0 at ``total_steps``).
        warmup_steps: length of the linear warm-up (0 = none).
        total_steps: run length, needed by ``"cosine"``.

    Returns:
        The factor in ``(0, 1]`` (cosine ends at 0).

    Raises:
        ValueError: for an unknown schedule or a cosine schedule without ``total_steps``.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "linear_warmup" or schedule == "constant":
        return warm
    if total_steps is None or total_steps <= warmup_steps:
        raise ValueError(
            f"the cosine schedule needs total_steps > warmup_steps, got total_steps={total_steps}, "
            f"warmup_steps={warmup_steps}; set train.steps"
        )
    if step < warmup_steps:
        return warm
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def create_optimizer(
    model: nn.Module,
    lr: float = 5e-4,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    mapping_lr_scale: float = 1 / 3,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over the model's ``param_groups`` (decay only Linear weights; mapping at lr/3).

    Each group remembers its base learning rate as ``initial_lr`` for :func:`set_lr`. Models
    without a ``param_groups`` method get one group with weight decay on every matrix.

    Args:
        model: the raw model (not a DDP/compiled wrapper).
        lr: base learning rate.
        betas: Adam betas.
        eps: Adam epsilon.
        weight_decay: decoupled weight decay of the decayed groups.
        mapping_lr_scale: learning-rate factor of the mapping network and adaptive norms.
        fused: use the fused CUDA kernel (None: only when every parameter is on CUDA).

    Returns:
        The optimizer.
    """
    from hourglass.models.base import Backbone

    if isinstance(model, Backbone):
        groups = model.param_groups(lr=lr, weight_decay=weight_decay, mapping_lr_scale=mapping_lr_scale)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"name": "wd", "params": [p for p in params if p.ndim >= 2], "lr": lr, "weight_decay": weight_decay},
            {"name": "no_wd", "params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
    for group in groups:
        group["initial_lr"] = group["lr"]
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    kwargs: dict[str, Any] = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's learning rate to ``initial_lr * factor``.

    Returns:
        The largest group learning rate (that of the full-rate groups), for logging.
    """
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return max(group["lr"] for group in optimizer.param_groups)
