"""DiT, the Diffusion Transformer of Peebles & Xie (2023), built from hourglass parts.

DiT-B/4 in pixel space is the baseline of HDiT's ablation (Crowson et al. 2024, arXiv 2401.11605, Sec. 5.2
and Table 1, row R1).

``x (B, C, H, W)`` is cut into ``p x p`` patches (:class:`~hourglass.nn.merge.TokenMerge` with a
bias, i.e. DiT's stride-``p`` convolution), fixed 2D sin-cos positions are added, ``depth``
adaLN-Zero transformer layers run on the ``(B, H/p, W/p, width)`` token grid, and the final layer
(adaLN modulation without gate, zero-initialised ``Linear(width -> p*p*C_out)``) maps back to pixels.

Conditioning: DiT's ``c = t_emb + y_emb`` (MAPPING ``"dit"``). Where DiT embeds a discrete timestep,
this model receives the noise level ``sigma`` and embeds EDM's continuous
``c_noise = ln(sigma) / 4`` (see :mod:`hourglass.nn.dit_mapping`), so it plugs into the same
Karras preconditioning, samplers and training loop as HDiT.

Every component is a registry field, so a recipe can swap it: ``pos_emb = "axial_rope"``,
``ffn = "geglu"``, ``norm = "ada_rms_norm"``, neighborhood or shifted-window attention on the patch
grid, or HDiT's mapping network.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hourglass.models._checks import check_model_inputs
from hourglass.models._layer import TransformerLayer
from hourglass.models.factory import register_preset
from hourglass.nn._groups import param_groups
from hourglass.nn._init import tag_lr_group, zero_init
from hourglass.nn.attention import GlobalAttentionSpec
from hourglass.nn.dit_mapping import DiTEmbedderSpec, augmentation_applied
from hourglass.nn.ffn import GELUMLPSpec
from hourglass.nn.merge import TokenMergeSpec, Unpatch
from hourglass.nn.norm import AdaLayerNormZeroSpec
from hourglass.nn.pos_emb import SinCos2DSpec, make_axial_pos
from hourglass.registry import ATTENTION, FFN, MAPPING, MERGE, MODEL, NORM, POS_EMB
from hourglass.spec import Component, Spec

__all__ = ["DiT", "DiTSpec", "AdaLNFinalLayer", "attention_grid_problems", "PRESETS"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def attention_grid_problems(attention: Any, input_size: Any, patch_size: Any, path: str = "attention") -> list[str]:
    """Shape rules of a single-resolution transformer (DiT, U-ViT), each with its spec path and a fix.

    Args:
        attention: the attention spec of every layer.
        input_size: image side or ``(H, W)``. patch_size: patch side or ``(ph, pw)``.
        path: the spec path of ``attention`` used in the messages.
    Returns:
        Human-readable problems (empty if the shapes are consistent).
    """
    (h, w), (ph, pw) = _pair(input_size), _pair(patch_size)
    if min(h, w, ph, pw) < 1:
        return [f"input_size {input_size} and patch_size {patch_size} must be positive"]
    if h % ph or w % pw:
        return [
            f"input_size: {h}x{w} is not divisible by patch_size {ph}x{pw}; use a multiple of the patch size "
            f"(e.g. {max(ph, h // ph * ph)}x{max(pw, w // pw * pw)}) or another patch size"
        ]
    gh, gw = h // ph, w // pw
    kind = getattr(attention, "type", None)
    if kind == "neighborhood":
        span = attention.kernel_size * attention.dilation
        if span > min(gh, gw):
            return [
                f"{path}.kernel_size: {attention.kernel_size} (x dilation {attention.dilation}) does not fit the "
                f"{gh}x{gw} token grid; use kernel_size <= {min(gh, gw) // attention.dilation} or global attention"
            ]
    elif kind == "shifted_window":
        s = attention.window_size
        if gh % s or gw % s:
            return [
                f"{path}.window_size: {s} does not divide the {gh}x{gw} token grid; use a divisor of {gh} and {gw}"
            ]
    return []


def _dit_attention() -> GlobalAttentionSpec:
    return GlobalAttentionSpec(qk_norm="none", qkv_bias=True, out_bias=True, zero_init=False)


class DiTSpec(Spec):
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
        if mapping.type == "dit" and "width" not in mapping.model_fields_set:
            # DiT's conditioning is as wide as its tokens unless the recipe says otherwise.
            resolved = self.model_copy(update={"mapping": mapping.model_copy(update={"width": self.width})})
        problems = attention_grid_problems(self.attention, self.input_size, self.patch_size)
        d_head = getattr(self.attention, "d_head", None)
        if d_head and self.width % d_head:
            problems.append(
                f"width: {self.width} is not divisible by attention.d_head {d_head}; use a multiple of {d_head} "
                "or change attention.d_head"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return resolved

    @property
    def ffn_width(self) -> int:
        """The FFN hidden size after defaults (``4 x width``)."""
        return self.d_ff or 4 * self.width

    @property
    def resolved_out_channels(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def stride(self) -> tuple[int, int]:
        """Pixels per token side (the patch size): image sides must be multiples of it."""
        return _pair(self.patch_size)


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
class DiT(nn.Module):
    """Diffusion Transformer backbone ``F(x, sigma)`` (Peebles & Xie 2023).

    Same call as :class:`~hourglass.models.hdit.HDiT`, so the Karras denoiser, samplers and trainer
    take either. The noise level reaches the timestep embedding as ``c_noise = ln(sigma) / 4``.

    Args:
        spec: the model's spec; a preset name goes through :func:`hourglass.create_model`,
            e.g. ``create_model("dit_xl_2", in_channels=4, out_channels=8, input_size=32)``.
    """

    Spec = DiTSpec

    def __init__(self, spec: DiTSpec) -> None:
        super().__init__()
        self.spec = spec
        self.gradient_checkpointing = False
        d = spec.width
        self.patch_in = MERGE.build(spec.merge, in_width=spec.in_channels, out_width=d, patch_size=spec.patch_size)
        pos_kind = getattr(POS_EMB.get(spec.pos_emb.type), "kind", None)
        rope = spec.pos_emb if pos_kind == "rope" else None  # only relative encodings go to the attention
        self.abs_pos_emb = None
        if pos_kind == "absolute":
            self.abs_pos_emb = POS_EMB.build(spec.pos_emb, width=d, grid_size=self.grid_size())
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

    def grid_size(self, input_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """Token grid ``(h, w)`` for an image of ``input_size`` (default the spec's)."""
        h, w = _pair(input_size if input_size is not None else self.spec.input_size)
        ph, pw = _pair(self.spec.patch_size)
        return h // ph, w // pw

    def param_groups(self, lr: float = 5e-4, weight_decay: float = 1e-2, mapping_lr_scale: float = 1 / 3):
        """AdamW groups (see :func:`hourglass.nn.param_groups`), with the library's (HDiT's) defaults.

        The conditioning (timestep/class embedder and every adaLN projection) forms the ``mapping``
        groups. DiT itself trains with one lr and no decay: ``lr=1e-4, weight_decay=0,
        mapping_lr_scale=1``.
        """
        return param_groups(self, lr, weight_decay, mapping_lr_scale)

    def set_gradient_checkpointing(self, enabled: bool = True) -> DiT:
        """Recompute each layer in the backward pass instead of storing its activations."""
        self.gradient_checkpointing = enabled
        return self

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
            x: ``(B, C_in, H, W)``, H and W divisible by the patch size.
            sigma: ``(B,)`` or a scalar noise level (> 0); embedded as ``ln(sigma) / 4``.
            class_cond: ``(B,)`` int64 in ``[0, num_classes]`` (``num_classes`` = no class).
            aug_cond: ``(B, 9)`` augmentation description; all zeros (no augmentation) unless the
                mapping embeds it (``mapping.augment = true``, or HDiT's mapping).
            mapping_cond: ``(B, mapping_cond_dim)``.
        Returns:
            ``(B, C_out, H, W)``.
        """
        sigma = check_model_inputs(self.spec, x, sigma, class_cond, aug_cond, mapping_cond)
        if aug_cond is not None and not getattr(self.mapping, "embeds_aug", True) and augmentation_applied(aug_cond):
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
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, pos, cond, use_reentrant=False)
            else:
                x = layer(x, pos, cond)
        return self.final_layer(x, cond).movedim(-1, 1)


# -- presets (DiT's Table 1, Peebles & Xie 2023) ------------------------------------------------
_SIZES = {"s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}


def _preset(depth: int, width: int, heads: int, patch: int, **extra: Any) -> dict[str, Any]:
    attention = {"type": "global", "d_head": width // heads, "qk_norm": "none", "qkv_bias": True,
                 "out_bias": True, "zero_init": False}
    config = {"depth": depth, "width": width, "attention": attention, "patch_size": patch,
              "in_channels": 3, "num_classes": 1000, "input_size": 256}
    return {**config, **extra}


PRESETS: dict[str, dict[str, Any]] = {
    f"dit_{size}_{patch}": _preset(*_SIZES[size], patch)
    for size in ("s", "b", "l", "xl")
    for patch in (2, 4, 8)
}
# A tiny DiT for tests (16 px, 8x8 tokens).
PRESETS["dit_test"] = _preset(2, 32, 2, 2, num_classes=10, input_size=16)

for _name, _config in PRESETS.items():
    register_preset(_name, "dit", _config)
