"""Positional encodings (axial RoPE of HDiT, DiT's fixed sin-cos, U-ViT's learned table).

HDiT (Crowson et al. 2024, arXiv 2401.11605) rotates queries and keys with 2D axial RoPE (Sec. 4.2,
App. E.2); DiT (Peebles & Xie 2023) and U-ViT (Bao et al. 2023) add position vectors to the tokens.

Every encoding declares its :attr:`PositionalEncoding.encoding`. *Relative* encodings are built
inside each attention module and rotate queries and keys (context ``d_head``, ``n_heads``);
*absolute* encodings are built once by the model and added to the tokens after patching (context
``width``, ``grid_size``); ``none`` adds nothing.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from hourglass.registry import POS_EMB, Contract
from hourglass.spec import Spec

__all__ = [
    "PositionalEncoding",
    "make_axial_pos",
    "downscale_pos",
    "apply_rotary_emb",
    "AxialRoPE",
    "AxialRoPESpec",
    "SinCos2D",
    "SinCos2DSpec",
    "LearnedPosEmb",
    "LearnedPosEmbSpec",
    "NoPosEmb",
    "NoPosEmbSpec",
]


class PositionalEncoding(Contract):
    """Contract of the ``pos_emb`` family: where the encoding acts.

    Class attributes:
        encoding: ``"relative"``: built per attention module (context ``d_head``, ``n_heads``,
            ``width``), called as ``theta = module(pos (..., 2))`` and applied to q and k with
            :func:`apply_rotary_emb`; ``"absolute"``: built once per model (context ``width``,
            ``grid_size``), called as ``x = module(x (B, H, W, C))`` after patching; ``"none"``: the
            models build nothing (the module, when built directly, is the identity on tokens).
    """

    encoding: ClassVar[Literal["relative", "absolute", "none"]] = "none"
    #: an absolute encoding that is a learned table (U-ViT then learns positions for its condition
    #: tokens too, initialised like the table: truncated normal of the spec's ``init_std``)
    learned: ClassVar[bool] = False

    @classmethod
    def facts(cls) -> dict[str, str | bool]:
        """``{"encoding": ..., "learned": ...}``."""
        return {"encoding": cls.encoding, "learned": cls.learned}


POS_EMB.set_contract(PositionalEncoding)


def make_axial_pos(h: int, w: int, *, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """Token-centre coordinates of an ``h x w`` grid, ``(h, w, 2)`` as ``(y, x)`` (k-diffusion's ``make_axial_pos``).

    Cell centres of ``[-1, 1]`` along the longer side; the shorter side spans ``[-r, r]`` with
    ``r`` the aspect ratio, so a 16x32 grid spans ``[-0.5, 0.5] x [-1, 1]``.
    """
    y_max = min(1.0, h / w)
    x_max = min(1.0, w / h)
    y_edges = torch.linspace(-y_max, y_max, h + 1, dtype=dtype, device=device)
    x_edges = torch.linspace(-x_max, x_max, w + 1, dtype=dtype, device=device)
    y = (y_edges[:-1] + y_edges[1:]) / 2
    x = (x_edges[:-1] + x_edges[1:]) / 2
    return torch.stack(torch.meshgrid(y, x, indexing="ij"), dim=-1)


def downscale_pos(pos: Tensor) -> Tensor:
    """Mean of each 2x2 block of positions: ``(2h, 2w, 2) -> (h, w, 2)`` (k-diffusion's ``downscale_pos``)."""
    pos = rearrange(pos, "(h nh) (w nw) e -> h w (nh nw) e", nh=2, nw=2)
    return pos.mean(dim=-2)


def apply_rotary_emb(x: Tensor, theta: Tensor) -> Tensor:
    """Rotate pairs ``(x[..., :d], x[..., d:2d])`` by ``theta`` (``d = theta.shape[-1]``), rest unchanged.

    Args:
        x: ``(..., d_head)`` with ``2 * d <= d_head``.
        theta: broadcastable to ``(..., d)``.
    Returns:
        ``(..., d_head)`` in ``x``'s dtype; the rotation runs in at least fp32.
    """
    d = theta.shape[-1]
    dtype = reduce(torch.promote_types, (x.dtype, theta.dtype, torch.float32))
    x1, x2, rest = x[..., :d].to(dtype), x[..., d : 2 * d].to(dtype), x[..., 2 * d :]
    cos, sin = torch.cos(theta.to(dtype)), torch.sin(theta.to(dtype))
    y1 = x1 * cos - x2 * sin
    y2 = x2 * cos + x1 * sin
    return torch.cat((y1.to(x.dtype), y2.to(x.dtype), rest), dim=-1)


class AxialRoPESpec(Spec):
    type: Literal["axial_rope"] = "axial_rope"
    min_freq: float = Field(math.pi, gt=0, description="lowest angular frequency")
    max_freq: float = Field(10 * math.pi, gt=0, description="highest angular frequency")


@POS_EMB.register("axial_rope")
class AxialRoPE(PositionalEncoding, nn.Module):
    """2D axial rotary embedding on the first half of each head (HDiT paper, App. E.2, Fig. 11).

    With ``f = d_head // 8``, ``n_heads * f`` log-spaced frequencies are laid out as
    ``(f, n_heads)`` and transposed, so each head gets its own ``f`` frequencies;
    ``theta = cat(pos_y * freqs, pos_x * freqs)`` rotates the first ``4 f`` channels of each head
    (k-diffusion's layout, which also admits some head sizes that 8 does not divide).
    """

    Spec = AxialRoPESpec
    encoding = "relative"

    def __init__(self, spec: AxialRoPESpec | None = None, *, d_head: int, n_heads: int, **_: object) -> None:
        super().__init__()
        self.spec = spec = spec or AxialRoPESpec()
        # k-diffusion's layout: rotate dim = d_head // 2 channels, (dim // 4) frequencies per axis and head,
        # taken from n_heads * dim // 4 log-spaced values. Exact whenever that count is n_heads * (dim // 4).
        per_head = d_head // 2 // 4
        if per_head == 0 or n_heads * (d_head // 2 % 4) >= 4:
            raise ValueError(
                f"axial_rope cannot lay out its frequencies for d_head {d_head} with {n_heads} heads (it needs "
                "d_head >= 8 and n_heads * (d_head // 2 % 4) < 4); use a d_head divisible by 8"
            )
        n_freqs = n_heads * per_head
        log_f = torch.linspace(math.log(spec.min_freq), math.log(spec.max_freq), n_freqs + 1)[:-1]
        self.register_buffer("freqs", log_f.exp().view(per_head, n_heads).T.contiguous())

    def forward(self, pos: Tensor) -> Tensor:
        """``pos (*, 2) -> theta (*, n_heads, 2 * (d_head // 8))`` (``d_head / 4`` when 8 divides it)."""
        freqs = self.freqs.to(pos.dtype)
        theta_y = pos[..., None, 0:1] * freqs
        theta_x = pos[..., None, 1:2] * freqs
        return torch.cat((theta_y, theta_x), dim=-1)


def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]
    return torch.cat((out.sin(), out.cos()), dim=-1)


class SinCos2DSpec(Spec):
    type: Literal["sincos_2d"] = "sincos_2d"


@POS_EMB.register("sincos_2d")
class SinCos2D(PositionalEncoding, nn.Module):
    """Fixed 2D sine-cosine positions over integer token indices (DiT, Peebles & Xie 2023).

    The first half of the channels encodes the column, the second half the row, each as
    ``[sin, cos]`` of ``index * 10000^(-2i/d)``.
    """

    Spec = SinCos2DSpec
    encoding = "absolute"

    def __init__(self, spec: SinCos2DSpec | None = None, *, width: int, **_: object) -> None:
        super().__init__()
        if width % 4:
            raise ValueError(f"sincos_2d needs a width divisible by 4, got {width}")
        self.spec = spec or SinCos2DSpec()
        self.width = width

    def table(self, h: int, w: int, device=None, dtype=None) -> Tensor:
        """The ``(h, w, width)`` table of positions."""
        cols = _sincos_1d(self.width // 2, torch.arange(w))
        rows = _sincos_1d(self.width // 2, torch.arange(h))
        grid = torch.cat((cols[None, :, :].expand(h, w, -1), rows[:, None, :].expand(h, w, -1)), dim=-1)
        return grid.to(device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``: adds the table."""
        return x + self.table(x.shape[1], x.shape[2], x.device, x.dtype)


class LearnedPosEmbSpec(Spec):
    type: Literal["learned"] = "learned"
    init_std: float = Field(0.02, ge=0, description="std of the truncated-normal initialisation")


@POS_EMB.register("learned")
class LearnedPosEmb(PositionalEncoding, nn.Module):
    """Learned absolute positions, one vector per token of the training grid (U-ViT, Bao et al. 2023).

    At another grid size the table is resized bicubically, so a model still runs (with a
    quality cost) at resolutions it was not trained on.
    """

    Spec = LearnedPosEmbSpec
    encoding = "absolute"
    learned = True

    def __init__(
        self, spec: LearnedPosEmbSpec | None = None, *, width: int, grid_size: tuple[int, int], **_: object
    ) -> None:
        super().__init__()
        self.spec = spec = spec or LearnedPosEmbSpec()
        self.weight = nn.Parameter(torch.empty(grid_size[0], grid_size[1], width))
        nn.init.trunc_normal_(self.weight, std=spec.init_std)

    def table(self, h: int, w: int) -> Tensor:
        """The ``(h, w, width)`` table, resized when ``(h, w)`` differs from the training grid."""
        if (h, w) == tuple(self.weight.shape[:2]):
            return self.weight
        grid = self.weight.permute(2, 0, 1)[None]
        return F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``."""
        return x + self.table(x.shape[1], x.shape[2]).to(x.dtype)


class NoPosEmbSpec(Spec):
    type: Literal["none"] = "none"


@POS_EMB.register("none")
class NoPosEmb(PositionalEncoding, nn.Module):
    """No positional information."""

    Spec = NoPosEmbSpec
    encoding = "none"

    def __init__(self, spec: NoPosEmbSpec | None = None, **_: object) -> None:
        super().__init__()
        self.spec = spec or NoPosEmbSpec()

    def forward(self, x: Tensor) -> Tensor:
        """Identity on ``(B, H, W, C)``."""
        return x
