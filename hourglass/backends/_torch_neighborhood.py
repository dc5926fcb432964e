"""Pure-PyTorch neighborhood attention (NATTEN semantics), linear in the number of tokens.

The grid of queries is cut into ``th x tw`` tiles. Every tile attends to one ``Lh x Lw`` halo of
keys that contains the clamped ``k x k`` window of each of its queries; a cached additive mask
(0 or -inf) removes the halo keys outside each query's own window. Halos are strided views
(``unfold``) of a zero-padded key grid, so their start is regular; the padding is chosen such
that the clamped windows at the borders still fall inside the halo of their tile. Work and
memory are ``O(tokens * Lh * Lw)``: no ``N x N`` score matrix or mask is ever formed.

Dilation ``d`` splits the grid into ``d x d`` interleaved sub-grids (rows with the same
``i mod d``), runs the undilated kernel on each (folded into the batch) and interleaves back.

Tiles are processed in chunks (a range of batch*heads and of tile rows) whose score matrix
fits in cache, like a flash-attention kernel: scores, probabilities and halos of a chunk never
leave the cache and no large temporary is allocated. Forward and backward are one
``torch.autograd.Function``: the backward pass recomputes each chunk's probabilities (only
``q``, ``k``, ``v`` are saved) and works on contiguous tiles (``bmm`` on strided gradients
falls back to a per-matrix loop on CPU).

While ``torch.export`` traces (and so for ONNX), the same tiles, halos and masks are computed by
:func:`_tiled_exported`: all chunks at once, out of place, for any batch size, without the
``autograd.Function`` (which the exported graph could not keep anyway).
"""

from __future__ import annotations

import operator
import threading
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from hourglass.backends import _kernels  # noqa: F401 - registers the kernels these backends implement
from hourglass.backends._registry import register_backend

__all__ = ["neighborhood_attention_torch", "choose_tiles", "window_start"]


def window_start(i: int, n: int, kernel_size: int) -> int:
    """First key index of the clamped NATTEN window of query ``i`` on an axis of length ``n``.

    NATTEN centres the window on the query (``k // 2`` keys before it, for even ``k`` one key
    fewer after it) and shifts it inside ``[0, n)`` at the borders.
    """
    return min(max(i - kernel_size // 2, 0), n - kernel_size)


@dataclass(frozen=True, eq=False)  # instances are cached: identity is equality
class _Axis:
    """Tiling of one axis: ``n_tiles`` query tiles of ``tile`` queries, key halos of ``halo``."""

    n: int
    tile: int
    n_tiles: int
    halo: int
    pad_lo: int  # zero keys before index 0, so that tile j's halo starts at padded row j * tile
    padded: int  # length of the zero-padded key axis
    runs: tuple[tuple[int, int, tuple[int, ...]], ...]  # (first tile, end tile, window starts in the halo)
    kernel_size: int


def _tile_starts(n: int, kernel_size: int, tile: int, pad_lo: int, j: int) -> tuple[int, ...]:
    """First halo key of the clamped window of each query of tile ``j`` (the tile's mask, as ints)."""
    # padded queries (beyond the grid) copy the last one
    return tuple(window_start(min(j * tile + a, n - 1), n, kernel_size) - (j * tile - pad_lo) for a in range(tile))


@lru_cache(maxsize=256)
def _axis(n: int, kernel_size: int, tile: int) -> _Axis:
    # Python data only: no tensor is made here, so a geometry built while torch.export traces
    # (where factory functions make fake tensors) is the same one eager calls get from the cache.
    half = kernel_size // 2
    n_tiles = -(-n // tile)
    # The last tile may hold fewer than `tile` queries; its clamped windows start at n - k, which
    # must not lie before its halo: widen every halo (and the front padding) by `extra` keys.
    extra = max(0, (n_tiles - 1) * tile - half - (n - kernel_size))
    halo = tile + kernel_size - 1 + extra
    pad_lo = half + extra
    padded = (n_tiles - 1) * tile + halo
    runs: list[list] = []  # consecutive tiles with the same mask share one bias block
    for j in range(n_tiles):
        starts = _tile_starts(n, kernel_size, tile, pad_lo, j)
        if runs and runs[-1][2] == starts:
            runs[-1][1] = j + 1
        else:
            runs.append([j, j + 1, starts])
    return _Axis(n, tile, n_tiles, halo, pad_lo, padded, tuple((a, b, m) for a, b, m in runs), kernel_size)


def _run_mask(axis: _Axis, starts: tuple[int, ...]) -> Tensor:
    """Bool ``(tile, halo)``: ``True`` where a query of the tile may attend a halo key."""
    m = torch.zeros(axis.tile, axis.halo, dtype=torch.bool)
    for a, s in enumerate(starts):
        m[a, s : s + axis.kernel_size] = True
    return m


@dataclass(frozen=True, eq=False)
class _Geometry:
    rows: _Axis
    cols: _Axis

    @property
    def n_tiles(self) -> int:
        return self.rows.n_tiles * self.cols.n_tiles


@lru_cache(maxsize=256)
def _cached_geometry(height: int, width: int, kernel_size: int, th: int, tw: int) -> _Geometry:
    return _Geometry(_axis(height, kernel_size, th), _axis(width, kernel_size, tw))


# Under torch.compile the geometry (Python ints and tuples) is
# made eagerly while Dynamo traces and kept as a constant; compiled code reads only its ints (see
# _probs). The marker sits on a plain function: Dynamo looks through an lru_cache wrapper.
@torch.compiler.assume_constant_result
def _geometry(height: int, width: int, kernel_size: int, th: int, tw: int) -> _Geometry:
    return _cached_geometry(height, width, kernel_size, th, tw)


_bias_lock = threading.Lock()
_bias_cache: dict[tuple, Tensor] = {}


def _row_kinds(axis: _Axis) -> list[int]:
    """Index of the mask run of every tile along an axis."""
    kinds = []
    for i, (a, b, _) in enumerate(axis.runs):
        kinds += [i] * (b - a)
    return kinds


def _chunk_bias(geo: _Geometry, y0: int, y1: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Additive mask (0 / -inf) of tile rows ``[y0, y1)``: ``(y1-y0, tiles_x, th*tw, Lh*Lw)``.

    Cached by the rows' mask pattern: interior chunks share one tensor, so the cache holds a
    few chunk-sized tensors whatever the grid size. Under ``torch.compile``, :func:`_probs` uses
    :func:`_traced_chunk_allowed` instead (no cache, lock or mask tensors of the geometry).
    """
    r, c = geo.rows, geo.cols
    pattern = tuple(_row_kinds(r)[y0:y1])
    key = (geo, pattern, dtype, device)
    bias = _bias_cache.get(key)
    if bias is None:
        rows = torch.stack([_run_mask(r, r.runs[i][2]) for i in pattern])  # (ny, th, Lh)
        cols = torch.stack([_run_mask(c, c.runs[i][2]) for i in _row_kinds(c)])  # (tiles_x, tw, Lw)
        allowed = rows[:, None, :, None, :, None] & cols[None, :, None, :, None, :]
        allowed = allowed.reshape(len(pattern), c.n_tiles, r.tile * c.tile, r.halo * c.halo)
        bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf")).to(device)
        with _bias_lock:
            if len(_bias_cache) > 64:
                _bias_cache.clear()
            _bias_cache[key] = bias
    return bias


def _traced_tile_masks(axis: _Axis, tiles: range, device: torch.device) -> Tensor:
    """Bool ``(len(tiles), tile, halo)``: the masks of ``axis.runs`` for these tiles, from tensor ops
    on Python ints (what Dynamo can trace; :func:`_axis` builds the same masks eagerly)."""
    starts = [_tile_starts(axis.n, axis.kernel_size, axis.tile, axis.pad_lo, j) for j in tiles]
    s = torch.tensor(starts, device=device)[..., None]
    keys = torch.arange(axis.halo, device=device)
    return (keys >= s) & (keys < s + axis.kernel_size)


def _traced_chunk_allowed(geo: _Geometry, y0: int, y1: int, device: torch.device) -> Tensor:
    """Bool ``(y1-y0, tiles_x, th*tw, Lh*Lw)``, ``True`` where :func:`_chunk_bias` is 0: what
    ``torch.compile`` traces into the graph instead of the cached bias."""
    r, c = geo.rows, geo.cols
    rows = _traced_tile_masks(r, range(y0, y1), device)  # (ny, th, Lh)
    cols = _traced_tile_masks(c, range(c.n_tiles), device)  # (tiles_x, tw, Lw)
    allowed = rows[:, None, :, None, :, None] & cols[None, :, None, :, None, :]
    return allowed.reshape(y1 - y0, c.n_tiles, r.tile * c.tile, r.halo * c.halo)


def choose_tiles(height: int, width: int, kernel_size: int) -> tuple[int, int]:
    """Query tile ``(th, tw)`` for a grid.

    Small tiles waste less of their halo (``k^2 / ((t + k - 1)^2)`` of the scores is useful),
    large ones make bigger matrix products; a side must be at least ``k // 2 + 1`` so that
    clamped border windows stay inside the tile's halo (see ``_axis``). Measured on CPU (fp32,
    D = 64, 64 x 64 grid): 4 x 4 tiles are fastest for k = 3..7 (19 useful GFLOP/s forward
    and 14 forward + backward for k = 7 on one Zen 5 core, where SDPA reaches 92 and 78), and
    ``k // 2 + 1`` squares above.
    """
    side = max(4, kernel_size // 2 + 1)
    least = kernel_size // 2 + 1
    return max(least, min(side, height)), max(least, min(side, width))


#: Bytes of one chunk's score matrix, per device type. On CPU tiles are processed in chunks of
#: (batch*heads, tile rows) this big so that scores, probabilities and halos stay in cache; on
#: GPUs chunks only bound the memory of a call.
CHUNK_BYTES = {"cpu": 1 << 20, "cuda": 1 << 28}


def _chunks(bh: int, geo: _Geometry, itemsize: int, device_type: str) -> list[tuple[int, int, int, int]]:
    """``(b0, b1, y0, y1)`` ranges of batch*heads and tile rows covering the grid."""
    r, c = geo.rows, geo.cols
    budget = CHUNK_BYTES.get(device_type, CHUNK_BYTES["cuda"])
    unit = c.n_tiles * r.tile * c.tile * r.halo * c.halo * itemsize  # one (b, h, tile row)
    if r.n_tiles * unit <= budget:
        nb = max(1, budget // (r.n_tiles * unit))
        return [(b0, min(b0 + nb, bh), 0, r.n_tiles) for b0 in range(0, bh, nb)]
    ny = max(1, budget // unit)
    return [(b0, b0 + 1, y0, min(y0 + ny, r.n_tiles)) for b0 in range(bh) for y0 in range(0, r.n_tiles, ny)]


def _heads_first(x: Tensor, rows: int, cols: int, top: int = 0, left: int = 0) -> Tensor:
    """``(B, H, W, h, D) -> (B*h, rows, cols, D)``, ``x`` placed at ``(top, left)``, zeros around."""
    b, n_h, n_w, heads, d = x.shape
    if (rows, cols) == (n_h, n_w):
        return x.permute(0, 3, 1, 2, 4).reshape(b * heads, n_h, n_w, d).contiguous()
    out = x.new_zeros(b, heads, rows, cols, d)
    out[:, :, top : top + n_h, left : left + n_w] = x.permute(0, 3, 1, 2, 4)
    return out.view(b * heads, rows, cols, d)


def _heads_last(x: Tensor, shape: torch.Size, top: int = 0, left: int = 0) -> Tensor:
    """Inverse of :func:`_heads_first`: crop and return ``(B, H, W, h, D)`` (contiguous)."""
    b, n_h, n_w, heads, d = shape
    x = x[:, top : top + n_h, left : left + n_w].view(b, heads, n_h, n_w, d)
    return x.permute(0, 2, 3, 1, 4).contiguous()


def _tiles(xq: Tensor, geo: _Geometry, b0: int, b1: int, y0: int, y1: int) -> Tensor:
    """Query tiles of a chunk: ``(B*h, Qh, Qw, D) -> (n, th*tw, D)``."""
    r, c = geo.rows, geo.cols
    x = xq[b0:b1, y0 * r.tile : y1 * r.tile]
    x = x.view(b1 - b0, y1 - y0, r.tile, c.n_tiles, c.tile, x.shape[-1]).transpose(2, 3)
    return x.reshape(-1, r.tile * c.tile, x.shape[-1])


def _untiles(t: Tensor, dst: Tensor, geo: _Geometry, b0: int, b1: int, y0: int, y1: int) -> None:
    """Write chunk tiles ``(n, th*tw, D)`` into ``dst`` ``(B*h, Qh, Qw, D)``."""
    r, c = geo.rows, geo.cols
    view = dst[b0:b1, y0 * r.tile : y1 * r.tile].view(b1 - b0, y1 - y0, r.tile, c.n_tiles, c.tile, dst.shape[-1])
    view.copy_(t.view(b1 - b0, y1 - y0, c.n_tiles, r.tile, c.tile, t.shape[-1]).transpose(2, 3))


def _halos(xp: Tensor, geo: _Geometry, b0: int, b1: int, y0: int, y1: int) -> Tensor:
    """Key halos of a chunk from the padded grid ``(B*h, Ph, Pw, D)``: ``(n, Lh*Lw, D)``."""
    r, c = geo.rows, geo.cols
    x = xp[b0:b1, y0 * r.tile : (y1 - 1) * r.tile + r.halo]
    u = x.unfold(1, r.halo, r.tile).unfold(2, c.halo, c.tile)  # b y x D Lh Lw
    return u.permute(0, 1, 2, 4, 5, 3).reshape(-1, r.halo * c.halo, xp.shape[-1])


def _fold(g: Tensor, acc: Tensor, geo: _Geometry, b0: int, b1: int, y0: int, y1: int) -> None:
    """Adjoint of :func:`_halos`: add halo gradients ``(n, Lh*Lw, D)`` into ``acc``.

    ``acc`` is ``(B*h, (tR + cy) * th, (tC + cx) * tw, D)``. Each halo is cut into tile-sized
    pieces; piece ``(oy, ox)`` of all tiles lands on a non-overlapping tiling: one strided add.
    """
    r, c = geo.rows, geo.cols
    nb, ny, d = b1 - b0, y1 - y0, g.shape[-1]
    g = g.view(nb, ny, c.n_tiles, r.halo, c.halo, d)
    for oy in range(-(-r.halo // r.tile)):
        ry = min(r.tile, r.halo - oy * r.tile)
        for ox in range(-(-c.halo // c.tile)):
            rx = min(c.tile, c.halo - ox * c.tile)
            dst = acc[b0:b1, (y0 + oy) * r.tile : (y1 + oy) * r.tile, ox * c.tile : (ox + c.n_tiles) * c.tile]
            dst = dst.view(nb, ny, r.tile, c.n_tiles, c.tile, d)[:, :, :ry, :, :rx]
            src = g[:, :, :, oy * r.tile : oy * r.tile + ry, ox * c.tile : ox * c.tile + rx]
            dst.add_(src.transpose(2, 3))


def _probs(qc: Tensor, kc: Tensor, geo: _Geometry, b0: int, b1: int, y0: int, y1: int) -> Tensor:
    """Masked softmax of one chunk's scores: ``(n, th*tw, Lh*Lw)``."""
    s = torch.bmm(qc, kc.transpose(1, 2))
    if torch.compiler.is_compiling():
        # The same values as adding the 0 / -inf bias, built in the graph. As a masked_fill it also
        # escapes inductor's attention fusion, whose bmm + additive mask + softmax + bmm pattern
        # (_sfdp_pattern_24 in torch 2.14) matches this kernel and then fails on its shapes.
        allowed = _traced_chunk_allowed(geo, y0, y1, s.device)
        return s.view(b1 - b0, *allowed.shape).masked_fill(~allowed, float("-inf")).view(s.shape).softmax(-1)
    bias = _chunk_bias(geo, y0, y1, s.dtype, s.device)
    s.view(b1 - b0, *bias.shape).add_(bias)
    return s.softmax(-1)


class _TiledNeighborhood(torch.autograd.Function):
    """Chunked tiled attention; the backward pass recomputes the probabilities per chunk."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, geo: _Geometry, scale: float) -> Tensor:
        r, c = geo.rows, geo.cols
        qh, qw = r.n_tiles * r.tile, c.n_tiles * c.tile
        xq = _heads_first(q, qh, qw)
        xq = xq.mul(scale) if scale != 1.0 else xq
        xk = _heads_first(k, r.padded, c.padded, r.pad_lo, c.pad_lo)
        xv = _heads_first(v, r.padded, c.padded, r.pad_lo, c.pad_lo)
        out = q.new_empty(xq.shape)
        for ch in _chunks(xq.shape[0], geo, q.element_size(), q.device.type):
            p = _probs(_tiles(xq, geo, *ch), _halos(xk, geo, *ch), geo, *ch)
            _untiles(torch.bmm(p, _halos(xv, geo, *ch)), out, geo, *ch)
        ctx.geo, ctx.scale = geo, scale
        ctx.save_for_backward(q, k, v)
        return _heads_last(out, q.shape)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v = ctx.saved_tensors
        geo, scale = ctx.geo, ctx.scale
        r, c = geo.rows, geo.cols
        qh, qw = r.n_tiles * r.tile, c.n_tiles * c.tile
        xq = _heads_first(q, qh, qw)
        xq = xq.mul(scale) if scale != 1.0 else xq
        xk = _heads_first(k, r.padded, c.padded, r.pad_lo, c.pad_lo)
        xv = _heads_first(v, r.padded, c.padded, r.pad_lo, c.pad_lo)
        xg = _heads_first(grad_out, qh, qw)
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        bh, d = xq.shape[0], xq.shape[-1]
        fold_shape = (bh, (r.n_tiles + -(-r.halo // r.tile)) * r.tile, (c.n_tiles + -(-c.halo // c.tile)) * c.tile, d)
        dq = xq.new_empty(xq.shape) if need_q else None
        dk = xq.new_zeros(fold_shape) if need_k else None
        dv = xq.new_zeros(fold_shape) if need_v else None
        for ch in _chunks(bh, geo, q.element_size(), q.device.type):
            qc, kc, gc = _tiles(xq, geo, *ch), _halos(xk, geo, *ch), _tiles(xg, geo, *ch)
            p = _probs(qc, kc, geo, *ch)
            if need_v:
                _fold(torch.bmm(p.transpose(1, 2), gc), dv, geo, *ch)
            if need_q or need_k:
                ds = torch.bmm(gc, _halos(xv, geo, *ch).transpose(1, 2)).mul_(p)  # softmax backward:
                ds.addcmul_(p, ds.sum(-1, keepdim=True), value=-1.0)  # p * (dp - sum(p * dp))
                if need_q:
                    dqc = torch.bmm(ds, kc)
                    _untiles(dqc.mul_(scale) if scale != 1.0 else dqc, dq, geo, *ch)
                if need_k:
                    _fold(torch.bmm(ds.transpose(1, 2), qc), dk, geo, *ch)
        return (
            _heads_last(dq, q.shape) if need_q else None,
            _heads_last(dk, k.shape, r.pad_lo, c.pad_lo) if need_k else None,
            _heads_last(dv, v.shape, r.pad_lo, c.pad_lo) if need_v else None,
            None,
            None,
        )


def _tiled_exported(q: Tensor, k: Tensor, v: Tensor, geo: _Geometry, scale: float) -> Tensor:
    """The forward of :class:`_TiledNeighborhood` in one chunk of out-of-place ops, for ``torch.export``.

    The same tiles, halos (``unfold`` of the zero-padded keys) and masks, so the same numbers; but
    no loop over chunks of ``batch * heads`` (which would fix the batch size in the graph), no
    writes into preallocated buffers and no cached mask tensors: the mask is built from the
    geometry's ints by :func:`_traced_chunk_allowed` and applied with ``masked_fill``, a ``Where``
    in ONNX.
    """
    r, c = geo.rows, geo.cols
    b, n_h, n_w, heads, d = q.shape

    def grid(x: Tensor, rows: int, cols: int, top: int, left: int) -> Tensor:  # (B*h, rows, cols, D), zeros around
        x = torch.nn.functional.pad(x.permute(0, 3, 1, 2, 4), (0, 0, left, cols - left - n_w, top, rows - top - n_h))
        return x.reshape(-1, rows, cols, d)

    def halos(x: Tensor) -> Tensor:  # (B*h * tiles, Lh*Lw, D)
        u = x.unfold(1, r.halo, r.tile).unfold(2, c.halo, c.tile)  # b y x D Lh Lw
        return u.permute(0, 1, 2, 4, 5, 3).reshape(-1, r.halo * c.halo, d)

    qh, qw = r.n_tiles * r.tile, c.n_tiles * c.tile
    xq = grid(q, qh, qw, 0, 0)
    xq = xq.mul(scale) if scale != 1.0 else xq
    tiles = xq.reshape(-1, r.n_tiles, r.tile, c.n_tiles, c.tile, d).transpose(2, 3).reshape(-1, r.tile * c.tile, d)
    kh = halos(grid(k, r.padded, c.padded, r.pad_lo, c.pad_lo))
    vh = halos(grid(v, r.padded, c.padded, r.pad_lo, c.pad_lo))
    s = torch.bmm(tiles, kh.transpose(1, 2))
    allowed = _traced_chunk_allowed(geo, 0, r.n_tiles, s.device)  # (tiles_y, tiles_x, th*tw, Lh*Lw)
    p = s.reshape(-1, *allowed.shape).masked_fill(~allowed, float("-inf")).reshape(s.shape).softmax(-1)
    o = torch.bmm(p, vh).reshape(-1, r.n_tiles, c.n_tiles, r.tile, c.tile, d).transpose(2, 3).reshape(-1, qh, qw, d)
    return o[:, :n_h, :n_w].reshape(b, heads, n_h, n_w, d).permute(0, 2, 3, 1, 4).contiguous()


def _na_undilated(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, scale: float, tiles) -> Tensor:
    # operator.index: under torch.compile with dynamic shapes this specialises the grid size (Dynamo
    # guards on it), since the tiling is Python data built for one size; eagerly it is a no-op.
    n_h, n_w = operator.index(q.shape[1]), operator.index(q.shape[2])
    th, tw = tiles if tiles is not None else choose_tiles(n_h, n_w, kernel_size)
    least = kernel_size // 2 + 1
    th, tw = max(th, least), max(tw, least)
    geo = _geometry(n_h, n_w, kernel_size, th, tw)
    if torch.compiler.is_exporting():
        return _tiled_exported(q, k, v, geo, float(scale))
    return _TiledNeighborhood.apply(q, k, v, geo, float(scale))


def _split(x: Tensor, d: int, rows: slice, row_groups: slice, cols: slice, col_groups: slice) -> Tensor:
    """Sub-grids of a ``(B, H/d, d, W/d, d, h, D)`` view folded into the batch."""
    s = x[:, rows, row_groups, cols, col_groups]
    b, n_h, gr, n_w, gc, heads, dim = s.shape
    return s.permute(0, 2, 4, 1, 3, 5, 6).reshape(b * gr * gc, n_h, n_w, heads, dim)


def neighborhood_attention_torch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kernel_size: int,
    dilation: int = 1,
    scale: float = 1.0,
    tiles: tuple[int, int] | None = None,
) -> Tensor:
    """Neighborhood attention in pure PyTorch (forward and backward, any device).

    Args:
        q, k, v: ``(B, H, W, heads, D)``; inputs already validated by the caller.
        kernel_size: window side ``k`` (odd or even); ``k * dilation <= min(H, W)``.
        dilation: ``d``; queries attend within their ``i mod d`` sub-grid.
        scale: multiplier of ``q . k`` before the softmax.
        tiles: query tile ``(th, tw)``; ``None`` picks :func:`choose_tiles`.

    Returns:
        ``(B, H, W, heads, D)``.
    """
    if dilation == 1:
        return _na_undilated(q, k, v, kernel_size, scale, tiles)
    b, n_h, n_w, heads, dim = q.shape
    d = dilation
    hq, rh = divmod(n_h, d)
    wq, rw = divmod(n_w, d)
    ph, pw = hq + (rh > 0), wq + (rw > 0)

    def grid(x: Tensor) -> Tensor:
        if rh or rw:
            x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pw * d - n_w, 0, ph * d - n_h))
        return x.view(b, ph, d, pw, d, heads, dim)

    gq, gk, gv = grid(q), grid(k), grid(v)
    # Sub-grids with index < r along an axis are one longer than the rest: at most 2 x 2 groups.
    row_sets = [(slice(0, ph), slice(0, rh))] if rh else []
    row_sets.append((slice(0, hq), slice(rh, d)))
    col_sets = [(slice(0, pw), slice(0, rw))] if rw else []
    col_sets.append((slice(0, wq), slice(rw, d)))
    if len(row_sets) == 1 and len(col_sets) == 1:
        rows, rg = row_sets[0]
        cols, cg = col_sets[0]
        args = [_split(x, d, rows, rg, cols, cg) for x in (gq, gk, gv)]
        o = _na_undilated(*args, kernel_size, scale, tiles)
        o = o.view(b, d, d, hq, wq, heads, dim).permute(0, 3, 1, 4, 2, 5, 6)
        return o.reshape(b, n_h, n_w, heads, dim)
    out = q.new_zeros(b, ph, d, pw, d, heads, dim)
    for rows, rg in row_sets:
        for cols, cg in col_sets:
            args = [_split(x, d, rows, rg, cols, cg) for x in (gq, gk, gv)]
            o = _na_undilated(*args, kernel_size, scale, tiles)
            n_gr, n_gc = rg.stop - rg.start, cg.stop - cg.start
            o = o.view(b, n_gr, n_gc, rows.stop, cols.stop, heads, dim).permute(0, 3, 1, 4, 2, 5, 6)
            out[:, rows, rg, cols, cg] = o
    return out.view(b, ph * d, pw * d, heads, dim)[:, :n_h, :n_w]


# measured on an H200: the chunked torch kernel beat compiled flex at 64^2-256^2 tokens
register_backend("neighborhood", "torch", neighborhood_attention_torch, auto={"cuda": 1, "*": 0})
