"""``flex`` backends: ``torch.nn.attention.flex_attention`` with block-sparse masks.

Tokens are reordered so that each 128-token block of the sequence is a compact 2D patch:
for neighborhood attention an 8 x 16 tile of one dilation sub-grid, for shifted windows whole
windows in a row. The block mask is then built directly from tile geometry (no ``N x N``
mask is ever evaluated) and ``mask_mod`` reads small per-token lookup tables. On CUDA the
``flex_attention`` call is compiled once (cached); on CPU flex has no backward, and its eager
forward materialises the scores (fine for tests, not for large grids).
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from dataclasses import dataclass

import torch
from torch import Tensor

from hourglass.backends import _kernels  # noqa: F401 - registers the kernels these backends implement
from hourglass.backends._registry import register_backend
from hourglass.backends._torch_neighborhood import window_start
from hourglass.backends._window import window_token_flags

__all__ = ["neighborhood_flex", "shifted_window_flex", "flex_input_problem"]

BLOCK = 128
TILE = (8, 16)  # rows x cols of one block of the neighborhood layout

_lock = threading.Lock()
_compiled = None
_layouts: dict[tuple, _Layout] = {}


@dataclass
class _Layout:
    perm: Tensor  # (S,) sequence position -> flat grid index (padding -> 0)
    inverse: Tensor  # (H*W,) flat grid index -> sequence position
    block_mask: object
    seq_len: int


def _flex_attention(device_type: str):
    global _compiled
    fa = importlib.import_module("torch.nn.attention.flex_attention")
    if device_type != "cuda":
        return fa.flex_attention
    if _compiled is None:
        with _lock:
            if _compiled is None:
                _compiled = torch.compile(fa.flex_attention, dynamic=False)
    return _compiled


def _block_mask(kv_lists: list[list[int]], mask_mod, seq_len: int, device: torch.device):
    """``BlockMask`` from the kv-block list of every query block (all blocks partial)."""
    fa = importlib.import_module("torch.nn.attention.flex_attention")
    idx = torch.zeros(1, 1, len(kv_lists), len(kv_lists), dtype=torch.int32)
    num = torch.zeros(1, 1, len(kv_lists), dtype=torch.int32)
    for i, kv in enumerate(kv_lists):
        idx[0, 0, i, : len(kv)] = torch.tensor(sorted(kv), dtype=torch.int32)
        num[0, 0, i] = len(kv)
    return fa.BlockMask.from_kv_blocks(
        num.to(device), idx.to(device), BLOCK_SIZE=BLOCK, mask_mod=mask_mod, seq_lengths=(seq_len, seq_len)
    )


def _cached(key: tuple, build) -> _Layout:
    layout = _layouts.get(key)
    if layout is None:
        layout = build()
        with _lock:
            if len(_layouts) > 64:
                _layouts.clear()
            _layouts[key] = layout
    return layout


def _neighborhood_layout(n_h: int, n_w: int, kernel_size: int, dilation: int, device: torch.device) -> _Layout:
    d, (th, tw) = dilation, TILE
    perm, grp, pad, kr, kc, wr, wc = [], [], [], [], [], [], []
    kv_lists: list[list[int]] = []
    tile_of: dict[tuple[int, int, int], int] = {}  # (group, tile row, tile col) -> block index
    queries: list[tuple[int, range, range]] = []
    for gy in range(d):
        ng_h = len(range(gy, n_h, d))
        for gx in range(d):
            ng_w = len(range(gx, n_w, d))
            g = gy * d + gx
            for ty in range(-(-ng_h // th)):
                for tx in range(-(-ng_w // tw)):
                    tile_of[(g, ty, tx)] = len(queries)
                    rows = range(ty * th, min(ty * th + th, ng_h))
                    cols = range(tx * tw, min(tx * tw + tw, ng_w))
                    queries.append((g, rows, cols))
                    for a in range(th):
                        for b in range(tw):
                            i, j = ty * th + a, tx * tw + b
                            real = i < ng_h and j < ng_w
                            perm.append((gy + d * i) * n_w + gx + d * j if real else 0)
                            grp.append(g if real else -1)
                            pad.append(not real)
                            kr.append(i)
                            kc.append(j)
                            wr.append(window_start(min(i, ng_h - 1), ng_h, kernel_size))
                            wc.append(window_start(min(j, ng_w - 1), ng_w, kernel_size))
                    # key tiles touched by the union of this tile's windows
                    r0 = window_start(rows.start, ng_h, kernel_size) // th
                    r1 = (window_start(rows.stop - 1, ng_h, kernel_size) + kernel_size - 1) // th
                    c0 = window_start(cols.start, ng_w, kernel_size) // tw
                    c1 = (window_start(cols.stop - 1, ng_w, kernel_size) + kernel_size - 1) // tw
                    kv_lists.append([(g, y, x) for y in range(r0, r1 + 1) for x in range(c0, c1 + 1)])
    kv_lists = [[tile_of[t] for t in kv] for kv in kv_lists]
    t = {
        name: torch.tensor(val, device=device)
        for name, val in dict(grp=grp, pad=pad, kr=kr, kc=kc, wr=wr, wc=wc).items()
    }
    k = kernel_size

    def mask_mod(b, h, q_idx, kv_idx):
        r, c = t["kr"][kv_idx], t["kc"][kv_idx]
        qr, qc = t["wr"][q_idx], t["wc"][q_idx]
        inside = (r >= qr) & (r < qr + k) & (c >= qc) & (c < qc + k)
        same = t["grp"][q_idx] == t["grp"][kv_idx]  # padding has group -1
        # padding queries (outputs discarded) attend the padding keys of their own block only
        pad_pair = t["pad"][q_idx] & (q_idx // BLOCK == kv_idx // BLOCK)
        return same & ((inside & ~t["pad"][kv_idx]) | pad_pair)

    perm_t = torch.tensor(perm, device=device)
    inverse = torch.empty(n_h * n_w, dtype=torch.long, device=device)
    real = ~t["pad"]
    inverse[perm_t[real]] = torch.arange(len(perm), device=device)[real]
    return _Layout(perm_t, inverse, _block_mask(kv_lists, mask_mod, len(perm), device), len(perm))


def _window_layout(n_h: int, n_w: int, window: int, shift: int, device: torch.device) -> _Layout:
    s = window
    nwh, nww = n_h // s, n_w // s
    # sequence: windows in raster order, tokens inside a window in raster order, of the rolled grid
    wy, wx, ry, rx = torch.meshgrid(
        torch.arange(nwh), torch.arange(nww), torch.arange(s), torch.arange(s), indexing="ij"
    )
    rolled_r, rolled_c = (wy * s + ry).reshape(-1), (wx * s + rx).reshape(-1)
    # rolled[i, j] = x[(i - shift) % H, (j - shift) % W]
    perm = ((rolled_r - shift) % n_h) * n_w + (rolled_c - shift) % n_w
    top, left = window_token_flags(n_h, n_w, s, shift)
    n = n_h * n_w
    seq_len = -(-n // BLOCK) * BLOCK
    extra = seq_len - n
    win = torch.cat([(wy * nww + wx).reshape(-1), torch.full((extra,), -1)])
    top_s = torch.cat([top[rolled_r, rolled_c], torch.zeros(extra, dtype=torch.bool)])
    left_s = torch.cat([left[rolled_r, rolled_c], torch.zeros(extra, dtype=torch.bool)])
    perm = torch.cat([perm, torch.zeros(extra, dtype=torch.long)])
    tables = {name: x.to(device) for name, x in dict(win=win, top=top_s, left=left_s).items()}

    def mask_mod(b, h, q_idx, kv_idx):
        w, tp, lf = tables["win"], tables["top"], tables["left"]
        return (w[q_idx] == w[kv_idx]) & (tp[q_idx] == tp[kv_idx]) & (lf[q_idx] == lf[kv_idx])

    kv_lists = []
    ss = s * s
    for blk in range(seq_len // BLOCK):
        first, last = blk * BLOCK, min(blk * BLOCK + BLOCK, n) - 1
        if first >= n:  # all padding: attends itself
            kv_lists.append([blk])
            continue
        lo, hi = (first // ss) * ss, (last // ss + 1) * ss - 1
        blocks = set(range(lo // BLOCK, hi // BLOCK + 1))
        if last + 1 < (blk + 1) * BLOCK:  # padding queries in this block attend padding keys here
            blocks.add(blk)
        kv_lists.append(sorted(blocks))
    perm = perm.to(device)
    inverse = torch.empty(n, dtype=torch.long, device=device)
    inverse[perm[:n]] = torch.arange(n, device=device)
    return _Layout(perm, inverse, _block_mask(kv_lists, mask_mod, seq_len, device), seq_len)


def _run(q: Tensor, k: Tensor, v: Tensor, layout: _Layout, scale: float) -> Tensor:
    b, n_h, n_w, heads, d = q.shape

    def seq(x: Tensor) -> Tensor:
        x = x.reshape(b, n_h * n_w, heads, d).transpose(1, 2)
        return x.index_select(2, layout.perm)

    o = _flex_attention(q.device.type)(seq(q), seq(k), seq(v), block_mask=layout.block_mask, scale=scale)
    o = o.index_select(2, layout.inverse)
    return o.transpose(1, 2).reshape(b, n_h, n_w, heads, d)


def neighborhood_flex(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int, scale: float) -> Tensor:
    """Neighborhood attention with flex_attention; ``(B, H, W, heads, D)`` in and out."""
    key = ("na", q.shape[1], q.shape[2], kernel_size, dilation, q.device)
    layout = _cached(key, lambda: _neighborhood_layout(q.shape[1], q.shape[2], kernel_size, dilation, q.device))
    return _run(q, k, v, layout, scale)


def shifted_window_flex(q: Tensor, k: Tensor, v: Tensor, window: int, shift: int, scale: float) -> Tensor:
    """Shifted-window attention with flex_attention; the roll is folded into the token order."""
    key = ("sw", q.shape[1], q.shape[2], window, shift, q.device)
    layout = _cached(key, lambda: _window_layout(q.shape[1], q.shape[2], window, shift, q.device))
    return _run(q, k, v, layout, scale)


def flex_input_problem(q: Tensor) -> str | None:
    """Why flex cannot take these inputs (``None`` if it can)."""
    d = q.shape[-1]
    if q.device.type == "cuda" and (d < 16 or d & (d - 1)):
        return f"compiled flex_attention needs a power-of-two head dim >= 16, got {d}"
    return None


def _probe(device_type: str, dtype: torch.dtype, requires_grad: bool) -> str | None:
    try:
        importlib.import_module("torch.nn.attention.flex_attention")
    except Exception as exc:
        return f"torch {torch.__version__} has no flex_attention ({type(exc).__name__}: {exc}); needs torch >= 2.5"
    if device_type == "cpu":
        if requires_grad:
            return "flex_attention has no backward on CPU (forward only); use it on CUDA"
        if dtype not in (torch.float32, torch.float64):
            return f"flex_attention on CPU supports float32/float64 here, got {dtype}"
        return None
    if device_type != "cuda":
        return f"flex_attention does not run on {device_type}"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    if importlib.util.find_spec("triton") is None:
        return "compiled flex_attention on CUDA needs triton, which is not installed"
    if torch.cuda.get_device_capability()[0] < 7:
        return "compiled flex_attention needs a GPU of compute capability >= 7.0"
    return None


register_backend(
    "neighborhood", "flex", neighborhood_flex, probe=_probe, input_problem=lambda q, *_: flex_input_problem(q),
    auto={"cuda": 2},
)
register_backend(
    "shifted_window", "flex", shifted_window_flex, probe=_probe, input_problem=lambda q, *_: flex_input_problem(q),
    auto={"cuda": 0},
)
