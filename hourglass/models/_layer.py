"""The transformer layer every model is built from.

HDiT's block (Crowson et al. 2024, arXiv 2401.11605, Sec. 4.2, Fig. 4); DiT's and U-ViT's blocks are the same
layer with other components.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from hourglass.registry import ATTENTION, FFN, NORM

__all__ = ["TransformerLayer"]


def _residual(x: Tensor, h: Tensor, gate: Tensor | None) -> Tensor:
    return x + (h if gate is None else gate * h)


class TransformerLayer(nn.Module):
    """Pre-norm attention block then FFN block, both residual.

    ``x = x + Attn(Norm(x, cond))``; ``x = x + FFN(Norm(x, cond))``; an adaLN-Zero norm also
    gates each branch. An attention of kind ``none`` leaves an FFN-only layer.

    Args:
        width: channels. d_ff: FFN hidden size. cond_dim: width of the conditioning vector.
        attention, ffn, norm, pos_emb: component specs. layer_index: index within the level.
        dropout: dropout rate of both blocks.
    """

    def __init__(
        self,
        *,
        width: int,
        d_ff: int,
        cond_dim: int,
        attention: Any,
        ffn: Any,
        norm: Any,
        pos_emb: Any = None,
        layer_index: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not ATTENTION.get(attention.type).mixes_tokens():
            self.attn_norm = self.attn = None
        else:
            self.attn_norm = NORM.build(norm, width=width, cond_dim=cond_dim)
            self.attn = ATTENTION.build(
                attention, width=width, pos_emb=pos_emb, layer_index=layer_index, dropout=dropout
            )
        self.ffn_norm = NORM.build(norm, width=width, cond_dim=cond_dim)
        self.ffn = FFN.build(ffn, width=width, d_ff=d_ff, dropout=dropout)

    def forward(self, x: Tensor, pos: Tensor, cond: Tensor) -> Tensor:
        """``x (B, H, W, C)``, ``pos (H, W, 2)``, ``cond (B, cond_dim)`` -> ``(B, H, W, C)``."""
        if self.attn is not None:
            h, gate = self.attn_norm(x, cond)
            x = _residual(x, self.attn(h, pos), gate)
        h, gate = self.ffn_norm(x, cond)
        return _residual(x, self.ffn(h), gate)
