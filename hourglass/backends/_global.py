"""Global (full) attention backends: ``torch`` reference, ``sdpa`` and ``xformers``.

All take and return ``(B, H, W, heads, D)``; every query attends to all ``H * W`` keys.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import Tensor

from hourglass.backends import _kernels  # noqa: F401 - registers the kernels these backends implement
from hourglass.backends._registry import register_backend

__all__ = ["global_torch", "global_sdpa", "global_xformers"]


def _heads_first(x: Tensor) -> Tensor:
    """``(B, H, W, h, D) -> (B, h, H*W, D)`` (a view)."""
    b, n_h, n_w, heads, d = x.shape
    return x.reshape(b, n_h * n_w, heads, d).transpose(1, 2)


def _back(o: Tensor, shape: torch.Size) -> Tensor:
    """``(B, h, H*W, D) -> (B, H, W, h, D)``."""
    b, n_h, n_w, heads, d = shape
    return o.transpose(1, 2).reshape(b, n_h, n_w, heads, d)


def global_torch(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Reference: ``softmax(q k^T * scale) v`` written out; ``(B, H, W, h, D)`` in and out."""
    qh, kh, vh = _heads_first(q), _heads_first(k), _heads_first(v)
    attn = torch.matmul(qh, kh.transpose(-1, -2)).mul(scale).softmax(-1)
    return _back(torch.matmul(attn, vh), q.shape)


def global_sdpa(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where available)."""
    o = F.scaled_dot_product_attention(_heads_first(q), _heads_first(k), _heads_first(v), scale=scale)
    return _back(o, q.shape)


def global_xformers(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``xformers.ops.memory_efficient_attention``; its layout ``(B, N, h, D)`` is a view of ours."""
    xops = importlib.import_module("xformers.ops")
    b, n_h, n_w, heads, d = q.shape

    def seq(x: Tensor) -> Tensor:
        return x.reshape(b, n_h * n_w, heads, d)

    o = xops.memory_efficient_attention(seq(q), seq(k), seq(v), scale=scale)
    return o.reshape(b, n_h, n_w, heads, d)


def _probe_sdpa(device_type: str, dtype: torch.dtype, requires_grad: bool) -> str | None:
    if not hasattr(F, "scaled_dot_product_attention"):
        return f"torch {torch.__version__} has no F.scaled_dot_product_attention (needs torch >= 2.1)"
    return None


def _probe_xformers(device_type: str, dtype: torch.dtype, requires_grad: bool) -> str | None:
    if device_type != "cuda":
        return f"xformers has no {device_type} operator (CUDA only)"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    try:
        xops = importlib.import_module("xformers.ops")
    except Exception as exc:  # ImportError, or a broken build raising anything at import
        return f"xformers is not importable ({type(exc).__name__}: {exc}); install it with `pip install xformers`"
    x = torch.randn(1, 16, 1, 32, device="cuda", dtype=dtype, requires_grad=requires_grad)
    out = xops.memory_efficient_attention(x, x, x, scale=1.0)
    if requires_grad:
        out.sum().backward()
    return None


register_backend("global", "torch", global_torch, auto={"cuda": 2, "*": 1})
register_backend("global", "sdpa", global_sdpa, probe=_probe_sdpa, auto={"cuda": 0, "*": 0})
register_backend("global", "xformers", global_xformers, probe=_probe_xformers, auto={"cuda": 1})
