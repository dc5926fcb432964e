"""Attention kernels behind one signature per kind, and the runtime choice of backend.

Kinds (the maths, chosen by the recipe): ``neighborhood`` (NATTEN semantics), ``shifted_window``
(the authors' Swin variant) and ``global``. Backends (how it is computed, chosen at run time;
never part of the ``state_dict``): ``torch`` (the pure-PyTorch reference of each kind, forward
and backward on any device), ``natten``, ``flex``, ``sdpa`` and ``xformers``. Optional packages
(natten, xformers, flex_attention) are imported only here, lazily.

All functions take ``q``, ``k``, ``v`` of shape ``(B, H, W, heads, D)`` (channels-last token
grid, NATTEN's layout) and return ``(B, H, W, heads, D)``; ``scale`` multiplies ``q . k``
(the HDiT's cosine-similarity attention passes 1.0, DiT passes ``D ** -0.5``).

Backend resolution: the ``backend=`` argument > :func:`use_backends` > environment variable
``HOURGLASS_BACKEND_<KIND>`` (e.g. ``HOURGLASS_BACKEND_NEIGHBORHOOD=natten``) > ``auto``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hourglass.backends._flex import flex_input_problem, neighborhood_flex, shifted_window_flex
from hourglass.backends._global import global_sdpa, global_torch, global_xformers
from hourglass.backends._natten import natten_input_problem, neighborhood_natten
from hourglass.backends._resolve import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    clear_backend_cache,
    resolve_backend,
    select_backend,
    use_backends,
)
from hourglass.backends._torch_neighborhood import neighborhood_attention_torch
from hourglass.backends._window import shifted_window_torch

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "clear_backend_cache",
    "global_attention",
    "neighborhood_attention",
    "resolve_backend",
    "shifted_window_attention",
    "use_backends",
]

_NEIGHBORHOOD = {"torch": neighborhood_attention_torch, "natten": neighborhood_natten, "flex": neighborhood_flex}
_WINDOW = {"torch": shifted_window_torch, "flex": shifted_window_flex}
_GLOBAL = {"torch": global_torch, "sdpa": global_sdpa, "xformers": global_xformers}


def _check_qkv(fn: str, q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Validate ``q``, ``k``, ``v``; returns whether a backward pass will be needed."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 5:
            raise ValueError(
                f"{fn}: {name} must have shape (B, H, W, heads, D), got {tuple(t.shape)}; "
                "split channels into heads first, e.g. x.unflatten(-1, (heads, -1))"
            )
    if not q.shape == k.shape == v.shape:
        raise ValueError(
            f"{fn}: q, k and v must have the same shape (B, H, W, heads, D), got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"{fn}: q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}; cast them")
    if not q.device == k.device == v.device:
        raise ValueError(f"{fn}: q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    return torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)


def _detached(grad: bool, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Without a backward pass, hand kernels detached views: flex (and NATTEN on CPU) refuse
    inputs that require grad even under ``torch.no_grad()``."""
    return (q, k, v) if grad else (q.detach(), k.detach(), v.detach())


def _check_int(fn: str, name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{fn}: {name} must be an integer >= {least}, got {value!r}")


def neighborhood_attention(
    q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int = 1, scale: float = 1.0, backend: str | None = None
) -> Tensor:
    """Neighborhood attention with NATTEN semantics (``natten.na2d``).

    Each query attends to a ``k x k`` window of keys, shifted inside the grid at the borders so
    every query sees exactly ``k * k`` keys (for even ``k`` the window has ``k / 2`` keys before
    the query and ``k / 2 - 1`` after it). With dilation ``d`` the grid splits into ``d x d``
    interleaved sub-grids (rows with equal ``i mod d``, columns likewise) and the window is
    taken within the query's sub-grid.

    Args:
        q, k, v: ``(B, H, W, heads, D)``.
        kernel_size: window side ``k >= 2``; ``k * dilation`` must not exceed ``H`` or ``W``.
        dilation: ``d >= 1``.
        scale: multiplier of ``q . k`` before the softmax.
        backend: ``"torch"``, ``"natten"``, ``"flex"``, ``"auto"`` or ``None`` (context,
            environment, then auto).

    Returns:
        ``(B, H, W, heads, D)``.

    Raises:
        ValueError: bad shapes, or a window that does not fit the grid.
        BackendUnavailableError: the chosen backend cannot run these inputs here.
    """
    fn = "neighborhood_attention"
    grad = _check_qkv(fn, q, k, v)
    _check_int(fn, "kernel_size", kernel_size, 2)
    _check_int(fn, "dilation", dilation, 1)
    n_h, n_w = q.shape[1], q.shape[2]
    if kernel_size * dilation > min(n_h, n_w):
        raise ValueError(
            f"{fn}: kernel_size * dilation = {kernel_size} * {dilation} = {kernel_size * dilation} exceeds the "
            f"{n_h} x {n_w} token grid; every query must see kernel_size^2 keys in its sub-grid, so use a smaller "
            f"kernel_size or dilation at this level (or global attention for grids this small)"
        )

    def problem(name: str) -> str | None:
        if name == "natten":
            return natten_input_problem(q, kernel_size, dilation)
        if name == "flex":
            return flex_input_problem(q)
        return None

    name = select_backend("neighborhood", q.device, q.dtype, grad, backend, problem)
    return _NEIGHBORHOOD[name](*_detached(grad, q, k, v), kernel_size, dilation, float(scale))


def shifted_window_attention(
    q: Tensor, k: Tensor, v: Tensor, window_size: int, shift: int, scale: float = 1.0, backend: str | None = None
) -> Tensor:
    """Shifted-window attention as in the authors' HDiT code (k-diffusion's ``apply_window_attention``).

    ``q``, ``k``, ``v`` are rolled by ``(+shift, +shift)`` over ``(H, W)``, cut into ``s x s``
    windows and attended within each window, then un-cut and rolled back. In the first window
    row a query and a key attend only if both or neither lie in the window's first ``shift``
    rows; likewise in the first window column with the first ``shift`` columns.

    Args:
        q, k, v: ``(B, H, W, heads, D)``; ``window_size`` must divide ``H`` and ``W``.
        window_size: window side ``s >= 1``.
        shift: ``0 <= shift < s``; 0 gives plain non-overlapping windows (HDiT shifts by
            ``s // 2`` on odd layers).
        scale: multiplier of ``q . k`` before the softmax.
        backend: ``"torch"``, ``"flex"``, ``"auto"`` or ``None``.

    Returns:
        ``(B, H, W, heads, D)``.

    Raises:
        ValueError: bad shapes, a window that does not divide the grid, or a bad shift.
        BackendUnavailableError: the chosen backend cannot run these inputs here.
    """
    fn = "shifted_window_attention"
    grad = _check_qkv(fn, q, k, v)
    _check_int(fn, "window_size", window_size, 1)
    n_h, n_w = q.shape[1], q.shape[2]
    if n_h % window_size or n_w % window_size:
        raise ValueError(
            f"{fn}: window_size {window_size} must divide the {n_h} x {n_w} token grid; pick a divisor of both "
            f"sides or change the image size / patch size"
        )
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift < window_size:
        raise ValueError(f"{fn}: shift must be an integer in [0, window_size={window_size}), got {shift!r}")

    def problem(name: str) -> str | None:
        return flex_input_problem(q) if name == "flex" else None

    name = select_backend("shifted_window", q.device, q.dtype, grad, backend, problem)
    return _WINDOW[name](*_detached(grad, q, k, v), window_size, shift, float(scale))


def global_attention(q: Tensor, k: Tensor, v: Tensor, scale: float = 1.0, backend: str | None = None) -> Tensor:
    """Global attention: every token attends to all ``H * W`` tokens (quadratic cost).

    Args:
        q, k, v: ``(B, H, W, heads, D)``.
        scale: multiplier of ``q . k`` before the softmax.
        backend: ``"torch"``, ``"sdpa"``, ``"xformers"``, ``"auto"`` or ``None``.

    Returns:
        ``(B, H, W, heads, D)``.

    Raises:
        ValueError: bad shapes.
        BackendUnavailableError: the chosen backend cannot run these inputs here.
    """
    grad = _check_qkv("global_attention", q, k, v)
    name = select_backend("global", q.device, q.dtype, grad, backend)
    return _GLOBAL[name](*_detached(grad, q, k, v), float(scale))
