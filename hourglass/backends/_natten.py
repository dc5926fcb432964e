"""``natten`` neighborhood backend (NATTEN >= 0.20: ``natten.na2d``), imported lazily.

On CPU NATTEN 0.21 has only its flex-based forward (backward raises); on CUDA it trains.
"""

from __future__ import annotations

import importlib
import warnings

import torch
from torch import Tensor

from hourglass.backends import _kernels  # noqa: F401 - registers the kernels these backends implement
from hourglass.backends._registry import register_backend

__all__ = ["neighborhood_natten", "natten_input_problem"]


def neighborhood_natten(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int, scale: float) -> Tensor:
    """``natten.na2d`` on ``(B, H, W, heads, D)`` (NATTEN's own layout)."""
    natten = importlib.import_module("natten")
    return natten.na2d(q, k, v, kernel_size=kernel_size, dilation=dilation, scale=scale)


def natten_input_problem(q: Tensor, kernel_size: int, dilation: int) -> str | None:
    """Why NATTEN cannot take these inputs (``None`` if it can); checked before dispatch."""
    if q.shape[-1] % 8:
        return f"natten needs a head dim divisible by 8, got {q.shape[-1]}"
    return None


def _probe(device_type: str, dtype: torch.dtype, requires_grad: bool) -> str | None:
    try:
        natten = importlib.import_module("natten")
    except Exception as exc:
        return (
            f"natten is not importable ({type(exc).__name__}: {exc}); install it after torch with "
            "`pip install --no-build-isolation natten==0.21.7`"
        )
    if not hasattr(natten, "na2d"):
        return f"natten {getattr(natten, '__version__', '?')} has no na2d (needs natten >= 0.20)"
    if device_type not in ("cpu", "cuda"):
        return f"natten does not run on {device_type}"
    if device_type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    # Empirical: a tiny call tells what this install can do on this device (e.g. no CPU backward).
    x = torch.randn(1, 8, 8, 1, 16, device=device_type, dtype=dtype, requires_grad=requires_grad)
    try:
        with warnings.catch_warnings():  # the probe's own call: its performance hints are noise
            warnings.simplefilter("ignore")
            out = natten.na2d(x, x, x, kernel_size=3, scale=1.0)
            if requires_grad:
                out.sum().backward()
    except Exception as exc:
        what = "backward" if requires_grad else "forward"
        return f"natten {what} failed on {device_type} with {dtype} ({type(exc).__name__}: {str(exc)[:200]})"
    return None


def _auto_veto(device_type: str, dtype: torch.dtype, requires_grad: bool) -> str | None:
    natten = importlib.import_module("natten")
    if device_type == "cuda" and not getattr(natten, "HAS_LIBNATTEN", True):
        return (
            "natten has no compiled kernels here (HAS_LIBNATTEN=False); its fallback is uncompiled flex, "
            "which materialises N x N scores, so auto prefers flex"
        )
    return None


register_backend(
    "neighborhood", "natten", neighborhood_natten, probe=_probe, input_problem=natten_input_problem,
    auto={"cuda": 0}, auto_veto=_auto_veto,
)
