"""hourglass-dinat: dilated neighborhood attention (DiNAT) as an hourglass attention kind.

DiNAT (Hassani & Shi, "Dilated Neighborhood Attention Transformer", 2022) interleaves plain
neighborhood attention (dilation 1: local detail) with *dilated* neighborhood attention
(dilation ``d > 1``: each query attends to a ``k x k`` window whose taps are ``d`` tokens apart,
a sparse global view) in consecutive layers. This plugin registers attention kind ``dinat``:
layer ``i`` of a level uses ``dilations[i % len(dilations)]`` (decoder layers continue the
count, as the model passes ``layer_index``), and computes through
:func:`hourglass.plugin.neighborhood_attention`: its kernel is ``neighborhood``, so every
neighborhood backend (pure PyTorch, NATTEN, flex) runs it, ``[runtime.backends] neighborhood``
pins it, and the weights are those of any hourglass attention kind. Its grid rule (every layer's
window must fit its level's token grid) is checked when a recipe is validated.

Enable it in a recipe::

    [[model.levels]]
    depth = 2
    width = 128
    attention = { type = "dinat", kernel_size = 7, dilations = [1, 2] }

The plugin's entry point (group ``hourglass.plugins``) is :func:`register`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Literal

from pydantic import field_validator
from torch import Tensor

from hourglass.plugin import AttentionSpec, Field, Problem, SelfAttention, neighborhood_attention
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
    kernel = "neighborhood"

    @staticmethod
    def layer_dilation(spec: DilatedNeighborhoodAttentionSpec, layer_index: int, grid: tuple[int, int]) -> int:
        """The dilation of layer ``layer_index`` on an ``h x w`` grid (after clamping, if enabled).

        Returns:
            ``d = dilations[layer_index % len(dilations)]``, or with ``clamp_dilation``
            ``max(1, min(d, min(h, w) // kernel_size))``.
        """
        d = spec.dilations[layer_index % len(spec.dilations)]
        if not spec.clamp_dilation:
            return d
        return max(1, min(d, min(grid) // spec.kernel_size))

    @classmethod
    def grid_problems(
        cls, spec: DilatedNeighborhoodAttentionSpec, grid: tuple[int, int], layers: Iterable[int] = (0,)
    ) -> list[Problem]:
        """Every layer's ``k x k`` window, ``kernel_size * dilation`` tokens wide, must fit the grid."""
        side = min(grid)
        if spec.kernel_size > side:
            return [Problem("kernel_size", f"{spec.kernel_size} does not fit the {grid[0]}x{grid[1]} token grid",
                            f"use kernel_size <= {side} or global attention at this level")]
        cycle = itertools.islice(layers, len(spec.dilations))  # consecutive layers: one cycle covers them all
        wide = sorted({d for i in cycle if spec.kernel_size * (d := cls.layer_dilation(spec, i, grid)) > side})
        if wide:
            return [Problem("dilations", f"dilation {wide[0]} spreads the {spec.kernel_size}x{spec.kernel_size} "
                            f"window over {spec.kernel_size * wide[0]} tokens, more than the {grid[0]}x{grid[1]} "
                            "token grid", f"use dilations <= {side // spec.kernel_size} or clamp_dilation = true")]
        return []

    @classmethod
    def label(cls, spec: DilatedNeighborhoodAttentionSpec) -> str:
        """``"dinat k7 d1,2"``."""
        return f"dinat k{spec.kernel_size} d{','.join(map(str, spec.dilations))}"

    @property
    def dilation(self) -> int:
        """This layer's configured dilation, ``dilations[layer_index % len(dilations)]``."""
        dilations = self.spec.dilations
        return dilations[self.layer_index % len(dilations)]

    def dilation_at(self, h: int, w: int) -> int:
        """The dilation used on an ``h x w`` token grid (see :meth:`layer_dilation`)."""
        return self.layer_dilation(self.spec, self.layer_index, (h, w))

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
