"""Normalisation and conditioning layers.

HDiT (Crowson et al. 2024, arXiv 2401.11605) uses RMSNorm (Zhang & Sennrich 2019) with an adaptive gain
(Sec. 4.2; App. E.3, Eq. 9); DiT uses adaLN-Zero (Peebles & Xie 2023).

Every norm is called as ``norm(x, cond) -> (y, gate)``: ``x`` is ``(B, *, C)`` channels-last,
``cond`` is ``(B, cond_dim)`` (ignored by the unconditional norms) and ``gate`` is ``None``
except for adaLN-Zero, whose gate multiplies the residual branch.
"""

from __future__ import annotations

from functools import reduce
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from hourglass.nn._init import tag_lr_group, zero_init
from hourglass.registry import NORM, Contract
from hourglass.spec import Spec

__all__ = [
    "NormLayer",
    "rms_norm",
    "RMSNorm",
    "RMSNormSpec",
    "AdaRMSNorm",
    "AdaRMSNormSpec",
    "LayerNorm",
    "LayerNormSpec",
    "AdaLayerNormZero",
    "AdaLayerNormZeroSpec",
]


def rms_norm(x: Tensor, scale: Tensor, eps: float) -> Tensor:
    """``x * scale / sqrt(mean(x^2) + eps)`` over the last dim, statistics in at least fp32.

    Args:
        x: ``(..., C)``.
        scale: broadcastable to ``x``.
    """
    dtype = reduce(torch.promote_types, (x.dtype, scale.dtype, torch.float32))
    mean_sq = torch.mean(x.to(dtype) ** 2, dim=-1, keepdim=True)
    return x * (scale.to(dtype) * torch.rsqrt(mean_sq + eps)).to(x.dtype)


def _per_sample(cond: Tensor, x: Tensor) -> Tensor:
    """Reshape ``(B, C)`` to broadcast against ``(B, *, C)``."""
    return cond.view(cond.shape[0], *([1] * (x.ndim - 2)), cond.shape[-1])


class NormLayer(Contract):
    """Contract of the ``norm`` family: ``forward(x (B, *, C), cond (B, cond_dim)) -> (y, gate | None)``.

    Built with context ``width`` and ``cond_dim``. Models that condition through the norms (HDiT,
    DiT) build every norm with their ``cond_dim > 0`` and pass ``cond``; models that condition through
    tokens (U-ViT) build with ``cond_dim = 0`` and pass ``cond = None``, which every unconditional
    norm must accept.

    Class attributes:
        conditional: it reads ``cond`` (an adaptive norm), so it needs ``cond_dim > 0`` and a ``cond``
            tensor; U-ViT refuses such norms.
    """

    conditional: ClassVar[bool] = False

    @classmethod
    def facts(cls) -> dict[str, bool]:
        """``{"conditional": ...}``."""
        return {"conditional": cls.conditional}


NORM.set_contract(NormLayer)


class RMSNormSpec(Spec):
    type: Literal["rms_norm"] = "rms_norm"
    eps: float = Field(1e-6, gt=0, description="added to the mean square")


@NORM.register("rms_norm")
class RMSNorm(NormLayer, nn.Module):
    """RMSNorm with a learnable gain (Zhang & Sennrich 2019); ignores the conditioning."""

    Spec = RMSNormSpec

    def __init__(self, spec: RMSNormSpec | None = None, *, width: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.spec = spec or RMSNormSpec()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, None]:
        """``(B, *, C) -> ((B, *, C), None)``."""
        return rms_norm(x, self.scale, self.spec.eps), None

    def extra_repr(self) -> str:
        return f"{self.scale.shape[0]}, eps={self.spec.eps}"


class AdaRMSNormSpec(Spec):
    type: Literal["ada_rms_norm"] = "ada_rms_norm"
    eps: float = Field(1e-6, gt=0, description="added to the mean square")


@NORM.register("ada_rms_norm")
class AdaRMSNorm(NormLayer, nn.Module):
    """Adaptive RMSNorm: gain ``1 + Linear_nobias(cond)``, the Linear zero-initialised (HDiT paper, App. E.3).

    The projection trains at the mapping network's learning rate (lr/3).
    """

    Spec = AdaRMSNormSpec
    conditional = True

    def __init__(self, spec: AdaRMSNormSpec | None = None, *, width: int, cond_dim: int) -> None:
        super().__init__()
        self.spec = spec or AdaRMSNormSpec()
        self.linear = tag_lr_group(zero_init(nn.Linear(cond_dim, width, bias=False)), "mapping")

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, None]:
        """``(B, *, C), (B, cond_dim) -> ((B, *, C), None)``."""
        return rms_norm(x, _per_sample(self.linear(cond), x) + 1, self.spec.eps), None


class LayerNormSpec(Spec):
    type: Literal["layer_norm"] = "layer_norm"
    eps: float = Field(1e-6, gt=0, description="added to the variance")
    affine: bool = Field(True, description="learnable gain and bias")


@NORM.register("layer_norm")
class LayerNorm(NormLayer, nn.Module):
    """Plain LayerNorm (pre-LN blocks of U-ViT); ignores the conditioning."""

    Spec = LayerNormSpec

    def __init__(self, spec: LayerNormSpec | None = None, *, width: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.spec = spec or LayerNormSpec()
        self.norm = nn.LayerNorm(width, eps=self.spec.eps, elementwise_affine=self.spec.affine)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, None]:
        """``(B, *, C) -> ((B, *, C), None)``."""
        return self.norm(x), None


class AdaLayerNormZeroSpec(Spec):
    type: Literal["ada_layer_norm_zero"] = "ada_layer_norm_zero"
    eps: float = Field(1e-6, gt=0, description="added to the variance")


@NORM.register("ada_layer_norm_zero")
class AdaLayerNormZero(NormLayer, nn.Module):
    """DiT's adaLN-Zero (Peebles & Xie 2023): LayerNorm without affine, then ``x * (1 + scale) + shift``.

    ``(shift, scale, gate) = Linear(SiLU(cond))``, zero-initialised, so each residual branch
    starts closed. Equivalent to one ``Linear(d -> 6d)`` per DiT block split per sub-layer.
    """

    Spec = AdaLayerNormZeroSpec
    conditional = True

    def __init__(self, spec: AdaLayerNormZeroSpec | None = None, *, width: int, cond_dim: int) -> None:
        super().__init__()
        self.spec = spec or AdaLayerNormZeroSpec()
        self.norm = nn.LayerNorm(width, eps=self.spec.eps, elementwise_affine=False)
        self.linear = tag_lr_group(zero_init(nn.Linear(cond_dim, 3 * width)), "mapping")

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, *, C), (B, cond_dim) -> ((B, *, C), gate (B, *1, C))``."""
        shift, scale, gate = _per_sample(self.linear(nn.functional.silu(cond)), x).chunk(3, dim=-1)
        return self.norm(x) * (1 + scale) + shift, gate
