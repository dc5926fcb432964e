"""Token merges (down) and decoder skips (up) between levels.

HDiT (Crowson et al. 2024, arXiv 2401.11605): patching and the 2x2 merges and splits (Sec. 4.1,
Fig. 3; App. E.4), the learnable lerp skip (Sec. 4.1, Eq. 2) and its ablation (Table 2).

``merge`` family: a *token merge* turns a ``k x k`` patch of tokens into one token,
``(B, H, W, C) -> (B, H/k, W/k, C')``; it is both the patch embedding (``k = patch_size``, pixels
to tokens) and the downsampling between levels (``k = 2``).
``skip`` family: a *decoder skip* splits each coarse token back into ``2 x 2`` finer ones with a
projection and combines the result with the encoder's skip at that level: ``lerp`` (the paper's
learnable interpolation), ``add`` or ``concat`` (the ablation's variants).
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from hourglass.registry import MERGE, SKIP
from hourglass.spec import Spec, as_pair

__all__ = [
    "TokenMerge",
    "TokenMergeSpec",
    "Unpatch",
    "LerpSkip",
    "LerpSkipSpec",
    "AddSkip",
    "AddSkipSpec",
    "ConcatSkip",
    "ConcatSkipSpec",
]


class TokenMergeSpec(Spec):
    type: Literal["token_merge"] = "token_merge"
    bias: bool = Field(False, description="bias on the merge projection")


@MERGE.register("token_merge")
class TokenMerge(nn.Module):
    """Rearrange ``(h nh) (w nw) c -> h w (nh nw c)`` then ``Linear(nh*nw*c -> out)`` (bias-free).

    Also the patch embedding (with ``patch_size = p``) of HDiT.
    """

    Spec = TokenMergeSpec

    def __init__(
        self,
        spec: TokenMergeSpec | None = None,
        *,
        in_width: int,
        out_width: int,
        patch_size: int | tuple[int, int] = 2,
    ) -> None:
        super().__init__()
        self.spec = spec = spec or TokenMergeSpec()
        self.ph, self.pw = as_pair(patch_size)
        self.proj = nn.Linear(in_width * self.ph * self.pw, out_width, bias=spec.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C) -> (B, H/ph, W/pw, out_width)``."""
        x = rearrange(x, "... (h nh) (w nw) e -> ... h w (nh nw e)", nh=self.ph, nw=self.pw)
        return self.proj(x)

    def extra_repr(self) -> str:
        return f"patch=({self.ph}, {self.pw})"


class Unpatch(nn.Module):
    """``Linear(in -> out*ph*pw)`` then rearrange to the finer grid; no skip (the output patching)."""

    def __init__(self, in_width: int, out_width: int, patch_size: int | tuple[int, int] = 2, bias: bool = False):
        super().__init__()
        self.ph, self.pw = as_pair(patch_size)
        self.proj = nn.Linear(in_width, out_width * self.ph * self.pw, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, in_width) -> (B, H*ph, W*pw, out_width)``."""
        return rearrange(self.proj(x), "... h w (nh nw e) -> ... (h nh) (w nw) e", nh=self.ph, nw=self.pw)


class _SkipSpec(Spec):
    bias: bool = Field(False, description="bias on the up projection")


class _Split(nn.Module):
    """Shared up-projection of the splits. Context: ``in_width`` (coarse), ``out_width`` (fine)."""

    def __init__(self, spec: _SkipSpec, *, in_width: int, out_width: int, patch_size: int = 2) -> None:
        super().__init__()
        self.spec = spec
        self.up = Unpatch(in_width, out_width, patch_size, bias=spec.bias)

    @property
    def proj(self) -> nn.Linear:
        return self.up.proj


class LerpSkipSpec(_SkipSpec):
    type: Literal["lerp"] = "lerp"
    init: float = Field(0.5, description="initial interpolation factor f")


@SKIP.register("lerp")
class LerpSkip(_Split):
    """``x = skip + f * (up(x) - skip)`` with a learnable scalar ``f`` (HDiT paper, Sec. 4.1, Eq. 2)."""

    Spec = LerpSkipSpec

    def __init__(self, spec: LerpSkipSpec | None = None, **context: int) -> None:
        spec = spec or LerpSkipSpec()
        super().__init__(spec, **context)
        self.fac = nn.Parameter(torch.full((1,), float(spec.init)))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """``x (B, h, w, in_width)``, ``skip (B, 2h, 2w, out_width)`` -> ``(B, 2h, 2w, out_width)``."""
        return torch.lerp(skip, self.up(x), self.fac.to(x.dtype))


class AddSkipSpec(_SkipSpec):
    type: Literal["add"] = "add"


@SKIP.register("add")
class AddSkip(_Split):
    """``x = up(x) + skip`` (the ablation's addition skip)."""

    Spec = AddSkipSpec

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """``x (B, h, w, in_width)``, ``skip (B, 2h, 2w, out_width)`` -> ``(B, 2h, 2w, out_width)``."""
        return self.up(x) + skip


class ConcatSkipSpec(_SkipSpec):
    type: Literal["concat"] = "concat"


@SKIP.register("concat")
class ConcatSkip(_Split):
    """``x = Linear(cat(up(x), skip))`` back to ``out_width`` (U-Net / U-ViT style long skip)."""

    Spec = ConcatSkipSpec

    def __init__(self, spec: ConcatSkipSpec | None = None, **context: int) -> None:
        spec = spec or ConcatSkipSpec()
        super().__init__(spec, **context)
        width = context["out_width"]
        self.skip_proj = nn.Linear(2 * width, width, bias=spec.bias)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """``x (B, h, w, in_width)``, ``skip (B, 2h, 2w, out_width)`` -> ``(B, 2h, 2w, out_width)``."""
        return self.skip_proj(torch.cat((self.up(x), skip), dim=-1))
