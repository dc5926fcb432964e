"""Multiply-accumulate counting, the unit the HDiT paper (like DiT) reports as "GFLOP".

HDiT (Crowson et al. 2024, arXiv 2401.11605): Table 1 (GFLOP at 128, 256 and 512 px) and Table 7
(GFLOP/forward).

The model is rebuilt on the meta device from its spec, so counting needs no memory for
weights and no compute. Linear layers count ``tokens x in x out``; attention counts
``q k^T`` and ``a v`` as the paper does (neighborhood: ``tokens x k^2 x 2 x width``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from hourglass.nn.attention import AttentionKind, counting_macs

__all__ = ["count_macs", "count_gmacs", "macs_by_module"]


def _meta_model(model_or_spec: nn.Module | BaseModel | str | dict) -> nn.Module:
    from hourglass.models.factory import model_spec
    from hourglass.registry import MODEL

    spec = model_or_spec.spec if isinstance(model_or_spec, nn.Module) else model_spec(model_or_spec)
    with torch.device("meta"):
        return MODEL.build(spec)


def macs_by_module(
    model_or_spec: nn.Module | BaseModel | str | dict, input_shape: tuple[int, ...] | None = None
) -> dict[str, int]:
    """MACs of one forward per module name (Linear, Conv and attention token mixing).

    Args:
        model_or_spec: a built model (its ``spec`` is used), a spec, a preset name or a dict.
        input_shape: ``(B, C, H, W)``; default ``(1, in_channels, *input_size)`` from the spec.
    """
    model = _meta_model(model_or_spec)
    spec: Any = model.spec
    if input_shape is None:
        size = spec.input_size
        h, w = (size, size) if isinstance(size, int) else size
        input_shape = (1, spec.in_channels, h, w)
    counts: dict[str, int] = defaultdict(int)
    hooks = []

    def linear_hook(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            counts[name] += out.numel() // module.out_features * module.in_features * module.out_features
        return hook

    def conv_hook(name: str):
        def hook(module: nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            counts[name] += out.numel() * k
        return hook

    def attention_hook(name: str):
        def hook(module: Any, args: tuple, out: torch.Tensor) -> None:
            x = args[0]
            counts[name + ".mixing"] += module.attention_macs(x.shape[0], x.shape[1], x.shape[2])
        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook(name)))
        elif isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook(name)))
        if isinstance(module, AttentionKind):
            hooks.append(module.register_forward_hook(attention_hook(name)))
    b = input_shape[0]
    x = torch.empty(input_shape, device="meta")
    kwargs: dict[str, Any] = {}
    if spec.num_classes:
        kwargs["class_cond"] = torch.zeros(b, dtype=torch.long, device="meta")
    if spec.mapping_cond_dim:
        kwargs["mapping_cond"] = torch.zeros(b, spec.mapping_cond_dim, device="meta")
    try:
        with torch.no_grad(), counting_macs():
            model(x, torch.ones(b, device="meta"), **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return dict(counts)


def count_macs(model_or_spec: nn.Module | BaseModel | str | dict, input_shape: tuple[int, ...] | None = None) -> int:
    """Total multiply-accumulates of one forward pass at ``input_shape`` ``(B, C, H, W)``."""
    return sum(macs_by_module(model_or_spec, input_shape).values())


def count_gmacs(model_or_spec: nn.Module | BaseModel | str | dict, input_shape: tuple[int, ...] | None = None) -> float:
    """:func:`count_macs` in units of 1e9 (the paper's "GFLOPs")."""
    return count_macs(model_or_spec, input_shape) / 1e9
