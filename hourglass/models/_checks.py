"""Shape rules and input checks shared by the models (clear errors, no asserts)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["grid_problems", "check_model_inputs"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def grid_problems(levels: list[Any], input_size: Any, patch_size: Any) -> list[str]:
    """Every violated shape rule of a level stack, each with the spec path and a fix."""
    problems = []
    (h, w), (ph, pw) = _pair(input_size), _pair(patch_size)
    if min(h, w, ph, pw) < 1:
        return [f"input_size {input_size} and patch_size {patch_size} must be positive"]
    stride_h, stride_w = ph * 2 ** (len(levels) - 1), pw * 2 ** (len(levels) - 1)
    if h % stride_h or w % stride_w:
        problems.append(
            f"input_size: {h}x{w} is not divisible by patch_size x 2^(levels-1) = {stride_h}x{stride_w}; "
            f"use a multiple of {stride_h}x{stride_w} (e.g. {max(stride_h, h // stride_h * stride_h)}) "
            "or use fewer levels / a smaller patch"
        )
        return problems
    gh, gw = h // ph, w // pw
    for i, level in enumerate(levels):
        attention = level.attention
        kind = getattr(attention, "type", None)
        if kind == "neighborhood":
            span = attention.kernel_size * attention.dilation
            if span > min(gh, gw):
                problems.append(
                    f"levels[{i}].attention.kernel_size: {attention.kernel_size} (x dilation "
                    f"{attention.dilation}) does not fit the {gh}x{gw} token grid of level {i}; "
                    f"use kernel_size <= {min(gh, gw) // attention.dilation} or global attention"
                )
        elif kind == "shifted_window":
            s = attention.window_size
            if gh % s or gw % s:
                problems.append(
                    f"levels[{i}].attention.window_size: {s} does not divide the {gh}x{gw} token grid of "
                    f"level {i}; use a divisor of {gh} and {gw}"
                )
        gh, gw = gh // 2, gw // 2
    return problems


def check_model_inputs(
    spec: Any,
    x: Tensor,
    sigma: Tensor | float,
    class_cond: Tensor | None,
    aug_cond: Tensor | None,
    mapping_cond: Tensor | None,
    stride: tuple[int, int] | None = None,
) -> Tensor:
    """Validate a backbone call and return ``sigma`` as a ``(B,)`` tensor.

    Raises:
        ValueError / TypeError: naming the argument, what was given and what is expected.
    """
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    b, c, h, w = x.shape
    if c != spec.in_channels:
        raise ValueError(f"x has {c} channels but the model takes in_channels={spec.in_channels}")
    sh, sw = stride or spec.stride
    if h % sh or w % sw:
        raise ValueError(
            f"x is {h}x{w} but this model needs sizes divisible by {sh}x{sw} (patch x 2^(levels-1)); "
            "resize or pad the image"
        )
    sigma = torch.as_tensor(sigma, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(b)
    if sigma.shape != (b,):
        raise ValueError(f"sigma must be a scalar or have shape ({b},), got {tuple(sigma.shape)}")
    if not sigma.is_floating_point():
        sigma = sigma.float()
    if sigma.device != x.device:
        raise ValueError(f"sigma is on {sigma.device} but x is on {x.device}; move them to one device")
    checking_values = x.device.type != "meta" and not torch.compiler.is_compiling()
    if checking_values and not bool(torch.all(torch.isfinite(sigma) & (sigma > 0))):
        raise ValueError(f"sigma must be finite and > 0, got {sigma.tolist()}")
    if spec.num_classes:
        if class_cond is None:
            raise ValueError(
                f"this model is class-conditional ({spec.num_classes} classes): pass class_cond (B,) "
                f"with ids in [0, {spec.num_classes}] ({spec.num_classes} = no class)"
            )
        if class_cond.shape != (b,) or class_cond.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"class_cond must be an int64 tensor of shape ({b},), got {class_cond.dtype} {tuple(class_cond.shape)}"
            )
        if checking_values and not bool(((class_cond >= 0) & (class_cond <= spec.num_classes)).all()):
            raise ValueError(
                f"class_cond ids must be in [0, {spec.num_classes}] ({spec.num_classes} = no class), "
                f"got {class_cond.tolist()}"
            )
    elif class_cond is not None:
        raise ValueError("class_cond was given but the model is unconditional (num_classes = 0)")
    if aug_cond is not None and tuple(aug_cond.shape) != (b, 9):
        raise ValueError(f"aug_cond must have shape ({b}, 9), got {tuple(aug_cond.shape)}")
    dim = spec.mapping_cond_dim
    if dim and (mapping_cond is None or tuple(mapping_cond.shape) != (b, dim)):
        got = None if mapping_cond is None else tuple(mapping_cond.shape)
        raise ValueError(f"mapping_cond must have shape ({b}, {dim}), got {got}")
    if not dim and mapping_cond is not None:
        raise ValueError("mapping_cond was given but the model has mapping_cond_dim = 0")
    return sigma
