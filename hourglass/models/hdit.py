"""The Hourglass Diffusion Transformer and its presets.

HDiT (Crowson et al. 2024, arXiv 2401.11605): the architecture of Sec. 4 and Fig. 3; the presets of Table 7.

Levels ``0..L-1``: the encoder runs each outer level's layers, keeps a skip and merges 2x2
tokens; the innermost level runs in the middle; the decoder splits, combines the skip (lerp)
and runs the outer level's layers again, so a non-innermost level has ``2 * depth`` layers.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hourglass.models._checks import check_model_inputs, grid_problems
from hourglass.models._layer import TransformerLayer
from hourglass.nn._groups import param_groups
from hourglass.nn.attention import GlobalAttentionSpec, NeighborhoodAttentionSpec
from hourglass.nn.ffn import GEGLUSpec
from hourglass.nn.mapping import MappingNetworkSpec
from hourglass.nn.merge import LerpSkipSpec, TokenMergeSpec, Unpatch
from hourglass.nn.norm import AdaRMSNormSpec, RMSNorm
from hourglass.nn.pos_emb import AxialRoPESpec, downscale_pos, make_axial_pos
from hourglass.registry import ATTENTION, FFN, MAPPING, MERGE, MODEL, NORM, POS_EMB, SPLIT
from hourglass.spec import Component, Spec

__all__ = ["HDiT", "HDiTSpec", "LevelSpec", "PRESETS"]


class LevelSpec(Spec):
    """One level of the hourglass: its layers, width and attention kind."""

    depth: int = Field(..., ge=1, description="layers on each side (encoder and decoder) of the level")
    width: int = Field(..., gt=0, description="channels of the level's tokens")
    d_ff: int | None = Field(None, gt=0, description="FFN hidden size; default 3 x width")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after attention and inside the FFN")
    attention: Component(ATTENTION) | None = Field(  # type: ignore[valid-type]
        None, description="attention kind and its options; default neighborhood k=7, global at the innermost level"
    )

    @property
    def ffn_width(self) -> int:
        """The FFN hidden size after defaults."""
        return self.d_ff or 3 * self.width


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class HDiTSpec(Spec):
    """Everything that determines an HDiT's weights and maths."""

    type: Literal["hdit"] = "hdit"
    levels: list[LevelSpec] = Field(..., min_length=1, description="outermost (highest resolution) first")
    mapping: Component(MAPPING) = Field(MappingNetworkSpec(), description="conditioning network")  # type: ignore
    patch_size: int | tuple[int, int] = Field(4, description="pixels per token side at level 0")
    in_channels: int = Field(3, gt=0, description="image channels in")
    out_channels: int | None = Field(None, gt=0, description="channels out; default in_channels")
    num_classes: int = Field(0, ge=0, description="real classes (an extra 'no class' row is added); 0 = none")
    mapping_cond_dim: int = Field(0, ge=0, description="width of an extra conditioning vector; 0 = none")
    input_size: int | tuple[int, int] = Field(256, description="training image size (H, W) or side")
    pos_emb: Component(POS_EMB) = Field(AxialRoPESpec(), description="positional encoding")  # type: ignore
    ffn: Component(FFN) = Field(GEGLUSpec(), description="feed-forward network")  # type: ignore
    norm: Component(NORM) = Field(AdaRMSNormSpec(), description="norm and conditioning of every block")  # type: ignore
    merge: Component(MERGE) = Field(TokenMergeSpec(), description="token merge between levels")  # type: ignore
    split: Component(SPLIT) = Field(LerpSkipSpec(), description="token split and skip combination")  # type: ignore

    @model_validator(mode="after")
    def _resolve_and_check(self) -> HDiTSpec:
        levels = []
        for i, level in enumerate(self.levels):
            if level.attention is None:
                default = GlobalAttentionSpec() if i == len(self.levels) - 1 else NeighborhoodAttentionSpec()
                level = level.model_copy(update={"attention": default})
            levels.append(level)
        resolved = self.model_copy(update={"levels": levels})
        problems = grid_problems(resolved.levels, resolved.input_size, resolved.patch_size)
        for i, level in enumerate(levels):
            d_head = getattr(level.attention, "d_head", None)
            if d_head and level.width % d_head:
                problems.append(
                    f"levels[{i}].width: {level.width} is not divisible by levels[{i}].attention.d_head "
                    f"{d_head}; use a multiple of {d_head} or change d_head"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return resolved

    @property
    def resolved_out_channels(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def stride(self) -> tuple[int, int]:
        """Pixels per token side at the innermost level: ``patch * 2^(L-1)``."""
        ph, pw = _pair(self.patch_size)
        f = 2 ** (len(self.levels) - 1)
        return ph * f, pw * f


@MODEL.register("hdit")
class HDiT(nn.Module):
    """Hourglass Diffusion Transformer backbone ``F(x, sigma)`` (HDiT paper, Sec. 4, Fig. 3).

    Args:
        spec: the model's spec; a preset name goes through :func:`hourglass.create_model`.
    """

    Spec = HDiTSpec

    def __init__(self, spec: HDiTSpec) -> None:
        super().__init__()
        self.spec = spec
        self.gradient_checkpointing = False
        levels = spec.levels
        ph, pw = _pair(spec.patch_size)
        w0 = levels[0].width
        self.patch_in = MERGE.build(spec.merge, in_width=spec.in_channels, out_width=w0, patch_size=(ph, pw))
        self.abs_pos_emb = None
        if getattr(POS_EMB.get(spec.pos_emb.type), "kind", None) == "absolute":
            self.abs_pos_emb = POS_EMB.build(spec.pos_emb, width=w0, grid_size=self.grid_size(0))
        self.mapping = MAPPING.build(spec.mapping, num_classes=spec.num_classes, mapping_cond_dim=spec.mapping_cond_dim)
        cond_dim = self.mapping.width

        def make_level(level: LevelSpec, start: int) -> nn.ModuleList:
            return nn.ModuleList(
                TransformerLayer(
                    width=level.width, d_ff=level.ffn_width, cond_dim=cond_dim, attention=level.attention,
                    ffn=spec.ffn, norm=spec.norm, pos_emb=spec.pos_emb, layer_index=start + j,
                    dropout=level.dropout,
                )
                for j in range(level.depth)
            )

        self.encoder = nn.ModuleList(make_level(level, 0) for level in levels[:-1])
        self.middle = make_level(levels[-1], 0)
        self.decoder = nn.ModuleList(make_level(level, level.depth) for level in levels[:-1])
        pairs = list(zip(levels[:-1], levels[1:], strict=True))
        self.merges = nn.ModuleList(MERGE.build(spec.merge, in_width=a.width, out_width=b.width) for a, b in pairs)
        self.splits = nn.ModuleList(SPLIT.build(spec.split, in_width=b.width, out_width=a.width) for a, b in pairs)
        self.out_norm = RMSNorm(width=w0)
        self.patch_out = Unpatch(w0, spec.resolved_out_channels, (ph, pw))
        nn.init.zeros_(self.patch_out.proj.weight)

    def grid_size(self, level: int, input_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """Token grid ``(h, w)`` at ``level`` for an image of ``input_size`` (default the spec's)."""
        h, w = _pair(input_size if input_size is not None else self.spec.input_size)
        ph, pw = _pair(self.spec.patch_size)
        return h // ph // 2**level, w // pw // 2**level

    def param_groups(self, lr: float = 5e-4, weight_decay: float = 1e-2, mapping_lr_scale: float = 1 / 3):
        """AdamW groups: decay only Linear weights; mapping network and adaptive norms at lr/3."""
        return param_groups(self, lr, weight_decay, mapping_lr_scale)

    def set_gradient_checkpointing(self, enabled: bool = True) -> HDiT:
        """Recompute each layer in the backward pass instead of storing its activations."""
        self.gradient_checkpointing = enabled
        return self

    def _run(self, layers: nn.ModuleList, x: Tensor, pos: Tensor, cond: Tensor) -> Tensor:
        for layer in layers:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, pos, cond, use_reentrant=False)
            else:
                x = layer(x, pos, cond)
        return x

    def forward(
        self,
        x: Tensor,
        sigma: Tensor | float,
        class_cond: Tensor | None = None,
        aug_cond: Tensor | None = None,
        mapping_cond: Tensor | None = None,
    ) -> Tensor:
        """Backbone output ``F`` (before preconditioning).

        Args:
            x: ``(B, C_in, H, W)``, H and W divisible by ``patch * 2^(levels-1)``.
            sigma: ``(B,)`` or a scalar noise level (> 0).
            class_cond: ``(B,)`` int64 in ``[0, num_classes]`` (``num_classes`` = no class).
            aug_cond: ``(B, 9)`` augmentation description, zeros if None.
            mapping_cond: ``(B, mapping_cond_dim)``.
        Returns:
            ``(B, C_out, H, W)``.
        """
        sigma = check_model_inputs(self.spec, x, sigma, class_cond, aug_cond, mapping_cond)
        x = self.patch_in(x.movedim(1, -1))
        if self.abs_pos_emb is not None:
            x = self.abs_pos_emb(x)
        pos = make_axial_pos(x.shape[1], x.shape[2], device=x.device)
        cond = self.mapping(sigma, class_cond, aug_cond, mapping_cond)
        skips = []
        for level, merge in zip(self.encoder, self.merges, strict=True):
            x = self._run(level, x, pos, cond)
            skips.append((x, pos))
            x = merge(x)
            pos = downscale_pos(pos)
        x = self._run(self.middle, x, pos, cond)
        for level, split, (skip, pos) in reversed(list(zip(self.decoder, self.splits, skips, strict=True))):
            x = self._run(level, split(x, skip), pos, cond)
        x, _ = self.out_norm(x)
        return self.patch_out(x).movedim(-1, 1)


# -- presets (HDiT paper, Table 7) ---------------------------------------------------------------
def _levels(depths, widths, attentions, dropouts=None) -> list[dict[str, Any]]:
    dropouts = dropouts or [0.0] * len(depths)
    return [
        {"depth": d, "width": w, "attention": a, "dropout": p}
        for d, w, a, p in zip(depths, widths, attentions, dropouts, strict=True)
    ]


_NA7 = {"type": "neighborhood", "kernel_size": 7}
_GLOBAL = {"type": "global"}
_BIG_MAPPING = {"type": "hdit", "depth": 2, "width": 256, "d_ff": 768}


def _imagenet256_like(depths, widths) -> dict[str, Any]:
    return {
        "levels": _levels(depths, widths, [_NA7, _NA7, _GLOBAL]),
        "mapping": _BIG_MAPPING, "num_classes": 1000, "input_size": 256, "patch_size": 4,
    }


PRESETS: dict[str, dict[str, Any]] = {
    # Table 7, ablation step E (= HDiT at 128 px; printed 117M, 31 GFLOP): 117.0M params, 31.4 GMAC.
    "hdit_imagenet128": {
        "levels": _levels([2, 11], [384, 768], [_NA7, _GLOBAL]),
        "mapping": {"type": "hdit", "depth": 1, "width": 768, "d_ff": 2304},
        "num_classes": 1000, "input_size": 128, "patch_size": 4,
    },
    # Table 7, FFHQ-1024 (printed 85M, 206 GFLOP): 85.1M params, 206.1 GMAC; dropout 0.1 on the innermost level.
    "hdit_ffhq1024": {
        "levels": _levels(
            [2, 2, 2, 2, 2], [128, 256, 384, 768, 1024], [_NA7, _NA7, _NA7, _GLOBAL, _GLOBAL],
            [0.0, 0.0, 0.0, 0.0, 0.1],
        ),
        "mapping": _BIG_MAPPING, "num_classes": 0, "input_size": 1024, "patch_size": 4,
    },
    # Table 7, ImageNet-256 (printed 557M, 198 GFLOP): 557.4M params, 197.6 GMAC.
    "hdit_imagenet256": _imagenet256_like([2, 2, 16], [384, 768, 1536]),
    # A size family on the ImageNet-256 layout (NA7, NA7, global); hdit_l is the paper's model.
    "hdit_s": _imagenet256_like([2, 2, 8], [192, 384, 768]),
    "hdit_b": _imagenet256_like([2, 2, 12], [256, 512, 1024]),
    "hdit_l": _imagenet256_like([2, 2, 16], [384, 768, 1536]),
    "hdit_xl": _imagenet256_like([2, 2, 24], [512, 1024, 2048]),
    # Tiny models for tests (32 px).
    "hdit_test": {
        "levels": [
            {"depth": 1, "width": 32, "attention": {"type": "neighborhood", "kernel_size": 3, "d_head": 16}},
            {"depth": 1, "width": 64, "attention": {"type": "global", "d_head": 16}},
        ],
        "mapping": {"type": "hdit", "depth": 1, "width": 32, "d_ff": 64},
        "num_classes": 10, "input_size": 32, "patch_size": 4,
    },
    "hdit_swin_test": {
        "levels": [
            {"depth": 2, "width": 32, "attention": {"type": "shifted_window", "window_size": 4, "d_head": 16}},
            {"depth": 1, "width": 64, "attention": {"type": "global", "d_head": 16}},
        ],
        "mapping": {"type": "hdit", "depth": 1, "width": 32, "d_ff": 64},
        "num_classes": 0, "input_size": 32, "patch_size": 4,
    },
}
