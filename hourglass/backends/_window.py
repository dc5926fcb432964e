"""Shifted-window attention (the authors' Swin variant in k-diffusion's HDiT code), ``torch`` backend.

``q``, ``k``, ``v`` are rolled by ``(+shift, +shift)`` over ``(H, W)``, cut into ``s x s``
windows and attended within each window, then un-cut and rolled back by ``-shift``. In the
first window row a query and a key attend only if both or neither lie in the window's first
``shift`` rows; likewise in the first window column with the first ``shift`` columns (the
top-left window applies both rules). These are the tokens that the roll wrapped around.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor

from hourglass.backends import _kernels  # noqa: F401 - registers the kernels these backends implement
from hourglass.backends._registry import register_backend

__all__ = ["shifted_window_torch", "window_token_flags"]

_lock = threading.Lock()
_masks: dict[tuple, Tensor] = {}


def window_token_flags(
    n_h: int, n_w: int, window: int, shift: int, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Per-token flags in the rolled grid, ``(H, W)`` bool each.

    ``top[i, j]``: the token is in the first window row and in the first ``shift`` rows of its
    window; ``left[i, j]``: first window column and first ``shift`` columns. Two tokens of the
    same window may attend iff their ``top`` flags and their ``left`` flags are equal. The flags
    live on ``device`` (default: the CPU).
    """
    rows = torch.arange(n_h, device=device)
    cols = torch.arange(n_w, device=device)
    top_r = (rows < window) & (rows % window < shift)
    left_c = (cols < window) & (cols % window < shift)
    return top_r[:, None].expand(n_h, n_w), left_c[None, :].expand(n_h, n_w)


def _build_window_mask(n_h: int, n_w: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Bool ``(windows, s*s, s*s)``: ``True`` where a query may attend a key (tensor ops only)."""
    top, left = window_token_flags(n_h, n_w, window, shift, device)
    nwh, nww = n_h // window, n_w // window

    def cut(flag: Tensor) -> Tensor:
        return flag.reshape(nwh, window, nww, window).permute(0, 2, 1, 3).reshape(nwh * nww, window * window)

    t, lf = cut(top), cut(left)
    return (t[:, :, None] == t[:, None, :]) & (lf[:, :, None] == lf[:, None, :])


def _window_mask(n_h: int, n_w: int, window: int, shift: int, device: torch.device) -> Tensor:
    """:func:`_build_window_mask`, cached; under ``torch.compile`` and ``torch.export`` it is
    traced into the graph instead (the cache and its lock are Python state Dynamo cannot trace;
    inductor folds the constant computation; a mask made while export traces is not a real tensor)."""
    if torch.compiler.is_compiling():
        return _build_window_mask(n_h, n_w, window, shift, device)
    key = (n_h, n_w, window, shift, device)
    mask = _masks.get(key)
    if mask is None:
        mask = _build_window_mask(n_h, n_w, window, shift, device)
        with _lock:
            if len(_masks) > 64:
                _masks.clear()
            _masks[key] = mask
    return mask


def shifted_window_torch(q: Tensor, k: Tensor, v: Tensor, window: int, shift: int, scale: float) -> Tensor:
    """Shifted-window attention via SDPA with a cached per-geometry mask.

    Args:
        q, k, v: ``(B, H, W, heads, D)``, ``window`` divides ``H`` and ``W``.
        window: window side ``s``.
        shift: roll ``0 <= shift < s`` (0: plain non-overlapping windows, no mask).
        scale: multiplier of ``q . k``.

    Returns:
        ``(B, H, W, heads, D)``.
    """
    b, n_h, n_w, heads, d = q.shape
    s = window
    nwh, nww = n_h // s, n_w // s

    def cut(x: Tensor) -> Tensor:
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x.reshape(b, nwh, s, nww, s, heads, d).permute(0, 5, 1, 3, 2, 4, 6)
        return x.reshape(b, heads, nwh * nww, s * s, d)

    mask = _window_mask(n_h, n_w, s, shift, q.device) if shift else None
    if torch.compiler.is_exporting():
        # ONNX's attention takes 4-d inputs: fold the heads into the batch while exporting only
        # (eagerly, unmasked 4-d SDPA may take another CPU kernel and round differently)
        o = F.scaled_dot_product_attention(*(cut(x).flatten(0, 1) for x in (q, k, v)), attn_mask=mask, scale=scale)
    else:
        o = F.scaled_dot_product_attention(cut(q), cut(k), cut(v), attn_mask=mask, scale=scale)
    o = o.reshape(b, heads, nwh, nww, s, s, d).permute(0, 2, 4, 3, 5, 1, 6).reshape(b, n_h, n_w, heads, d)
    if shift:
        o = torch.roll(o, shifts=(-shift, -shift), dims=(1, 2))
    return o


register_backend("shifted_window", "torch", shifted_window_torch, auto={"cuda": 1, "*": 0})
