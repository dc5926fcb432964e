"""Feed-forward networks.

HDiT (Crowson et al. 2024, arXiv 2401.11605) uses GEGLU (Shazeer 2020) with ``d_ff = 3 width``
(Sec. 4.2, Fig. 5; Sec. 5.2, step C); DiT and U-ViT use a GELU MLP with ``d_ff = 4 width``.

Every FFN maps ``(B, *, width) -> (B, *, width)`` through a hidden size ``d_ff`` given by its
level; dropout sits on the hidden activations, and the output projection is zero-initialised
by default (HDiT), or not (DiT, whose adaLN-Zero gate closes the branch instead).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from hourglass.nn._init import zero_init
from hourglass.registry import FFN
from hourglass.spec import Spec

__all__ = ["GEGLU", "GEGLUSpec", "GELUMLP", "GELUMLPSpec", "SwiGLU", "SwiGLUSpec"]


class _FFNSpec(Spec):
    bias: bool = Field(False, description="biases on the up and down projections")
    zero_init: bool = Field(True, description="zero-initialise the down projection")


class _GatedFFN(nn.Module):
    """``Down(Drop(act(gate) * value))`` with ``Up`` producing ``[value, gate]`` (in that order)."""

    def __init__(self, spec: _FFNSpec, *, width: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.up_proj = nn.Linear(width, 2 * d_ff, bias=spec.bias)
        self.dropout = nn.Dropout(dropout)
        self.down_proj = nn.Linear(d_ff, width, bias=spec.bias)
        if spec.zero_init:
            zero_init(self.down_proj)

    def activation(self, gate: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """``(B, *, width) -> (B, *, width)``."""
        value, gate = self.up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.dropout(value * self.activation(gate)))


class GEGLUSpec(_FFNSpec):
    type: Literal["geglu"] = "geglu"


@FFN.register("geglu")
class GEGLU(_GatedFFN):
    """GEGLU (Shazeer 2020): ``value * GELU(gate)`` with exact erf GELU (HDiT paper, Sec. 4.2, Fig. 5)."""

    Spec = GEGLUSpec

    def activation(self, gate: Tensor) -> Tensor:
        return F.gelu(gate)


class SwiGLUSpec(_FFNSpec):
    type: Literal["swiglu"] = "swiglu"


@FFN.register("swiglu")
class SwiGLU(_GatedFFN):
    """SwiGLU (Shazeer 2020): ``value * SiLU(gate)``."""

    Spec = SwiGLUSpec

    def activation(self, gate: Tensor) -> Tensor:
        return F.silu(gate)


class GELUMLPSpec(_FFNSpec):
    type: Literal["gelu_mlp"] = "gelu_mlp"
    approximate: Literal["tanh", "none"] = Field("tanh", description="GELU variant: 'tanh' (DiT) or exact 'none'")


@FFN.register("gelu_mlp")
class GELUMLP(nn.Module):
    """Two-layer MLP ``Down(Drop(GELU(Up(x))))`` (DiT, Peebles & Xie 2023; U-ViT, Bao et al. 2023)."""

    Spec = GELUMLPSpec

    def __init__(self, spec: GELUMLPSpec, *, width: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.up_proj = nn.Linear(width, d_ff, bias=spec.bias)
        self.dropout = nn.Dropout(dropout)
        self.down_proj = nn.Linear(d_ff, width, bias=spec.bias)
        if spec.zero_init:
            zero_init(self.down_proj)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, *, width) -> (B, *, width)``."""
        return self.down_proj(self.dropout(F.gelu(self.up_proj(x), approximate=self.spec.approximate)))
