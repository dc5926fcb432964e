"""DiT, the Diffusion Transformer of Peebles & Xie (2023), built from hourglass parts.

``x (B, C, H, W)`` is cut into ``p x p`` patches (:class:`~hourglass.nn.merge.TokenMerge` with a
bias, i.e. DiT's stride-``p`` convolution), fixed 2D sin-cos positions are added, ``depth``
adaLN-Zero transformer layers run on the ``(B, H/p, W/p, width)`` token grid, and the final layer
(adaLN modulation without gate, zero-initialised ``Linear(width -> p*p*C_out)``) maps back to pixels.

Conditioning: DiT's ``c = t_emb + y_emb`` (MAPPING ``"dit"``). By default the model receives the
noise level ``sigma`` and embeds EDM's continuous ``c_noise = ln(sigma) / 4`` (see
:mod:`hourglass.nn.dit_mapping`), so it plugs into the same Karras preconditioning, samplers and
training loop as HDiT. With ``mapping.time_input = "timestep"`` it receives and embeds DiT's own
DDPM timestep ``t``, as official DiT checkpoints need (with the ``ddpm`` denoiser,
:mod:`hourglass.diffusion.ddpm`; ``hourglass convert dit`` writes such a recipe).

Presets: ``dit_{s,b,l,xl}_{2,4,8}`` are DiT's published networks (Table 1 of the DiT paper): on
4 x 32 x 32 latents of the Stable Diffusion VAE (256 px images), 8 output channels (the noise
prediction and DiT's learned variance, "learned sigma"), 1000 classes (+ "no class"). DiT-XL/2:
675,129,632 parameters, 118.64 GMACs. ``dit_b_4_pixel`` is DiT-B/4 in pixel space at 128 px with
3 output channels, the baseline of HDiT's ablation (Crowson et al. 2024, arXiv 2401.11605,
Sec. 5.2 and Table 1, row R1); any other pixel-space DiT is a preset with overrides, e.g.
``create_model("dit_l_4", in_channels=3, out_channels=3, input_size=256)``.

Every component is a registry field, so a recipe can swap it: ``pos_emb = "axial_rope"``,
``ffn = "geglu"``, ``norm = "ada_rms_norm"``, neighborhood or shifted-window attention on the patch
grid, or HDiT's mapping network.
"""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from hourglass.models._layer import TransformerLayer
from hourglass.models.base import AttentionSite, Backbone, BackboneSpec, Stage
from hourglass.models.factory import register_preset
from hourglass.nn._init import tag_lr_group, zero_init
from hourglass.nn.attention import GlobalAttentionSpec
from hourglass.nn.dit_mapping import DiTEmbedderSpec, augmentation_applied
from hourglass.nn.ffn import GELUMLPSpec
from hourglass.nn.merge import TokenMergeSpec, Unpatch
from hourglass.nn.norm import AdaLayerNormZeroSpec
from hourglass.nn.pos_emb import SinCos2DSpec, make_axial_pos
from hourglass.registry import ATTENTION, FFN, MAPPING, MERGE, MODEL, NORM, POS_EMB
from hourglass.spec import Component, as_pair, raise_problems

__all__ = ["DiT", "DiTSpec", "AdaLNFinalLayer", "PRESETS"]


def _dit_attention() -> GlobalAttentionSpec:
    return GlobalAttentionSpec(qk_norm="none", qkv_bias=True, out_bias=True, zero_init=False)


class DiTSpec(BackboneSpec):
    """Everything that determines a DiT's weights and maths (defaults: the DiT paper's block)."""

    type: Literal["dit"] = "dit"
    depth: int = Field(..., ge=1, description="transformer layers")
    width: int = Field(..., gt=0, description="channels of every token (DiT's hidden size)")
    d_ff: int | None = Field(None, gt=0, description="FFN hidden size; default 4 x width (DiT's MLP ratio 4)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after attention and inside the FFN")
    attention: Component(ATTENTION) = Field(  # type: ignore[valid-type]
        default_factory=_dit_attention,
        description="attention of every layer; default global, dot product / sqrt(d_head), qkv and out biases",
    )
    mapping: Component(MAPPING) = Field(  # type: ignore[valid-type]
        DiTEmbedderSpec(), description="conditioning network; 'dit' (t_emb + y_emb) takes the model's width "
        "unless mapping.width is given"
    )
    patch_size: int | tuple[int, int] = Field(2, description="pixels per token side")
    in_channels: int = Field(3, gt=0, description="image (or latent) channels in")
    out_channels: int | None = Field(None, gt=0, description="channels out; default in_channels (2x: learned sigma)")
    num_classes: int = Field(0, ge=0, description="real classes (an extra 'no class' row is added); 0 = none")
    mapping_cond_dim: int = Field(0, ge=0, description="width of an extra conditioning vector; 0 = none")
    input_size: int | tuple[int, int] = Field(256, description="training image size (H, W) or side")
    pos_emb: Component(POS_EMB) = Field(SinCos2DSpec(), description="positional encoding")  # type: ignore
    ffn: Component(FFN) = Field(  # type: ignore[valid-type]
        GELUMLPSpec(bias=True, zero_init=False), description="feed-forward network; default DiT's tanh-GELU MLP"
    )
    norm: Component(NORM) = Field(  # type: ignore[valid-type]
        AdaLayerNormZeroSpec(), description="norm and conditioning of every block; default adaLN-Zero"
    )
    merge: Component(MERGE) = Field(  # type: ignore[valid-type]
        TokenMergeSpec(bias=True), description="patch embedding; default a biased p x p patch projection"
    )

    @model_validator(mode="after")
    def _resolve_and_check(self) -> DiTSpec:
        resolved = self
        mapping = self.mapping
        if MAPPING.get(mapping.type).width_follows_model and "width" not in mapping.model_fields_set:
            # e.g. DiT's conditioning is as wide as its tokens unless the recipe says otherwise.
            resolved = self.model_copy(update={"mapping": mapping.model_copy(update={"width": self.width})})
        raise_problems(resolved.shape_problems())
        return resolved

    @property
    def ffn_width(self) -> int:
        """The FFN hidden size after defaults (``4 x width``)."""
        return self.d_ff or 4 * self.width

    @property
    def stride(self) -> tuple[int, int]:
        """Pixels per token side (the patch size): image sides must be multiples of it."""
        return as_pair(self.patch_size)

    @property
    def embeds_aug(self) -> bool:
        """Whether the conditioning embeds ``aug_cond`` (DiT's own embedder: with ``augment = true``)."""
        return MAPPING.get(self.mapping.type).embeds_aug(self.mapping)

    def attention_sites(self) -> list[AttentionSite]:
        """Every layer attends on the patch grid with the same spec."""
        return [AttentionSite(path="attention", spec=self.attention, width=self.width, width_path="width",
                              grid=self.token_grid, layers=range(self.depth))]


class AdaLNFinalLayer(nn.Module):
    """DiT's final layer: ``Linear(LN(x) * (1 + scale) + shift)`` then unpatch (Peebles & Xie 2023).

    ``(shift, scale) = Linear(cond_dim -> 2 width)(SiLU(cond))`` and the output ``Linear(width ->
    p*p*C_out)`` (with bias) are both zero-initialised, so a fresh DiT outputs exactly zero.
    The LayerNorm has no affine parameters (eps 1e-6).

    Args:
        width: token channels. cond_dim: conditioning width. out_channels: image channels out.
        patch_size: pixels per token side.
    """

    def __init__(self, width: int, cond_dim: int, out_channels: int, patch_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.modulation = tag_lr_group(zero_init(nn.Linear(cond_dim, 2 * width)), "mapping")
        self.norm = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.unpatch = Unpatch(width, out_channels, patch_size, bias=True)
        zero_init(self.unpatch.proj)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """``x (B, h, w, width)``, ``cond (B, cond_dim)`` -> ``(B, h*ph, w*pw, out_channels)``."""
        shift, scale = self.modulation(F.silu(cond))[:, None, None, :].chunk(2, dim=-1)
        return self.unpatch(self.norm(x) * (1 + scale) + shift)


def _dit_init_(module: nn.Module) -> None:
    """DiT's initialisation: Xavier-uniform Linear weights and zero biases (DiT's reference code).

    A Linear that its component zero-initialised (an HDiT-style FFN or attention output, say) stays
    zero; nothing is done on the meta device.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear) and not m.weight.is_meta and bool(m.weight.any()):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@MODEL.register("dit")
class DiT(Backbone):
    """Diffusion Transformer backbone ``F(x, sigma)`` (Peebles & Xie 2023).

    Same call as :class:`~hourglass.models.hdit.HDiT`, so the Karras denoiser, samplers and trainer
    take either. The noise level reaches the timestep embedding as ``c_noise = ln(sigma) / 4``
    (or, with ``mapping.time_input = "timestep"``, the model takes DiT's DDPM timestep instead).
    The conditioning (timestep/class embedder and every adaLN projection) forms the ``mapping``
    parameter groups; DiT itself trains with one lr and no decay (``lr=1e-4, weight_decay=0,
    mapping_lr_scale=1``).

    Args:
        spec: the model's spec; a preset name goes through :func:`hourglass.create_model`,
            e.g. ``create_model("dit_xl_2")`` (DiT-XL/2 on 4x32x32 latents, learned sigma) or
            ``create_model("dit_b_4_pixel")`` (DiT-B/4 on 3x128x128 pixels).
    """

    Spec = DiTSpec
    test_preset = "dit_test"

    def __init__(self, spec: DiTSpec) -> None:
        super().__init__()
        self.spec = spec
        d = spec.width
        self.patch_in = MERGE.build(spec.merge, in_width=spec.in_channels, out_width=d, patch_size=spec.patch_size)
        encoding = POS_EMB.get(spec.pos_emb.type).encoding
        rope = spec.pos_emb if encoding == "relative" else None  # only relative encodings go to the attention
        self.abs_pos_emb = None
        if encoding == "absolute":
            self.abs_pos_emb = POS_EMB.build(spec.pos_emb, width=d, grid_size=spec.token_grid)
        self.mapping = MAPPING.build(spec.mapping, num_classes=spec.num_classes, mapping_cond_dim=spec.mapping_cond_dim)
        cond_dim = self.mapping.width
        self.layers = nn.ModuleList(
            TransformerLayer(
                width=d, d_ff=spec.ffn_width, cond_dim=cond_dim, attention=spec.attention, ffn=spec.ffn,
                norm=spec.norm, pos_emb=rope, layer_index=i, dropout=spec.dropout,
            )
            for i in range(spec.depth)
        )
        self.final_layer = AdaLNFinalLayer(d, cond_dim, spec.resolved_out_channels, spec.patch_size)
        _dit_init_(self.patch_in)
        for layer in self.layers:
            for part in (layer.attn, layer.ffn):
                if part is not None:
                    _dit_init_(part)

    def stages(self) -> list[Stage]:
        """All ``depth`` layers on the patch grid."""
        spec = self.spec
        return [Stage(name="layers", prefixes=("layers.",), grid=spec.token_grid, extra_tokens=0, layers=spec.depth,
                      width=spec.width, d_ff=spec.ffn_width, attention=spec.attention, dropout=spec.dropout)]

    def compute(self, x: Tensor, sigma: Tensor, class_cond: Tensor | None, aug_cond: Tensor | None,
                mapping_cond: Tensor | None) -> Tensor:
        """``x (B, C_in, H, W)``, ``sigma (B,)`` -> ``F (B, C_out, H, W)`` (see :meth:`Backbone.forward`)."""
        if aug_cond is not None and not self.spec.embeds_aug and augmentation_applied(aug_cond):
            raise ValueError(
                "aug_cond describes applied augmentations but this DiT's mapping does not embed them (they would "
                "leak into samples); set mapping.augment = true, or train without augmentation (data.augment.p = 0)"
            )
        x = self.patch_in(x.movedim(1, -1))
        if self.abs_pos_emb is not None:
            x = self.abs_pos_emb(x)
        pos = make_axial_pos(x.shape[1], x.shape[2], device=x.device)
        cond = self.mapping(sigma, class_cond, aug_cond, mapping_cond)
        for layer in self.layers:
            x = self.run_layer(layer, x, pos, cond)
        return self.final_layer(x, cond).movedim(-1, 1)


# -- presets (DiT's Table 1, Peebles & Xie 2023) ------------------------------------------------
_SIZES = {"s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}


def _preset(depth: int, width: int, heads: int, patch: int, **extra: Any) -> dict[str, Any]:
    """DiT's published setting: 4x32x32 SD-VAE latents, learned sigma (8 channels out), 1000 classes."""
    attention = {"type": "global", "d_head": width // heads, "qk_norm": "none", "qkv_bias": True,
                 "out_bias": True, "zero_init": False}
    config = {"depth": depth, "width": width, "attention": attention, "patch_size": patch,
              "in_channels": 4, "out_channels": 8, "num_classes": 1000, "input_size": 32}
    return {**config, **extra}


PRESETS: dict[str, dict[str, Any]] = {
    f"dit_{size}_{patch}": _preset(*_SIZES[size], patch)
    for size in ("s", "b", "l", "xl")
    for patch in (2, 4, 8)
}
# DiT-B/4 in pixel space at 128 px: the baseline of the HDiT paper's ablation (Table 1, R1), 130.4M, 106.4 GMACs.
PRESETS["dit_b_4_pixel"] = _preset(12, 768, 12, 4, in_channels=3, out_channels=None, input_size=128)
# A tiny DiT for tests (16 px, 8x8 tokens).
PRESETS["dit_test"] = _preset(2, 32, 2, 2, in_channels=3, out_channels=None, num_classes=10, input_size=16)

for _name, _config in PRESETS.items():
    register_preset(_name, "dit", _config)
