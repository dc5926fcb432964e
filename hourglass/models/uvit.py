"""U-ViT, the ViT with long skips of Bao et al. (2023), built from hourglass parts.

The noise level and the class are *tokens* (:class:`~hourglass.nn.uvit_tokens.UViTConditionTokens`)
in front of the ``h*w`` patch tokens; learned positions cover all of them. ``depth = D`` (even)
gives ``D/2`` "in" blocks, one middle block and ``D/2`` "out" blocks, ``D + 1`` blocks in all (the
U-ViT paper's "#layers": 13 / 17 / 21 / 29 for depth 12 / 16 / 20 / 28). Out block ``j`` first
concatenates the output of in block ``D/2 - 1 - j`` (the long skip) and projects with
``Linear(2d -> d)``. Blocks are pre-LN (no conditioning inside them), the MLP ratio is 4 with
exact GELU, qkv has no bias. Output: LayerNorm, ``Linear(d -> p*p*C_out)`` on the patch tokens,
unpatch, and an optional 3x3 convolution.

Layout: the blocks attend over one sequence of ``n_extra + h*w`` tokens, so inside the model the
tokens are a ``(B, 1, n_extra + h*w, width)`` grid (one row). Global attention is what U-ViT means;
attention kinds that do not connect every token in one layer (local windows, ``none``) are refused,
since patch tokens would no longer reach the condition tokens and the model would ignore the noise
level and class.
RoPE (``pos_emb = "axial_rope"``) rotates patch tokens by their 2D grid position and leaves the
condition tokens unrotated (position (0, 0)).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from hourglass.models._layer import TransformerLayer
from hourglass.models.base import AttentionSite, Backbone, BackboneSpec, Stage
from hourglass.models.factory import register_preset
from hourglass.nn.attention import GlobalAttentionSpec
from hourglass.nn.dit_mapping import TimeInput
from hourglass.nn.ffn import GELUMLPSpec
from hourglass.nn.merge import TokenMergeSpec, Unpatch
from hourglass.nn.norm import LayerNormSpec
from hourglass.nn.pos_emb import LearnedPosEmbSpec, make_axial_pos
from hourglass.nn.uvit_tokens import UViTConditionTokens
from hourglass.registry import ATTENTION, FFN, MERGE, MODEL, NORM, POS_EMB
from hourglass.spec import Component, Problem, as_pair, raise_problems

__all__ = ["UViT", "UViTSpec", "PRESETS"]

def _uvit_attention() -> GlobalAttentionSpec:
    return GlobalAttentionSpec(qk_norm="none", qkv_bias=False, out_bias=True, zero_init=False)


class UViTSpec(BackboneSpec):
    """Everything that determines a U-ViT's weights and maths (defaults: the U-ViT paper's block)."""

    type: Literal["uvit"] = "uvit"
    depth: int = Field(
        ..., ge=2, description="even D: D/2 in blocks, 1 middle block, D/2 out blocks (D + 1 blocks in all)"
    )
    width: int = Field(..., gt=0, description="channels of every token (U-ViT's embed_dim)")
    d_ff: int | None = Field(None, gt=0, description="FFN hidden size; default 4 x width (MLP ratio 4)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after attention and inside the FFN")
    attention: Component(ATTENTION) = Field(  # type: ignore[valid-type]
        default_factory=_uvit_attention,
        description="attention of every block; default global, dot product / sqrt(d_head), no qkv bias",
    )
    patch_size: int | tuple[int, int] = Field(2, description="pixels per token side")
    in_channels: int = Field(3, gt=0, description="image (or latent) channels in")
    out_channels: int | None = Field(None, gt=0, description="channels out; default in_channels")
    num_classes: int = Field(0, ge=0, description="real classes (an extra 'no class' row is added); 0 = none")
    mapping_cond_dim: int = Field(0, ge=0, description="width of an extra conditioning vector (one more token)")
    input_size: int | tuple[int, int] = Field(256, description="training image size (H, W) or side")
    pos_emb: Component(POS_EMB) = Field(  # type: ignore[valid-type]
        LearnedPosEmbSpec(), description="positions of the patch tokens; 'learned' also covers the condition tokens"
    )
    ffn: Component(FFN) = Field(  # type: ignore[valid-type]
        GELUMLPSpec(approximate="none", bias=True, zero_init=False), description="feed-forward network"
    )
    norm: Component(NORM) = Field(  # type: ignore[valid-type]
        LayerNormSpec(eps=1e-5), description="pre-norm of every block and the final norm (unconditional)"
    )
    merge: Component(MERGE) = Field(  # type: ignore[valid-type]
        TokenMergeSpec(bias=True), description="patch embedding; default a biased p x p patch projection"
    )
    skip: bool = Field(True, description="long skips from the in blocks to the out blocks")
    final_conv: bool = Field(True, description="3x3 convolution on the output image")
    mlp_time_embed: bool = Field(False, description="time token through U-ViT's MLP (d -> 4d -> d)")
    time_input: TimeInput = Field(
        "log_sigma", description="what the model's second argument is: 'log_sigma' (a noise level sigma > 0, "
        "embedded as ln(sigma)/4: the Karras denoiser) or 'timestep' (U-ViT's timestep t >= 0, embedded as is: "
        "official U-ViT checkpoints, with the ddpm denoiser)"
    )
    time_scale: float = Field(
        1.0, gt=0, description="the time token embeds time_scale * ln(sigma)/4, or time_scale * t for time_input "
        "'timestep'"
    )
    augment: bool = Field(False, description="add a token embedding aug_cond (Karras augmentation)")

    @model_validator(mode="after")
    def _check(self) -> UViTSpec:
        problems = []
        if self.depth % 2:
            problems.append(Problem(
                "depth", f"{self.depth} is odd; U-ViT's depth D gives D/2 in and D/2 out blocks around one middle block",
                f"use an even number ({self.depth - 1} or {self.depth + 1}); the U-ViT paper's '#layers' 13/17/21/29 "
                "are depth 12/16/20/28",
            ))
        if not ATTENTION.get(self.attention.type).connects_all_tokens:
            problems.append(Problem(
                "attention.type", f"{self.attention.type!r} does not connect every token in one layer, so the patch "
                "tokens would never see U-ViT's time and class tokens and the model would ignore the noise level "
                "and class",
                "use an attention kind that connects all tokens, e.g. 'global' (or a DiT/HDiT model for local "
                "attention)",
            ))
        else:
            problems += self.shape_problems()
        if NORM.get(self.norm.type).conditional:
            problems.append(Problem(
                "norm.type", f"{self.norm.type!r} needs a conditioning vector, but U-ViT conditions through tokens",
                "use an unconditional norm such as 'layer_norm' or 'rms_norm' (adaptive norms: use a DiT or HDiT "
                "model)",
            ))
        raise_problems(problems)
        return self

    @property
    def ffn_width(self) -> int:
        """The FFN hidden size after defaults (``4 x width``)."""
        return self.d_ff or 4 * self.width

    @property
    def stride(self) -> tuple[int, int]:
        """Pixels per token side (the patch size): image sides must be multiples of it."""
        return as_pair(self.patch_size)

    @property
    def n_condition_tokens(self) -> int:
        """Tokens in front of the patch tokens: time, plus class, augmentation and extra when used."""
        return 1 + bool(self.num_classes) + self.augment + bool(self.mapping_cond_dim)

    @property
    def embeds_aug(self) -> bool:
        """With ``augment = true`` (an augmentation token)."""
        return self.augment

    def attention_sites(self) -> list[AttentionSite]:
        """Every block attends over one row of condition tokens plus the ``h*w`` patch tokens."""
        gh, gw = self.token_grid
        return [AttentionSite(path="attention", spec=self.attention, width=self.width, width_path="width",
                              grid=(1, self.n_condition_tokens + gh * gw), layers=range(self.depth + 1))]


def _uvit_init_(module: nn.Module) -> None:
    """U-ViT's initialisation of Linear layers: weights ``trunc_normal(std=0.02)``, biases zero.

    A Linear that its component zero-initialised stays zero; nothing is done on the meta device.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear) and not m.weight.is_meta and bool(m.weight.any()):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@MODEL.register("uvit")
class UViT(Backbone):
    """U-ViT backbone ``F(x, sigma)`` (Bao et al. 2023).

    Same call as :class:`~hourglass.models.hdit.HDiT`. The noise level enters as a time token
    embedding ``ln(sigma) / 4`` (EDM's ``c_noise``), or U-ViT's own timestep with ``time_input =
    "timestep"``; the class as a class token.

    Args:
        spec: the model's spec; a preset name goes through :func:`hourglass.create_model`,
            e.g. ``create_model("uvit_h_2")`` (4x32x32 latents, 1000 classes + "no class").
    """

    Spec = UViTSpec
    test_preset = "uvit_test"

    def __init__(self, spec: UViTSpec) -> None:
        super().__init__()
        self.spec = spec
        d = spec.width
        self.patch_in = MERGE.build(spec.merge, in_width=spec.in_channels, out_width=d, patch_size=spec.patch_size)
        self.cond_tokens = UViTConditionTokens(
            d, num_classes=spec.num_classes, mapping_cond_dim=spec.mapping_cond_dim, augment=spec.augment,
            mlp_time_embed=spec.mlp_time_embed, time_input=spec.time_input, time_scale=spec.time_scale,
        )
        self.n_extra = self.cond_tokens.n_tokens
        encoding = POS_EMB.get(spec.pos_emb.type).encoding
        rope = spec.pos_emb if encoding == "relative" else None  # only relative encodings go to the attention
        self.abs_pos_emb = None
        if encoding == "absolute":
            self.abs_pos_emb = POS_EMB.build(spec.pos_emb, width=d, grid_size=spec.token_grid)
        # U-ViT's one learned table covers the condition tokens too: their rows live here.
        self.extra_pos = None
        if POS_EMB.get(spec.pos_emb.type).learned:
            self.extra_pos = nn.Parameter(torch.empty(self.n_extra, d))
            nn.init.trunc_normal_(self.extra_pos, std=spec.pos_emb.model_dump().get("init_std", 0.02))

        def block(i: int) -> TransformerLayer:
            return TransformerLayer(
                width=d, d_ff=spec.ffn_width, cond_dim=0, attention=spec.attention, ffn=spec.ffn, norm=spec.norm,
                pos_emb=rope, layer_index=i, dropout=spec.dropout,
            )

        half = spec.depth // 2
        self.in_blocks = nn.ModuleList(block(i) for i in range(half))
        self.mid_block = block(half)
        self.out_blocks = nn.ModuleList(block(half + 1 + i) for i in range(half))
        self.skip_projs = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(half)) if spec.skip else None
        self.out_norm = NORM.build(spec.norm, width=d, cond_dim=0)
        c_out = spec.resolved_out_channels
        self.patch_out = Unpatch(d, c_out, spec.patch_size, bias=True)
        self.final_conv = nn.Conv2d(c_out, c_out, 3, padding=1) if spec.final_conv else None
        for part in (self.cond_tokens, self.in_blocks, self.mid_block, self.out_blocks, self.skip_projs,
                     self.patch_out):
            if part is not None:
                _uvit_init_(part)

    def stages(self) -> list[Stage]:
        """All ``depth + 1`` blocks over the condition tokens and the patch grid."""
        spec = self.spec
        return [Stage(
            name="blocks", prefixes=("in_blocks.", "mid_block.", "out_blocks.", "skip_projs."), grid=spec.token_grid,
            extra_tokens=self.n_extra, layers=spec.depth + 1, width=spec.width, d_ff=spec.ffn_width,
            attention=spec.attention, dropout=spec.dropout,
        )]

    def _block(self, layer: TransformerLayer, x: Tensor, pos: Tensor) -> Tensor:
        return self.run_layer(layer, x, pos, None)

    def compute(self, x: Tensor, sigma: Tensor, class_cond: Tensor | None, aug_cond: Tensor | None,
                mapping_cond: Tensor | None) -> Tensor:
        """``x (B, C_in, H, W)``, ``sigma (B,)`` -> ``F (B, C_out, H, W)`` (see :meth:`Backbone.forward`)."""
        x = self.patch_in(x.movedim(1, -1))  # (B, h, w, d)
        b, h, w, d = x.shape
        if self.abs_pos_emb is not None:
            x = self.abs_pos_emb(x)
        extra = self.cond_tokens(sigma, class_cond, aug_cond, mapping_cond).to(x.dtype)  # (B, E, d)
        if self.extra_pos is not None:
            extra = extra + self.extra_pos.to(x.dtype)
        x = torch.cat((extra, x.reshape(b, h * w, d)), dim=1)[:, None]  # (B, 1, E + h*w, d)
        grid_pos = make_axial_pos(h, w, device=x.device).reshape(h * w, 2)
        pos = torch.cat((grid_pos.new_zeros(self.n_extra, 2), grid_pos))[None]  # (1, E + h*w, 2)
        skips = []
        for layer in self.in_blocks:
            x = self._block(layer, x, pos)
            skips.append(x)
        x = self._block(self.mid_block, x, pos)
        for j, layer in enumerate(self.out_blocks):
            skip = skips.pop()
            if self.skip_projs is not None:
                x = self.skip_projs[j](torch.cat((x, skip), dim=-1))
            x = self._block(layer, x, pos)
        x, _ = self.out_norm(x)
        x = self.patch_out(x[:, 0, self.n_extra:].reshape(b, h, w, d)).movedim(-1, 1)
        return self.final_conv(x) if self.final_conv is not None else x


# -- presets (U-ViT's configs, Bao et al. 2023) -------------------------------------------------
def _preset(depth: int, width: int, heads: int, patch: int, **extra: Any) -> dict[str, Any]:
    attention = {"type": "global", "d_head": width // heads, "qk_norm": "none", "qkv_bias": False,
                 "out_bias": True, "zero_init": False}
    config = {"depth": depth, "width": width, "attention": attention, "patch_size": patch,
              "in_channels": 4, "num_classes": 1000, "input_size": 32, "final_conv": True}
    return {**config, **extra}


PRESETS: dict[str, dict[str, Any]] = {
    # The /2 sizes on U-ViT's ImageNet-256 latent layout: 4x32x32 inputs, 1000 classes + "no class".
    "uvit_s_2": _preset(12, 512, 8, 2),
    "uvit_m_2": _preset(16, 768, 12, 2),
    "uvit_l_2": _preset(20, 1024, 16, 2),  # 287M params (U-ViT-L/2, imagenet256_uvit.py)
    "uvit_h_2": _preset(28, 1152, 16, 2, final_conv=False),  # 501M (U-ViT-H/2, imagenet256_uvit_huge.py)
    # The /4 sizes in pixel space at 64x64 (U-ViT's ImageNet-64 configs).
    "uvit_m_4": _preset(16, 768, 12, 4, in_channels=3, input_size=64),
    "uvit_l_4": _preset(20, 1024, 16, 4, in_channels=3, input_size=64),
    # A tiny U-ViT for tests (16 px, 8x8 patch tokens + 2 condition tokens).
    "uvit_test": _preset(2, 32, 2, 2, in_channels=3, num_classes=10, input_size=16),
}

for _name, _config in PRESETS.items():
    register_preset(_name, "uvit", _config)
