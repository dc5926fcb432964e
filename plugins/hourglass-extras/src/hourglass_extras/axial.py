"""Criss-cross ("axial") attention: an attention kind with its own kernel and two backends.

Each query attends to the tokens of its own row and its own column, one softmax over those
``H + W - 1`` keys (criss-cross attention, Huang et al. 2019, "CCNet"; axial attention, Ho et al.
2019, runs the row and the column as two passes instead). One layer reaches ``H + W - 1`` tokens;
two layers reach every token (row then column), so the kind does not connect all tokens in one
layer. ``span`` limits each query to a run of ``2 span + 1`` keys of its row and of its column,
centred on it and shifted inside the grid at the borders (NATTEN semantics, along one axis).

What it registers (see :func:`register_axial`):

* kernel ``axial``: ``fn(q, k, v, span, scale)`` on ``(B, H, W, heads, D)`` tensors;
* backend ``torch`` of it (the reference): one softmax over the row and column logits, memory
  ``O(tokens * (H + W))``, no ``(H W) x (H W)`` mask; forward and backward on any device;
* backend ``dense`` of it: an oracle, ``F.scaled_dot_product_attention`` with the full
  ``(H W) x (H W)`` mask; float32 and float64 only, at most 4096 tokens, never chosen by ``auto``;
* attention kind ``axial`` (:class:`AxialAttention`), computed by that kernel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from hourglass.plugin import (
    KERNEL,
    AttentionSpec,
    Field,
    Problem,
    SelfAttention,
    call_kernel,
    register_backend,
    register_kernel,
)
from hourglass.plugin import register as register_component

__all__ = [
    "AxialAttention",
    "AxialAttentionSpec",
    "axial_dense",
    "axial_keys",
    "axial_torch",
    "axial_window",
    "check_axial",
    "register_axial",
]

#: the most tokens the ``dense`` backend takes (its mask has tokens^2 entries)
DENSE_MAX_TOKENS = 4096


def axial_window(n: int, span: int | None, device: torch.device | str | None = None) -> Tensor:
    """``(n, n)`` bool: ``[i, j]`` is True when the query at position ``i`` of a row (or column) of
    ``n`` tokens sees the key at ``j``; all True for ``span=None``, else a run of ``2 span + 1``
    positions around ``i``, shifted inside ``[0, n)`` at the borders."""
    if span is None:
        return torch.ones(n, n, dtype=torch.bool, device=device)
    size = 2 * span + 1
    pos = torch.arange(n, device=device)
    start = (pos - span).clamp(0, n - size)[:, None]
    return (pos[None, :] >= start) & (pos[None, :] < start + size)


def axial_keys(h: int, w: int, span: int | None) -> int:
    """Keys each query of an ``h x w`` grid sees: its row's and its column's, itself once."""
    if span is None:
        return h + w - 1
    return min(2 * span + 1, w) + min(2 * span + 1, h) - 1


def check_axial(q: Tensor, span: int | None) -> None:
    """The kernel's argument check: ``span`` is None or an int >= 1 whose run fits the grid.

    Raises:
        ValueError: naming the span, the grid and the fix.
    """
    if span is None:
        return
    if isinstance(span, bool) or not isinstance(span, int) or span < 1:
        raise ValueError(f"axial attention: span must be None or an integer >= 1, got {span!r}")
    h, w = q.shape[1], q.shape[2]
    if 2 * span + 1 > min(h, w):
        raise ValueError(
            f"axial attention: span {span} needs runs of {2 * span + 1} tokens but the token grid is {h} x {w}; "
            "use a smaller span, or span=None for whole rows and columns"
        )


def axial_torch(q: Tensor, k: Tensor, v: Tensor, span: int | None, scale: float) -> Tensor:
    """Reference backend: ``(B, H, W, heads, D)`` in and out, memory ``O(B heads H W (H + W))``.

    The row logits ``(B, heads, H, W, W)`` and the column logits ``(B, heads, H, W, H)`` share one
    softmax; the column leaves out the query's own position, which its row already holds.
    """
    h, w = q.shape[1], q.shape[2]
    row_keys = axial_window(w, span, q.device)  # [j, j']
    col_keys = axial_window(h, span, q.device) & ~torch.eye(h, dtype=torch.bool, device=q.device)  # [i, i']
    row = torch.einsum("bijnd,biknd->bnijk", q, k) * scale
    col = torch.einsum("bijnd,bkjnd->bnijk", q, k) * scale
    row = row.masked_fill(~row_keys, float("-inf"))
    col = col.masked_fill(~col_keys[:, None, :], float("-inf"))
    logits = torch.cat([row, col], dim=-1)
    attn = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(v.dtype)
    a_row, a_col = attn.split([w, h], dim=-1)
    return torch.einsum("bnijk,biknd->bijnd", a_row, v) + torch.einsum("bnijk,bkjnd->bijnd", a_col, v)


def axial_dense(q: Tensor, k: Tensor, v: Tensor, span: int | None, scale: float) -> Tensor:
    """Oracle backend: SDPA with the full ``(H W) x (H W)`` mask of who sees whom."""
    b, h, w, heads, d = q.shape
    rows, cols = axial_window(w, span, q.device), axial_window(h, span, q.device)
    same_row = torch.eye(h, dtype=torch.bool, device=q.device)[:, None, :, None] & rows[None, :, None, :]
    same_col = cols[:, None, :, None] & torch.eye(w, dtype=torch.bool, device=q.device)[None, :, None, :]
    mask = (same_row | same_col).reshape(h * w, h * w)  # [(i, j), (i', j')]

    def seq(x: Tensor) -> Tensor:
        return x.reshape(b, h * w, heads, d).transpose(1, 2)

    out = F.scaled_dot_product_attention(seq(q), seq(k), seq(v), attn_mask=mask, scale=scale)
    return out.transpose(1, 2).reshape(b, h, w, heads, d)


def _dense_probe(device_type: str, dtype: torch.dtype, requires_grad: bool) -> str | None:
    if dtype not in (torch.float32, torch.float64):
        return f"dense is a float32/float64 oracle, got {dtype}; use the torch backend for half precision"
    return None


def _dense_input_problem(q: Tensor, span: int | None) -> str | None:
    tokens = q.shape[1] * q.shape[2]
    if tokens > DENSE_MAX_TOKENS:
        return (f"its mask would have {tokens}^2 entries for the {q.shape[1]} x {q.shape[2]} grid; "
                f"dense takes at most {DENSE_MAX_TOKENS} tokens")
    return None


class AxialAttentionSpec(AttentionSpec):
    """Options of the ``axial`` attention kind (plus the shared :class:`AttentionSpec` fields)."""

    type: Literal["axial"] = "axial"
    span: int | None = Field(
        None, ge=1,
        description="each query sees 2 span + 1 keys of its row and of its column (shifted inside the grid "
        "at the borders); leave it out for whole rows and columns",
    )


class AxialAttention(SelfAttention):
    """Criss-cross attention: each query attends to its own row and column, one softmax over them.

    A query sees ``H + W - 1`` keys (``2 (2 span + 1) - 1`` with ``span``), so a layer costs
    ``O(tokens * (H + W))``; two layers connect every pair of tokens.
    """

    Spec = AxialAttentionSpec
    kernel = "axial"
    connects_all_tokens = False  # one layer reaches the query's row and column only

    @classmethod
    def grid_problems(
        cls, spec: AxialAttentionSpec, grid: tuple[int, int], layers: Iterable[int] = (0,)
    ) -> list[Problem]:
        """The run of ``2 span + 1`` keys must fit both sides of the grid."""
        if spec.span is None or 2 * spec.span + 1 <= min(grid):
            return []
        fits = (min(grid) - 1) // 2
        return [Problem(
            "span", f"{spec.span} needs runs of {2 * spec.span + 1} tokens, more than the {grid[0]}x{grid[1]} "
            "token grid",
            (f"use span <= {fits} or " if fits else "") + "leave span out (whole rows and columns)",
        )]

    @classmethod
    def label(cls, spec: AxialAttentionSpec) -> str:
        """``"axial"``, or ``"axial s2"`` with a span."""
        return "axial" if spec.span is None else f"axial s{spec.span}"

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """``q, k, v (B, H, W, n_heads, d_head)`` -> ``(B, H, W, n_heads, d_head)``, on the resolved backend."""
        return call_kernel("axial", q, k, v, self.spec.span, scale=scale, backend=self.backend)

    def attention_macs(self, batch: int, h: int, w: int) -> int:
        """``q k^T`` and ``a v`` over the keys each query sees: ``2 * batch * h * w * keys * width``."""
        return 2 * batch * h * w * axial_keys(h, w, self.spec.span) * self.width


def register_axial() -> None:
    """Register kernel ``axial`` and its backends, then the attention kind that names the kernel."""
    # an entry point may run twice (load_plugins(force=True)); register_kernel refuses a name
    # that is taken, even by an equal kernel, so register the kernel only if it is not ours yet
    if not (KERNEL.registered("axial") and KERNEL.get("axial").check is check_axial):
        register_kernel(
            "axial", reference="torch", check=check_axial,
            doc="each query attends to its own row and column, one softmax (criss-cross); args: span",
        )
        register_backend("axial", "torch", axial_torch, auto={"*": 0})
        register_backend(
            "axial", "dense", axial_dense, probe=_dense_probe, input_problem=_dense_input_problem, auto={},
        )
    register_component("attention", "axial", AxialAttention)
