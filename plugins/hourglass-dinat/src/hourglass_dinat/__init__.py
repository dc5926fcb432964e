"""hourglass-dinat: dilated neighborhood attention (DiNAT) as an hourglass attention kind.

DiNAT (Hassani & Shi, "Dilated Neighborhood Attention Transformer", 2022) interleaves plain
neighborhood attention (dilation 1: local detail) with *dilated* neighborhood attention
(dilation ``d > 1``: each query attends to a ``k x k`` window whose taps are ``d`` tokens apart,
a sparse global view) in consecutive layers. This plugin registers attention kind ``dinat``:
layer ``i`` of a level uses ``dilations[i % len(dilations)]`` (decoder layers continue the
count, as the model passes ``layer_index``), and computes through
:func:`hourglass.plugin.neighborhood_attention`, so every neighborhood backend (pure PyTorch,
NATTEN, flex) runs it and the weights are those of any hourglass attention kind.

Enable it in a recipe::

    [[model.levels]]
    depth = 2
    width = 128
    attention = { type = "dinat", kernel_size = 7, dilations = [1, 2] }

The plugin's entry point (group ``hourglass.plugins``) is :func:`register`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator
from torch import Tensor

from hourglass.plugin import BACKENDS, AttentionSpec, Field, SelfAttention, neighborhood_attention
from hourglass.plugin import register as register_component

__all__ = ["DilatedNeighborhoodAttention", "DilatedNeighborhoodAttentionSpec", "register", "__version__"]

__version__ = "0.1.0"


class DilatedNeighborhoodAttentionSpec(AttentionSpec):
    """Options of the ``dinat`` attention kind (plus the shared :class:`AttentionSpec` fields)."""

    type: Literal["dinat"] = "dinat"
    kernel_size: int = Field(7, ge=2, description="side of the k x k window each query sees")
    dilations: tuple[int, ...] = Field(
        (1, 2), min_length=1,
        description="dilation of layer i is dilations[i % len(dilations)]; DiNAT alternates 1 (local) "
        "and a larger value (sparse, wide context)",
    )
    clamp_dilation: bool = Field(
        True,
        description="on a token grid too small for kernel_size * dilation, use the largest dilation that "
        "fits (min side // kernel_size, at least 1), as DiNAT sizes dilation to each stage's resolution; "
        "false: raise instead",
    )

    @field_validator("dilations")
    @classmethod
    def _dilations_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [d for d in value if d < 1]
        if bad:
            raise ValueError(
                f"every dilation must be an integer >= 1, got {list(value)}; "
                "use e.g. [1, 2] (DiNAT alternates dilation 1 with a larger one)"
            )
        return value


class DilatedNeighborhoodAttention(SelfAttention):
    """Dilated neighborhood attention, DiNAT-style: the dilation cycles over the layers of a level.

    Layer ``layer_index`` attends, for each query, to a ``k x k`` window of keys spaced
    ``d = dilations[layer_index % len(dilations)]`` tokens apart, within the query's dilated
    sub-grid and shifted inside the grid at the borders (NATTEN semantics, see
    :func:`hourglass.plugin.neighborhood_attention`). Cost is O(tokens * k^2) for every ``d``.
    """

    Spec = DilatedNeighborhoodAttentionSpec
    backends = BACKENDS["neighborhood"]

    @property
    def dilation(self) -> int:
        """This layer's configured dilation, ``dilations[layer_index % len(dilations)]``."""
        dilations = self.spec.dilations
        return dilations[self.layer_index % len(dilations)]

    def dilation_at(self, h: int, w: int) -> int:
        """The dilation used on an ``h x w`` token grid (after clamping, if enabled).

        Args:
            h, w: token grid of the level.

        Returns:
            ``dilation``, or with ``clamp_dilation`` ``max(1, min(dilation, min(h, w) // kernel_size))``.
        """
        if not self.spec.clamp_dilation:
            return self.dilation
        return max(1, min(self.dilation, min(h, w) // self.spec.kernel_size))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """``q, k, v (B, H, W, n_heads, d_head)`` -> ``(B, H, W, n_heads, d_head)``.

        Raises:
            ValueError: ``kernel_size * dilation`` exceeds the grid (with ``clamp_dilation`` off,
                or a kernel larger than the grid); the message names both and the fix.
        """
        dilation = self.dilation_at(q.shape[1], q.shape[2])
        return neighborhood_attention(
            q, k, v, self.spec.kernel_size, dilation=dilation, scale=scale, backend=self.backend
        )

    def attention_macs(self, batch: int, h: int, w: int) -> int:
        """``q k^T`` and ``a v``: ``2 * batch * h * w * k^2 * width`` (independent of the dilation)."""
        return 2 * batch * h * w * self.spec.kernel_size**2 * self.width

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernel_size={self.spec.kernel_size}, dilation={self.dilation}"


def register() -> None:
    """Entry point of group ``hourglass.plugins``: registers attention kind ``dinat``."""
    register_component("attention", "dinat", DilatedNeighborhoodAttention)
