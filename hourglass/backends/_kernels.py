"""The built-in kernels and their public functions: ``neighborhood``, ``shifted_window``, ``global``.

Each public function validates its arguments once (the kernel's ``check``), resolves a backend
and calls it; all take ``q``, ``k``, ``v`` of shape ``(B, H, W, heads, D)`` (channels-last token
grid, NATTEN's layout) and return ``(B, H, W, heads, D)``; ``scale`` multiplies ``q . k`` (HDiT's
cosine-similarity attention passes 1.0, DiT passes ``D ** -0.5``).
"""

from __future__ import annotations

from torch import Tensor

from hourglass.backends._registry import call_kernel, register_kernel

__all__ = ["neighborhood_attention", "shifted_window_attention", "global_attention"]


def _check_int(fn: str, name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{fn}: {name} must be an integer >= {least}, got {value!r}")


def _check_neighborhood(q: Tensor, kernel_size: int, dilation: int) -> None:
    fn = "neighborhood_attention"
    _check_int(fn, "kernel_size", kernel_size, 2)
    _check_int(fn, "dilation", dilation, 1)
    n_h, n_w = q.shape[1], q.shape[2]
    if kernel_size * dilation > min(n_h, n_w):
        raise ValueError(
            f"{fn}: kernel_size * dilation = {kernel_size} * {dilation} = {kernel_size * dilation} exceeds the "
            f"{n_h} x {n_w} token grid; every query must see kernel_size^2 keys in its sub-grid, so use a smaller "
            f"kernel_size or dilation at this level (or global attention for grids this small)"
        )


def _check_shifted_window(q: Tensor, window_size: int, shift: int) -> None:
    fn = "shifted_window_attention"
    _check_int(fn, "window_size", window_size, 1)
    n_h, n_w = q.shape[1], q.shape[2]
    if n_h % window_size or n_w % window_size:
        raise ValueError(
            f"{fn}: window_size {window_size} must divide the {n_h} x {n_w} token grid; pick a divisor of both "
            f"sides or change the image size / patch size"
        )
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift < window_size:
        raise ValueError(f"{fn}: shift must be an integer in [0, window_size={window_size}), got {shift!r}")


register_kernel(
    "neighborhood", check=_check_neighborhood,
    doc="each query attends to the k x k window around it, clamped inside the grid (NATTEN semantics); "
    "args: kernel_size, dilation",
)
register_kernel(
    "shifted_window", check=_check_shifted_window,
    doc="Swin-style s x s windows, rolled by shift (the authors' HDiT variant); args: window_size, shift",
)
register_kernel("global", doc="every query attends to every key; no extra args")


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
    return call_kernel("neighborhood", q, k, v, kernel_size, dilation, scale=scale, backend=backend)


def shifted_window_attention(
    q: Tensor, k: Tensor, v: Tensor, window_size: int, shift: int, scale: float = 1.0, backend: str | None = None
) -> Tensor:
    """Shifted-window attention as in the authors' HDiT code (k-diffusion ``image_transformer_v2``).

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
    return call_kernel("shifted_window", q, k, v, window_size, shift, scale=scale, backend=backend)


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
    return call_kernel("global", q, k, v, scale=scale, backend=backend)
