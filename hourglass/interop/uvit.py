"""Official U-ViT checkpoints (baofff/U-ViT ``libs/uvit.py``) <-> hourglass :class:`~hourglass.models.uvit.UViT`.

U-ViT's released models (``imagenet256_uvit_huge.pth``, ``nnet_ema.pth`` of a run, ...) are plain
state dicts of ``libs.uvit.UViT``; they do not say which config built them, so the user names it:
:data:`RELEASES` lists U-ViT's released configs (``configs/*.py``) with the facts a conversion
needs: the network (``config.nnet``), whether it works on Stable Diffusion VAE latents, and how it
was trained: U-ViT-H on ImageNet 256/512 in **discrete time** (``train_ldm_discrete.py``: the
scaled-linear "stable diffusion" betas 0.00085..0.012, 1000 steps, the network sees ``n`` in
``1..1000``), the others in **continuous time** (``train.py`` / ``train_ldm.py``: the linear VP SDE
with ``beta(0) = 0.1``, ``beta(1) = 20``, the network sees ``999 s``). All predict the noise.

Names (U-ViT -> hourglass):

| U-ViT | hourglass | note |
|---|---|---|
| ``patch_embed.proj.weight`` ``(D, C, p, p)`` | ``patch_in.proj.weight`` ``(D, p*p*C)`` | the conv kernel as a Linear over ``(p, p, C)`` patches |
| ``patch_embed.proj.bias`` | ``patch_in.proj.bias`` | |
| ``time_embed.{0,2}`` (``mlp_time_embed``) | ``cond_tokens.time_mlp.{0,2}`` | |
| ``label_emb.weight`` | ``cond_tokens.class_emb.weight`` | U-ViT's ``num_classes`` rows (1001: 1000 + "no class"); a table without the "no class" row (ImageNet 64) gets a zero row |
| ``pos_embed`` ``(1, E + h*w, D)`` | ``extra_pos`` ``(E, D)`` and ``abs_pos_emb.weight`` ``(h, w, D)`` | ``E``: the class and time tokens |
| ``{in_blocks.i, mid_block, out_blocks.i}.norm1``, ``.norm2`` | ``*.attn_norm.norm``, ``*.ffn_norm.norm`` | |
| ``*.attn.qkv``, ``*.attn.proj`` | ``*.attn.qkv_proj``, ``*.attn.out_proj`` | |
| ``*.mlp.fc1``, ``*.mlp.fc2`` | ``*.ffn.up_proj``, ``*.ffn.down_proj`` | |
| ``out_blocks.i.skip_linear`` | ``skip_projs.i`` | |
| ``norm``, ``decoder_pred`` | ``out_norm.norm``, ``patch_out.proj`` | |
| ``final_layer`` (``conv``) | ``final_conv`` | |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hourglass.interop.dit import load_checked, rename_key
from hourglass.models.factory import model_spec
from hourglass.models.uvit import UViT, UViTSpec
from hourglass.registry import MODEL

__all__ = ["UViTRelease", "RELEASES", "model_data_of_release", "spec_from_release", "denoiser_of_release",
           "convert_state_dict", "to_uvit_state_dict", "from_uvit"]

#: U-ViT's "stable diffusion" betas of its discrete-time latent models (train_ldm_discrete.py)
DISCRETE = {"type": "ddpm", "prediction": "eps", "schedule": "scaled_linear", "timesteps": 1000, "t_offset": 1.0}
#: U-ViT's continuous-time VP SDE (sde.VPSDE, beta 0.1 .. 20; the network sees 999 s)
CONTINUOUS = {"type": "ddpm", "prediction": "eps", "schedule": "continuous_linear", "timesteps": 1000}


@dataclass(frozen=True)
class UViTRelease:
    """One of U-ViT's released configs (``configs/NAME.py``) and the facts of its checkpoint.

    Attributes:
        name: the config's file name, e.g. ``"imagenet256_uvit_huge"``.
        title: e.g. ``"U-ViT-H/2, ImageNet 256x256"``.
        nnet: the config's ``nnet`` section (``img_size``, ``patch_size``, ``in_chans``, ``embed_dim``,
            ``depth``, ``num_heads``, ``mlp_time_embed``, ``num_classes``, ``conv``).
        time: ``"discrete"`` or ``"continuous"`` (see the module docstring).
        latent: whether it works on Stable Diffusion VAE latents (4 channels, ``x 0.18215``).
        cfg_scale: hourglass's guidance scale of U-ViT's evaluation (U-ViT's ``scale + 1``), None: none.
        fid: the FID-50K U-ViT's README reports.
        null_class_row: whether ``label_emb`` has the "no class" row (trained with class dropout).
        class_dropout: the config's ``p_uncond`` (0: no class dropout).
    """

    name: str
    title: str
    nnet: dict[str, Any] = field(hash=False)
    time: str
    latent: bool
    cfg_scale: float | None
    fid: float
    null_class_row: bool = True
    class_dropout: float = 0.0

    @property
    def denoiser(self) -> dict[str, Any]:
        """The ``ddpm`` denoiser of its training: :data:`DISCRETE` or :data:`CONTINUOUS`."""
        return dict(DISCRETE if self.time == "discrete" else CONTINUOUS)

    @property
    def num_classes(self) -> int:
        """Real classes (0: unconditional)."""
        n = int(self.nnet.get("num_classes", -1))
        return 0 if n <= 0 else n - 1 if self.null_class_row else n

    def describe(self) -> str:
        """One line of facts, e.g. for ``--help``."""
        c, s = self.nnet.get("in_chans", 3), self.nnet["img_size"]
        space = f"{c}x{s}x{s} SD-VAE latents" if self.latent else f"{c}x{s}x{s} pixels"
        classes = f"{self.num_classes} classes" if self.num_classes else "unconditional"
        time = ("discrete time (scaled-linear betas, n in 1..1000)" if self.time == "discrete"
                else "continuous time (VP SDE, 999 s)")
        cfg = f", cfg {self.cfg_scale:g}" if self.cfg_scale else ""
        return f"{self.title}: {space}, {classes}, {time}{cfg}, FID {self.fid:g}"


def _nnet(img_size: int, patch: int, width: int, depth: int, heads: int, *, in_chans: int = 3, num_classes: int = -1,
          conv: bool = True) -> dict[str, Any]:
    return {"img_size": img_size, "patch_size": patch, "in_chans": in_chans, "embed_dim": width, "depth": depth,
            "num_heads": heads, "mlp_ratio": 4, "qkv_bias": False, "mlp_time_embed": False,
            "num_classes": num_classes, "conv": conv}


#: U-ViT's released configs (its README's pretrained models, text-to-image excluded)
RELEASES: dict[str, UViTRelease] = {r.name: r for r in [
    UViTRelease("cifar10_uvit_small", "U-ViT-S/2, CIFAR-10", _nnet(32, 2, 512, 12, 8), "continuous", False, None,
                3.11),
    UViTRelease("celeba64_uvit_small", "U-ViT-S/4, CelebA 64x64", _nnet(64, 4, 512, 12, 8), "continuous", False,
                None, 2.87),
    UViTRelease("imagenet64_uvit_mid", "U-ViT-M/4, ImageNet 64x64", _nnet(64, 4, 768, 16, 12, num_classes=1000),
                "continuous", False, None, 5.85, null_class_row=False),
    UViTRelease("imagenet64_uvit_large", "U-ViT-L/4, ImageNet 64x64", _nnet(64, 4, 1024, 20, 16, num_classes=1000),
                "continuous", False, None, 4.26, null_class_row=False),
    UViTRelease("imagenet256_uvit_large", "U-ViT-L/2, ImageNet 256x256",
                _nnet(32, 2, 1024, 20, 16, in_chans=4, num_classes=1001), "continuous", True, 1.4, 3.40,
                class_dropout=0.15),
    UViTRelease("imagenet256_uvit_huge", "U-ViT-H/2, ImageNet 256x256",
                _nnet(32, 2, 1152, 28, 16, in_chans=4, num_classes=1001, conv=False), "discrete", True, 1.4, 2.29,
                class_dropout=0.1),
    UViTRelease("imagenet512_uvit_large", "U-ViT-L/4, ImageNet 512x512",
                _nnet(64, 4, 1024, 20, 16, in_chans=4, num_classes=1001), "continuous", True, 1.7, 4.67,
                class_dropout=0.15),
    UViTRelease("imagenet512_uvit_huge", "U-ViT-H/4, ImageNet 512x512",
                _nnet(64, 4, 1152, 28, 16, in_chans=4, num_classes=1001, conv=False), "discrete", True, 1.7, 4.05,
                class_dropout=0.1),
]}


def _release(config: str | UViTRelease) -> UViTRelease:
    if isinstance(config, UViTRelease):
        return config
    if config not in RELEASES:
        raise ValueError(f"unknown U-ViT config {config!r}; the released ones are: {', '.join(RELEASES)}")
    return RELEASES[config]


def model_data_of_release(config: str | UViTRelease) -> dict[str, Any]:
    """The hourglass model data (``type = "uvit"``) of a released config, with U-ViT's timestep input."""
    r = _release(config)
    n = r.nnet
    width, heads = n["embed_dim"], n["num_heads"]
    return {
        "type": "uvit", "depth": n["depth"], "width": width,
        "attention": {"type": "global", "d_head": width // heads, "qk_norm": "none", "qkv_bias": bool(n["qkv_bias"]),
                      "out_bias": True, "zero_init": False},
        "patch_size": n["patch_size"], "in_channels": n["in_chans"], "num_classes": r.num_classes,
        "input_size": n["img_size"], "final_conv": bool(n["conv"]), "mlp_time_embed": bool(n["mlp_time_embed"]),
        "time_input": "timestep",
    }


def spec_from_release(config: str | UViTRelease, **overrides: Any) -> UViTSpec:
    """The hourglass spec of a released U-ViT config (``overrides``: further spec fields)."""
    spec = model_spec({**model_data_of_release(config), **overrides})
    if not isinstance(spec, UViTSpec):  # pragma: no cover - type "uvit" builds a U-ViT spec
        raise TypeError(f"expected a U-ViT spec, got {type(spec).__name__}")
    return spec


def denoiser_of_release(config: str | UViTRelease) -> dict[str, Any]:
    """The ``ddpm`` denoiser data of a released config's training (discrete or continuous time)."""
    return _release(config).denoiser


_BLOCK = r"^(in_blocks\.\d+|mid_block|out_blocks\.\d+)\."
_TO_OURS: list[tuple[str, str]] = [
    (r"^patch_embed\.proj\.bias$", "patch_in.proj.bias"),
    (r"^time_embed\.(0|2)\.(weight|bias)$", r"cond_tokens.time_mlp.\1.\2"),
    (_BLOCK + r"norm1\.(weight|bias)$", r"\1.attn_norm.norm.\2"),
    (_BLOCK + r"norm2\.(weight|bias)$", r"\1.ffn_norm.norm.\2"),
    (_BLOCK + r"attn\.qkv\.(weight|bias)$", r"\1.attn.qkv_proj.\2"),
    (_BLOCK + r"attn\.proj\.(weight|bias)$", r"\1.attn.out_proj.\2"),
    (_BLOCK + r"mlp\.fc1\.(weight|bias)$", r"\1.ffn.up_proj.\2"),
    (_BLOCK + r"mlp\.fc2\.(weight|bias)$", r"\1.ffn.down_proj.\2"),
    (r"^out_blocks\.(\d+)\.skip_linear\.(weight|bias)$", r"skip_projs.\1.\2"),
    (r"^norm\.(weight|bias)$", r"out_norm.norm.\1"),
    (r"^decoder_pred\.(weight|bias)$", r"patch_out.proj.\1"),
    (r"^final_layer\.(weight|bias)$", r"final_conv.\1"),
]
_OUR_BLOCK = r"^(in_blocks\.\d+|mid_block|out_blocks\.\d+)\."
_TO_THEIRS: list[tuple[str, str]] = [
    (r"^patch_in\.proj\.bias$", "patch_embed.proj.bias"),
    (r"^cond_tokens\.time_mlp\.(0|2)\.(weight|bias)$", r"time_embed.\1.\2"),
    (_OUR_BLOCK + r"attn_norm\.norm\.(weight|bias)$", r"\1.norm1.\2"),
    (_OUR_BLOCK + r"ffn_norm\.norm\.(weight|bias)$", r"\1.norm2.\2"),
    (_OUR_BLOCK + r"attn\.qkv_proj\.(weight|bias)$", r"\1.attn.qkv.\2"),
    (_OUR_BLOCK + r"attn\.out_proj\.(weight|bias)$", r"\1.attn.proj.\2"),
    (_OUR_BLOCK + r"ffn\.up_proj\.(weight|bias)$", r"\1.mlp.fc1.\2"),
    (_OUR_BLOCK + r"ffn\.down_proj\.(weight|bias)$", r"\1.mlp.fc2.\2"),
    (r"^skip_projs\.(\d+)\.(weight|bias)$", r"out_blocks.\1.skip_linear.\2"),
    (r"^out_norm\.norm\.(weight|bias)$", r"norm.\1"),
    (r"^patch_out\.proj\.(weight|bias)$", r"decoder_pred.\1"),
    (r"^final_conv\.(weight|bias)$", r"final_layer.\1"),
]


def convert_state_dict(state_dict: Mapping[str, Tensor], spec: UViTSpec) -> dict[str, Tensor]:
    """U-ViT names -> hourglass names for the model of ``spec`` (every tensor).

    ``pos_embed`` is split into the condition tokens' rows and the patch grid's table; a class table
    with ``spec.num_classes`` rows (no "no class" row: U-ViT's ImageNet-64 models) gets a zero row.

    Raises:
        ValueError: an unknown name, or a ``pos_embed`` / ``label_emb`` of the wrong size.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    gh, gw = spec.token_grid
    extras = 1 + bool(spec.num_classes)
    for key, value in state_dict.items():
        if key == "patch_embed.proj.weight":
            out["patch_in.proj.weight"] = value.permute(0, 2, 3, 1).reshape(value.shape[0], -1)
        elif key == "pos_embed":
            if value.ndim != 3 or value.shape[1] != extras + gh * gw:
                raise ValueError(f"pos_embed has shape {tuple(value.shape)}: U-ViT's table of {extras} condition "
                                 f"token(s) and a {gh}x{gw} patch grid has {extras + gh * gw} rows (wrong config?)")
            out["extra_pos"] = value[0, :extras]
            out["abs_pos_emb.weight"] = value[0, extras:].reshape(gh, gw, value.shape[-1])
        elif key == "label_emb.weight":
            if value.shape[0] == spec.num_classes:  # trained without class dropout: no "no class" row
                value = torch.cat([value, value.new_zeros(1, value.shape[1])])
            out["cond_tokens.class_emb.weight"] = value
        else:
            new = rename_key(key, _TO_OURS)
            if new is None:
                unknown.append(key)
            else:
                out[new] = value
    if unknown:
        raise ValueError(f"names that are not U-ViT's: {sorted(unknown)}")
    return out


def to_uvit_state_dict(model: UViT, null_class_row: bool = True) -> dict[str, Tensor]:
    """hourglass names -> U-ViT names: the state dict ``libs.uvit.UViT`` would load.

    Args:
        model: an hourglass U-ViT.
        null_class_row: keep the class table's "no class" row (False: drop it, as U-ViT's ImageNet-64 tables).
    Raises:
        ValueError: a name with no U-ViT counterpart (a swapped component).
    """
    state, spec = model.state_dict(), model.spec
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key == "patch_in.proj.weight":
            p = spec.stride[0]
            out["patch_embed.proj.weight"] = value.reshape(value.shape[0], p, p, -1).permute(0, 3, 1, 2)
        elif key in ("extra_pos", "abs_pos_emb.weight"):
            continue
        elif key == "cond_tokens.class_emb.weight":
            out["label_emb.weight"] = value if null_class_row else value[:-1]
        else:
            new = rename_key(key, _TO_THEIRS)
            if new is None:
                unknown.append(key)
            else:
                out[new] = value
    if "extra_pos" not in state or "abs_pos_emb.weight" not in state:
        unknown.append("(positions: U-ViT has one learned table; pos_emb must be 'learned')")
    else:
        grid = state["abs_pos_emb.weight"]
        out["pos_embed"] = torch.cat([state["extra_pos"], grid.reshape(-1, grid.shape[-1])])[None]
    if unknown:
        raise ValueError(f"these hourglass parameters have no U-ViT counterpart: {sorted(unknown)}")
    return out


def from_uvit(state_dict: Mapping[str, Tensor], config: str | UViTRelease | UViTSpec = "imagenet256_uvit_huge",
              **overrides: Any) -> UViT:
    """The hourglass U-ViT equal to an official U-ViT state dict (weights loaded, time input = U-ViT's timestep).

    Args:
        state_dict: U-ViT's names (a released ``.pth``, or a run's ``nnet_ema.pth``).
        config: a released config name (:data:`RELEASES`), or a spec.
        **overrides: further spec fields (with a config name).
    Raises:
        ValueError: naming every missing, unexpected or mis-shaped parameter.
    """
    spec = config if isinstance(config, UViTSpec) else spec_from_release(config, **overrides)
    converted = convert_state_dict(state_dict, spec)
    with torch.device("meta"):
        model = MODEL.build(spec)
    return load_checked(model, converted, "U-ViT")
