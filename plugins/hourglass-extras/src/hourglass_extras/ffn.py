"""Squared-ReLU feed-forward network (So et al. 2021, "Primer", Section 3).

Primer found that squaring the ReLU of a Transformer's FFN (``relu(x)^2``) improves language
modelling at no extra cost; it is an ungated two-layer MLP, cheaper per hidden unit than GEGLU.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from hourglass.plugin import Field, Spec, zero_init

__all__ = ["SquaredReLUMLP", "SquaredReLUMLPSpec"]


class SquaredReLUMLPSpec(Spec):
    """Options of the ``relu2`` FFN."""

    type: Literal["relu2"] = "relu2"
    bias: bool = Field(False, description="biases on the up and down projections")
    zero_init: bool = Field(True, description="zero-initialise the down projection (HDiT)")


class SquaredReLUMLP(nn.Module):
    """Squared-ReLU MLP ``Down(Drop(ReLU(Up(x))^2))`` (Primer, So et al. 2021).

    Context:
        width: channels in and out.
        d_ff: hidden size (the level's FFN width).
        dropout: dropout on the hidden activations.
    """

    Spec = SquaredReLUMLPSpec

    def __init__(self, spec: SquaredReLUMLPSpec, *, width: int, d_ff: int, dropout: float = 0.0, **_: object) -> None:
        super().__init__()
        if width < 1 or d_ff < 1:
            raise ValueError(f"relu2 FFN: width and d_ff must be positive, got width={width}, d_ff={d_ff}")
        self.spec = spec
        self.up_proj = nn.Linear(width, d_ff, bias=spec.bias)
        self.dropout = nn.Dropout(dropout)
        self.down_proj = nn.Linear(d_ff, width, bias=spec.bias)
        if spec.zero_init:
            zero_init(self.down_proj)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, *, width) -> (B, *, width)``."""
        return self.down_proj(self.dropout(F.relu(self.up_proj(x)).square()))

    def extra_repr(self) -> str:
        return f"width={self.up_proj.in_features}, d_ff={self.up_proj.out_features}"
