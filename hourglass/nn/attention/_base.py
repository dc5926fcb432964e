"""The shared self-attention module; each kind only supplies how tokens attend.

The attention is HDiT's (Crowson et al. 2024, arXiv 2401.11605): cosine-similarity attention with a
learnable per-head scale (Sec. 4.2 and App. E.1, after Swin V2, Liu et al. 2022) and 2D axial RoPE
(Sec. 4.2 and App. E.2). The scale's initial value, 10, is that of the authors' k-diffusion code.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from functools import reduce
from typing import Any, ClassVar, Literal

import torch
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from hourglass.nn._init import zero_init
from hourglass.nn.attention.kind import AttentionKind
from hourglass.nn.pos_emb import apply_rotary_emb
from hourglass.registry import POS_EMB
from hourglass.spec import Problem, Spec

__all__ = ["AttentionSpec", "SelfAttention", "scale_for_cosine_sim", "counting_macs"]

_COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("hourglass_counting", default=False)


@contextmanager
def counting_macs() -> Iterator[None]:
    """While active, attention kinds skip the token mixing (analytic MAC counting on meta tensors)."""
    token = _COUNTING.set(True)
    try:
        yield
    finally:
        _COUNTING.reset(token)


def scale_for_cosine_sim(q: Tensor, k: Tensor, scale: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Cosine-similarity scaling: ``q * sqrt(s) / sqrt(sum q^2 + eps)``, same for ``k`` (HDiT paper, App. E.1).

    Args:
        q, k: ``(..., n_heads, d_head)``.
        scale: ``(n_heads,)`` learnable per-head ``s``.
    """
    dtype = reduce(torch.promote_types, (q.dtype, k.dtype, scale.dtype, torch.float32))
    sqrt_scale = torch.sqrt(scale.to(dtype))[:, None]
    scale_q = sqrt_scale * torch.rsqrt(torch.sum(q.to(dtype) ** 2, dim=-1, keepdim=True) + eps)
    scale_k = sqrt_scale * torch.rsqrt(torch.sum(k.to(dtype) ** 2, dim=-1, keepdim=True) + eps)
    return q * scale_q.to(q.dtype), k * scale_k.to(k.dtype)


class AttentionSpec(Spec):
    """Fields every attention kind shares."""

    d_head: int = Field(64, gt=0, description="channels per head; width must be divisible by it")
    qk_norm: Literal["cosine", "none"] = Field(
        "cosine", description="'cosine': cosine-similarity attention with a learnable per-head scale (HDiT); "
        "'none': dot product scaled by 1/sqrt(d_head) (DiT, U-ViT)"
    )
    scale_init: float = Field(10.0, gt=0, description="initial per-head scale of cosine-sim attention")
    qkv_bias: bool = Field(False, description="bias on the qkv projection")
    out_bias: bool = Field(False, description="bias on the output projection")
    zero_init: bool = Field(True, description="zero-initialise the output projection")


class SelfAttention(AttentionKind, nn.Module):
    """Multi-head self-attention over a token grid; subclasses define :meth:`attend`.

    ``qkv = Linear(w -> 3w)`` laid out ``(t n_heads d_head)``; optional cosine-sim scaling,
    then rotary positions, then the kind's token mixing, dropout and ``Out`` (HDiT paper, Sec. 4.2, Fig. 4).
    ``rope_pos_in_compute_dtype``: whether rotary angles come from positions cast to the
    activations' dtype (k-diffusion does so for global attention only; the local kinds keep fp32
    positions, which matters under bf16 autocast).

    Context:
        width: channels of the level.
        pos_emb: the model's positional-encoding spec; only relative encodings act here.
        layer_index: index of the layer within its level (decoder layers continue the count).
        dropout: dropout rate after the attention.
    """

    rope_pos_in_compute_dtype: ClassVar[bool] = False

    def __init__(
        self,
        spec: AttentionSpec,
        *,
        width: int,
        pos_emb: Any = None,
        layer_index: int = 0,
        dropout: float = 0.0,
        **_: object,
    ) -> None:
        super().__init__()
        self.spec = spec
        if width % spec.d_head:
            raise ValueError(
                f"{spec.type} attention: width {width} is not divisible by d_head {spec.d_head}; "
                "change the level's width or the attention's d_head"
            )
        self.width = width
        self.d_head = spec.d_head
        self.n_heads = width // spec.d_head
        self.layer_index = layer_index
        self.backend: str | None = None  # runtime choice; never part of the state_dict
        self.qkv_proj = nn.Linear(width, 3 * width, bias=spec.qkv_bias)
        if spec.qk_norm == "cosine":
            self.scale = nn.Parameter(torch.full((self.n_heads,), float(spec.scale_init)))
        self.pos_emb = None
        if pos_emb is not None:
            pos_emb = POS_EMB.validate(pos_emb)
            if POS_EMB.get(pos_emb.type).encoding == "relative":
                self.pos_emb = POS_EMB.build(pos_emb, d_head=spec.d_head, n_heads=self.n_heads, width=width)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(width, width, bias=spec.out_bias)
        if spec.zero_init:
            zero_init(self.out_proj)

    @classmethod
    def contract_problem(cls) -> str | None:
        """A self-attention mixes tokens, so it must name the kernel that computes it."""
        if cls.kernel is None:
            return ("declares no kernel: set the class attribute kernel to the kernel its attend() calls "
                    "(e.g. kernel = \"neighborhood\"); without one, models would build it as no attention")
        return super().contract_problem()

    @classmethod
    def heads(cls, spec: AttentionSpec, width: int) -> int:
        """``width // d_head``."""
        return width // spec.d_head

    @classmethod
    def width_problems(cls, spec: AttentionSpec, width: int) -> list[Problem]:
        """``width`` must split into heads of ``spec.d_head`` channels."""
        if width % spec.d_head:
            return [Problem("", f"{width} is not divisible by the attention's d_head {spec.d_head}",
                            f"use a multiple of {spec.d_head} or change d_head")]
        return []

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """Token mixing of the kind: ``(B, H, W, n_heads, d_head)`` x3 -> same shape."""
        raise NotImplementedError

    def attention_macs(self, batch: int, h: int, w: int) -> int:
        """Multiply-accumulates of :meth:`attend` (``q k^T`` and ``a v``) for a ``(batch, h, w)`` grid."""
        raise NotImplementedError

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """``x (B, H, W, width)``, ``pos (H, W, 2)`` -> ``(B, H, W, width)``."""
        qkv = self.qkv_proj(x)
        q, k, v = rearrange(qkv, "b h w (t nh e) -> t b h w nh e", t=3, e=self.d_head)
        if self.spec.qk_norm == "cosine":
            q, k = scale_for_cosine_sim(q, k, self.scale)
            scale = 1.0
        else:
            scale = self.d_head**-0.5
        if self.pos_emb is not None:
            theta = self.pos_emb(pos.to(qkv.dtype) if self.rope_pos_in_compute_dtype else pos)  # (H, W, nh, d_head/4)
            q, k = apply_rotary_emb(q, theta), apply_rotary_emb(k, theta)
        if _COUNTING.get():
            out = torch.empty_like(q)
        else:
            out = self.attend(q, k, v, scale)
        out = rearrange(out, "b h w nh e -> b h w (nh e)")
        return self.out_proj(self.dropout(out))

    def extra_repr(self) -> str:
        return f"width={self.width}, n_heads={self.n_heads}, d_head={self.d_head}, backend={self.backend or 'auto'}"
