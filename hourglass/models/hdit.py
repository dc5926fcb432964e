"""The Hourglass Diffusion Transformer and its presets.

HDiT (Crowson et al. 2024, arXiv 2401.11605): the architecture of Sec. 4 and Fig. 3; the presets of Table 7.

Levels ``0..L-1``: the encoder runs each outer level's layers, keeps a skip and merges 2x2
tokens; the innermost level runs in the middle; the decoder splits, combines the skip (lerp)
and runs the outer level's layers again, so a non-innermost level has ``2 * depth`` layers.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

from pydantic import Field, model_validator
from torch import Tensor, nn

from hourglass.models._layer import TransformerLayer
from hourglass.models.base import AttentionSite, Backbone, BackboneSpec, Stage
from hourglass.models.factory import register_preset
from hourglass.nn.attention import GlobalAttentionSpec, NeighborhoodAttentionSpec
from hourglass.nn.ffn import GEGLUSpec
from hourglass.nn.mapping import MappingNetworkSpec
from hourglass.nn.merge import LerpSkipSpec, TokenMergeSpec, Unpatch
from hourglass.nn.norm import AdaRMSNormSpec, RMSNorm
from hourglass.nn.pos_emb import AxialRoPESpec, downscale_pos, make_axial_pos
from hourglass.registry import ATTENTION, FFN, MAPPING, MERGE, MODEL, NORM, POS_EMB, SKIP
from hourglass.spec import Component, Spec, as_pair, raise_problems

__all__ = ["HDiT", "HDiTSpec", "LevelSpec", "PRESETS", "grow"]


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


class HDiTSpec(BackboneSpec):
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
    merge: Component(MERGE) = Field(  # type: ignore[valid-type]
        TokenMergeSpec(), description="token merge: k x k tokens into one (patch embedding with k = patch_size, "
        "and 2 x 2 between levels)"
    )
    skip: Component(SKIP) = Field(  # type: ignore[valid-type]
        LerpSkipSpec(), description="decoder skip: split each token back to 2 x 2 and combine with the encoder's skip"
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "split" in data:
            warnings.warn(
                "the hdit model key 'split' was renamed 'skip' (it chooses how the decoder combines the "
                "encoder's skip); rename it in the recipe: skip = ...", FutureWarning, stacklevel=2,
            )
            data = {("skip" if k == "split" else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _resolve_and_check(self) -> HDiTSpec:
        levels = []
        for i, level in enumerate(self.levels):
            if level.attention is None:
                default = GlobalAttentionSpec() if i == len(self.levels) - 1 else NeighborhoodAttentionSpec()
                level = level.model_copy(update={"attention": default})
            levels.append(level)
        resolved = self.model_copy(update={"levels": levels})
        raise_problems(resolved.shape_problems())
        return resolved

    @property
    def stride(self) -> tuple[int, int]:
        """Pixels per token side at the innermost level: ``patch * 2^(L-1)``."""
        ph, pw = as_pair(self.patch_size)
        f = 2 ** (len(self.levels) - 1)
        return ph * f, pw * f

    @property
    def embeds_aug(self) -> bool:
        """Whether the mapping network embeds ``aug_cond`` (HDiT's does)."""
        return MAPPING.get(self.mapping.type).embeds_aug(self.mapping)

    def level_grid(self, level: int) -> tuple[int, int]:
        """Token grid ``(h, w)`` of ``level`` at ``input_size``."""
        gh, gw = self.token_grid
        return gh // 2**level, gw // 2**level

    def attention_sites(self) -> list[AttentionSite]:
        """One site per level; an outer level's decoder layers continue its encoder's layer count."""
        last = len(self.levels) - 1
        return [
            AttentionSite(
                path=f"levels[{i}].attention", spec=level.attention, width=level.width,
                width_path=f"levels[{i}].width", grid=self.level_grid(i),
                layers=range(level.depth if i == last else 2 * level.depth),
            )
            for i, level in enumerate(self.levels)
        ]


@MODEL.register("hdit")
class HDiT(Backbone):
    """Hourglass Diffusion Transformer backbone ``F(x, sigma)`` (HDiT paper, Sec. 4, Fig. 3).

    Args:
        spec: the model's spec; a preset name goes through :func:`hourglass.create_model`.
    """

    Spec = HDiTSpec
    test_preset = "hdit_test"

    def __init__(self, spec: HDiTSpec) -> None:
        super().__init__()
        self.spec = spec
        levels = spec.levels
        patch = as_pair(spec.patch_size)
        w0 = levels[0].width
        self.patch_in = MERGE.build(spec.merge, in_width=spec.in_channels, out_width=w0, patch_size=patch)
        self.abs_pos_emb = None
        if POS_EMB.get(spec.pos_emb.type).encoding == "absolute":
            self.abs_pos_emb = POS_EMB.build(spec.pos_emb, width=w0, grid_size=spec.level_grid(0))
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
        # the attribute keeps its historical name: it is part of the state_dict of saved models
        self.splits = nn.ModuleList(SKIP.build(spec.skip, in_width=b.width, out_width=a.width) for a, b in pairs)
        self.out_norm = RMSNorm(width=w0)
        self.patch_out = Unpatch(w0, spec.resolved_out_channels, patch)
        nn.init.zeros_(self.patch_out.proj.weight)

    def stages(self) -> list[Stage]:
        """One stage per level, outermost first; an outer level holds its encoder and decoder layers."""
        spec, last = self.spec, len(self.spec.levels) - 1
        return [
            Stage(
                name=str(i),
                prefixes=("middle.",) if i == last else (f"encoder.{i}.", f"decoder.{i}."),
                grid=spec.level_grid(i), extra_tokens=0,
                layers=level.depth if i == last else 2 * level.depth, width=level.width, d_ff=level.ffn_width,
                attention=level.attention, dropout=level.dropout,
            )
            for i, level in enumerate(spec.levels)
        ]

    def _run(self, layers: nn.ModuleList, x: Tensor, pos: Tensor, cond: Tensor) -> Tensor:
        for layer in layers:
            x = self.run_layer(layer, x, pos, cond)
        return x

    def compute(self, x: Tensor, sigma: Tensor, class_cond: Tensor | None, aug_cond: Tensor | None,
                mapping_cond: Tensor | None) -> Tensor:
        """``x (B, C_in, H, W)``, ``sigma (B,)`` -> ``F (B, C_out, H, W)`` (see :meth:`Backbone.forward`)."""
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


GROW_DEPTH = 2


def grow(spec: HDiTSpec | dict[str, Any], resolution: int) -> dict[str, Any]:
    """The HDiT that runs at ``resolution`` the way the paper scales one (HDiT paper, Sec. 4.1, Fig. 3).

    For each doubling of the image side above the spec's ``input_size``, one level is added outside
    the outermost one: a copy of it with depth 2 (2 + 2 layers) and no dropout, so the cost stays
    linear in pixels. At or below the native size only ``input_size`` changes.

    Args:
        spec: an :class:`HDiTSpec` or its plain data (``levels``, ``input_size``, ...).
        resolution: the image side to grow to.

    Returns:
        Plain model data (validate it with ``MODEL.validate``).

    Raises:
        ValueError: ``resolution`` is not the (square) native size times a power of two, or the
            model has no levels.
    """
    data = spec.model_dump(mode="python") if isinstance(spec, BackboneSpec) else dict(spec)
    native_h, native_w = as_pair(data.get("input_size", resolution))
    if resolution > native_h:
        levels = data.get("levels")
        if not isinstance(levels, list) or not levels:
            raise ValueError(f"growing adds levels, so it needs a model with levels; {data.get('type')!r} has none")
        ratio = resolution / native_h
        doublings = round(math.log2(ratio))
        if 2**doublings != ratio or native_h != native_w:
            raise ValueError(
                f"growing adds one level per doubling, so {resolution} must be the native {native_h}x{native_w} "
                f"times a power of two (and the native size square); use e.g. {native_h * 2} or {native_h * 4}"
            )
        new = {**dict(levels[0]), "depth": GROW_DEPTH, "dropout": 0.0}
        data["levels"] = [dict(new) for _ in range(doublings)] + [dict(lv) for lv in levels]
    data["input_size"] = resolution
    return data


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
    # Table 7, ablation step E (= HDiT at 128 px): 117.0M params, 31.4 GMAC.
    "hdit_imagenet128": {
        "levels": _levels([2, 11], [384, 768], [_NA7, _GLOBAL]),
        "mapping": {"type": "hdit", "depth": 1, "width": 768, "d_ff": 2304},
        "num_classes": 1000, "input_size": 128, "patch_size": 4,
    },
    # Table 7, FFHQ-1024: 85.1M params, 206.1 GMAC; dropout 0.1 on the innermost level.
    "hdit_ffhq1024": {
        "levels": _levels(
            [2, 2, 2, 2, 2], [128, 256, 384, 768, 1024], [_NA7, _NA7, _NA7, _GLOBAL, _GLOBAL],
            [0.0, 0.0, 0.0, 0.0, 0.1],
        ),
        "mapping": _BIG_MAPPING, "num_classes": 0, "input_size": 1024, "patch_size": 4,
    },
    # Table 7, ImageNet-256: 557.4M params, 197.6 GMAC.
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

for _name, _config in PRESETS.items():
    register_preset(_name, "hdit", _config)
