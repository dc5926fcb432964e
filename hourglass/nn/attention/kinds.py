"""Attention kinds: global, neighborhood, shifted window and none.

HDiT (Crowson et al. 2024, arXiv 2401.11605) uses neighborhood attention (Hassani et al. 2023; kernel 7,
Table 7) at the high-resolution levels and global attention at the coarsest one or two (Sec. 4.3); its
ablation also tries Swin shifted windows (Liu et al. 2021; Sec. 5.2 and Table 1, step B1). The
shifted-window details (shift, masks) follow the authors' k-diffusion code.

A kind changes the maths (and lives in the recipe); the backend that computes it is a runtime
choice made in :mod:`hourglass.backends` and never changes the ``state_dict``. Each kind declares
its kernel, grid rule, label and MACs (the :class:`~hourglass.nn.attention.kind.AttentionKind`
contract).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from hourglass import backends
from hourglass.nn.attention._base import AttentionSpec, SelfAttention
from hourglass.nn.attention.kind import AttentionKind
from hourglass.registry import ATTENTION
from hourglass.spec import Problem, Spec

__all__ = [
    "GlobalAttention",
    "GlobalAttentionSpec",
    "NeighborhoodAttention",
    "NeighborhoodAttentionSpec",
    "ShiftedWindowAttention",
    "ShiftedWindowAttentionSpec",
    "NoAttention",
    "NoAttentionSpec",
]


class GlobalAttentionSpec(AttentionSpec):
    type: Literal["global"] = "global"


@ATTENTION.register("global")
class GlobalAttention(SelfAttention):
    """Every token attends to every token: O(tokens^2); used at the innermost level(s)."""

    Spec = GlobalAttentionSpec
    kernel = "global"
    connects_all_tokens = True
    rope_pos_in_compute_dtype = True

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        return backends.global_attention(q, k, v, scale=scale, backend=self.backend)

    def attention_macs(self, batch: int, h: int, w: int) -> int:
        n = h * w
        return 2 * batch * n * n * self.width


class NeighborhoodAttentionSpec(AttentionSpec):
    type: Literal["neighborhood"] = "neighborhood"
    kernel_size: int = Field(7, ge=2, description="side of the k x k window each query sees")
    dilation: int = Field(1, ge=1, description="spacing between window taps (DiNAT-style)")


@ATTENTION.register("neighborhood")
class NeighborhoodAttention(SelfAttention):
    """Neighborhood attention (NATTEN semantics): a k x k window clamped inside the grid.

    Every query sees exactly ``k * k`` keys, so cost is O(tokens * k^2).
    """

    Spec = NeighborhoodAttentionSpec
    kernel = "neighborhood"

    @classmethod
    def grid_problems(
        cls, spec: NeighborhoodAttentionSpec, grid: tuple[int, int], layers: Iterable[int] = (0,)
    ) -> list[Problem]:
        """The ``k x k`` window (``k * dilation`` tokens wide) must fit inside the grid."""
        span, side = spec.kernel_size * spec.dilation, min(grid)
        if span <= side:
            return []
        dil = f" (x dilation {spec.dilation})" if spec.dilation != 1 else ""
        return [Problem(
            "kernel_size", f"{spec.kernel_size}{dil} does not fit the {grid[0]}x{grid[1]} token grid",
            f"use kernel_size <= {max(side // spec.dilation, 1)} or an attention kind without a window "
            "(e.g. global) at this level",
        )]

    @classmethod
    def label(cls, spec: NeighborhoodAttentionSpec) -> str:
        """``"neighborhood k7"`` (``" d2"`` appended for a dilation)."""
        return f"neighborhood k{spec.kernel_size}" + (f" d{spec.dilation}" if spec.dilation != 1 else "")

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        return backends.neighborhood_attention(
            q, k, v, self.spec.kernel_size, dilation=self.spec.dilation, scale=scale, backend=self.backend
        )

    def attention_macs(self, batch: int, h: int, w: int) -> int:
        return 2 * batch * h * w * self.spec.kernel_size**2 * self.width


class ShiftedWindowAttentionSpec(AttentionSpec):
    type: Literal["shifted_window"] = "shifted_window"
    window_size: int = Field(8, ge=1, description="side of the s x s windows; must divide the token grid")


@ATTENTION.register("shifted_window")
class ShiftedWindowAttention(SelfAttention):
    """Swin-style windows of s x s tokens, shifted by s/2 on odd layers (as in k-diffusion's HDiT code)."""

    Spec = ShiftedWindowAttentionSpec
    kernel = "shifted_window"

    @classmethod
    def grid_problems(
        cls, spec: ShiftedWindowAttentionSpec, grid: tuple[int, int], layers: Iterable[int] = (0,)
    ) -> list[Problem]:
        """The window side must divide both sides of the grid."""
        s = spec.window_size
        if grid[0] % s == 0 and grid[1] % s == 0:
            return []
        return [Problem("window_size", f"{s} does not divide the {grid[0]}x{grid[1]} token grid",
                        f"use a divisor of {grid[0]} and {grid[1]}")]

    @classmethod
    def label(cls, spec: ShiftedWindowAttentionSpec) -> str:
        """``"shifted_window s8"``."""
        return f"shifted_window s{spec.window_size}"

    @property
    def shift(self) -> int:
        """Shift of this layer: ``s // 2`` on odd layer indices, else 0."""
        return self.spec.window_size // 2 if self.layer_index % 2 == 1 else 0

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        return backends.shifted_window_attention(
            q, k, v, self.spec.window_size, self.shift, scale=scale, backend=self.backend
        )

    def attention_macs(self, batch: int, h: int, w: int) -> int:
        return 2 * batch * h * w * self.spec.window_size**2 * self.width

    def extra_repr(self) -> str:
        return super().extra_repr() + f", window={self.spec.window_size}, shift={self.shift}"


class NoAttentionSpec(Spec):
    type: Literal["none"] = "none"


@ATTENTION.register("none")
class NoAttention(AttentionKind, nn.Module):
    """No token mixing: layers of this kind are FFN-only (the paper's "no attention" ablation)."""

    Spec = NoAttentionSpec

    def __init__(self, spec: NoAttentionSpec | None = None, **_: object) -> None:
        super().__init__()
        self.spec = spec or NoAttentionSpec()

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """Returns zeros ``(B, H, W, C)``: adding it to the residual stream changes nothing."""
        return torch.zeros_like(x)

    def attention_macs(self, batch: int, h: int, w: int) -> int:
        return 0
