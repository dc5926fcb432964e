"""Conditioning: Fourier features and the mapping network.

HDiT (Crowson et al. 2024, arXiv 2401.11605), App. E.3 and Fig. 12: random Fourier features (after
Karras et al. 2022) for the noise level and the augmentation, a learned class embedding, and mapping
blocks shaped like the GEGLU FFN block.

The mapping turns the noise level (and optional class, augmentation and extra conditioning)
into one vector per sample that every adaptive norm of the backbone reads.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from hourglass.nn._init import tag_lr_group, zero_init
from hourglass.nn.norm import rms_norm
from hourglass.registry import MAPPING, Contract
from hourglass.spec import Spec

__all__ = ["ConditioningMapping", "FourierFeatures", "MappingNetwork", "MappingNetworkSpec", "AUG_COND_DIM"]

AUG_COND_DIM = 9  # the non-leaking augmentation's description (see hourglass.data.augment)


class ConditioningMapping(Contract):
    """Contract of the ``mapping`` family: the network that turns the conditions into one vector.

    Built with context ``num_classes`` and ``mapping_cond_dim``; called as
    ``forward(sigma (B,), class_cond (B,) | None, aug_cond (B, 9) | None, mapping_cond (B, d) | None)
    -> (B, width)``; instances expose ``width``, the width of that vector.
    """

    #: width of the conditioning vector it returns
    width: int
    #: a model that builds it sets the spec's ``width`` to its token width unless the recipe sets one
    #: (DiT's embedder: ``c`` is as wide as the tokens)
    width_follows_model: ClassVar[bool] = False

    @classmethod
    def embeds_aug(cls, spec: Spec) -> bool:
        """Whether the mapping built from ``spec`` embeds ``aug_cond`` (else augmentation would leak)."""
        return False


MAPPING.set_contract(ConditioningMapping)


class FourierFeatures(nn.Module):
    """``F(v) = [cos 2 pi v W^T, sin 2 pi v W^T]`` with fixed ``W ~ N(0, std^2)`` of shape ``(out/2, in)``."""

    def __init__(self, in_features: int, out_features: int, std: float = 1.0) -> None:
        super().__init__()
        if out_features % 2:
            raise ValueError(f"FourierFeatures needs an even out_features, got {out_features}")
        self.register_buffer("weight", torch.randn(out_features // 2, in_features) * std)

    def forward(self, v: Tensor) -> Tensor:
        """``(B, in) -> (B, out)``."""
        f = 2 * math.pi * v @ self.weight.T.to(v.dtype)
        return torch.cat((f.cos(), f.sin()), dim=-1)


class _Norm(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.scale, 1e-6)


class _MappingBlock(nn.Module):
    """``x + Down(Drop(GEGLU(Up(RMSNorm(x)))))``."""

    def __init__(self, width: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm = _Norm(width)
        self.up_proj = nn.Linear(width, 2 * d_ff, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.down_proj = zero_init(nn.Linear(d_ff, width, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.up_proj(self.norm(x)).chunk(2, dim=-1)
        return x + self.down_proj(self.dropout(value * nn.functional.gelu(gate)))


class MappingNetworkSpec(Spec):
    type: Literal["hdit"] = "hdit"
    depth: int = Field(2, ge=0, description="number of GEGLU blocks")
    width: int = Field(256, gt=0, description="conditioning width m (every adaptive norm reads this)")
    d_ff: int | None = Field(None, gt=0, description="hidden size of each block; default 3 x width")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout inside the blocks")


@MAPPING.register("hdit")
class MappingNetwork(ConditioningMapping, nn.Module):
    """HDiT's conditioning (HDiT paper, App. E.3, Fig. 12).

    ``cond = Mapping(time + aug + class + extra)`` where ``time = Linear(F_1(ln(sigma)/4))``,
    ``aug = Linear(F_9(aug_cond))``, ``class = Embedding(num_classes + 1, m)`` (the last row is the
    "no class" of classifier-free guidance) and ``extra = Linear(mapping_cond)``.
    The Mapping is ``RMSNorm -> depth x GEGLU block -> RMSNorm`` and trains at lr/3.

    Context:
        num_classes: number of real classes (0: unconditional).
        mapping_cond_dim: width of the extra conditioning vector (0: none).
    """

    Spec = MappingNetworkSpec

    @classmethod
    def embeds_aug(cls, spec: Spec) -> bool:
        """Always: HDiT's mapping has an augmentation embedding."""
        return True

    def __init__(self, spec: MappingNetworkSpec | None = None, *, num_classes: int = 0, mapping_cond_dim: int = 0):
        super().__init__()
        self.spec = spec = spec or MappingNetworkSpec()
        m = spec.width
        self.width = m
        self.num_classes = num_classes
        self.mapping_cond_dim = mapping_cond_dim
        self.time_emb = FourierFeatures(1, m)
        self.time_in_proj = nn.Linear(m, m, bias=False)
        self.aug_emb = FourierFeatures(9, m)
        self.aug_in_proj = nn.Linear(m, m, bias=False)
        self.class_emb = nn.Embedding(num_classes + 1, m) if num_classes else None
        self.cond_in_proj = nn.Linear(mapping_cond_dim, m, bias=False) if mapping_cond_dim else None
        net = nn.Module()
        net.in_norm = _Norm(m)
        net.blocks = nn.ModuleList(_MappingBlock(m, spec.d_ff or 3 * m, spec.dropout) for _ in range(spec.depth))
        net.out_norm = _Norm(m)
        self.net = tag_lr_group(net, "mapping")

    def forward(
        self,
        sigma: Tensor,
        class_cond: Tensor | None = None,
        aug_cond: Tensor | None = None,
        mapping_cond: Tensor | None = None,
    ) -> Tensor:
        """``sigma (B,)``, ``class_cond (B,)`` int, ``aug_cond (B, 9)``, ``mapping_cond (B, d)`` -> ``(B, m)``."""
        c_noise = torch.log(sigma) / 4
        dtype = self.time_in_proj.weight.dtype
        x = self.time_in_proj(self.time_emb(c_noise[:, None].to(dtype)))
        if aug_cond is None:
            aug_cond = sigma.new_zeros((sigma.shape[0], AUG_COND_DIM), dtype=dtype)
        x = x + self.aug_in_proj(self.aug_emb(aug_cond.to(dtype)))
        if self.class_emb is not None:
            x = x + self.class_emb(class_cond)
        if self.cond_in_proj is not None:
            x = x + self.cond_in_proj(mapping_cond.to(dtype))
        x = self.net.in_norm(x)
        for block in self.net.blocks:
            x = block(x)
        return self.net.out_norm(x)

    def extra_repr(self) -> str:
        return f"width={self.width}, num_classes={self.num_classes}, mapping_cond_dim={self.mapping_cond_dim}"
