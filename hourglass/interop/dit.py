"""Official DiT checkpoints (facebookresearch/DiT ``models.py``) <-> hourglass :class:`~hourglass.models.dit.DiT`.

The released ``DiT-XL-2-256x256.pt`` / ``DiT-XL-2-512x512.pt`` are plain state dicts of DiT's
``models.DiT`` (its training checkpoints hold the same under ``"ema"`` and ``"model"``).
:func:`from_dit` builds the hourglass DiT with the same weights; the maths are DiT's own (the test
suite checks the outputs against a re-implementation of ``models.py``), with the model's time input
set to DiT's DDPM timestep (``mapping.time_input = "timestep"``).

Names (``i`` a block index; DiT -> hourglass):

| DiT | hourglass | note |
|---|---|---|
| ``x_embedder.proj.weight`` ``(D, C, p, p)`` | ``patch_in.proj.weight`` ``(D, p*p*C)`` | the conv kernel as a Linear over ``(p, p, C)`` patches |
| ``x_embedder.proj.bias`` | ``patch_in.proj.bias`` | |
| ``pos_embed`` ``(1, T, D)`` | none | the fixed sin-cos table; hourglass computes it, so it is checked and dropped |
| ``t_embedder.mlp.{0,2}`` | ``mapping.time_mlp.{0,2}`` | |
| ``y_embedder.embedding_table`` | ``mapping.class_emb`` | ``num_classes + 1`` rows, the last is "no class" |
| ``blocks.i.adaLN_modulation.1`` ``(6D, D)`` | ``layers.i.attn_norm.linear`` (rows ``:3D``) and ``layers.i.ffn_norm.linear`` (rows ``3D:``) | (shift, scale, gate) of attention, then of the MLP |
| ``blocks.i.attn.qkv``, ``blocks.i.attn.proj`` | ``layers.i.attn.qkv_proj``, ``layers.i.attn.out_proj`` | |
| ``blocks.i.mlp.fc1``, ``blocks.i.mlp.fc2`` | ``layers.i.ffn.up_proj``, ``layers.i.ffn.down_proj`` | |
| ``final_layer.adaLN_modulation.1`` | ``final_layer.modulation`` | |
| ``final_layer.linear`` | ``final_layer.unpatch.proj`` | same ``(p, p, C_out)`` output order |

DiT's attention heads do not show in its weights: the preset (``dit_xl_2``, ...) names them, and
everything else (input channels, learned sigma, classes, input size) is read off the weights and
checked against it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from hourglass.models.dit import DiT, DiTSpec
from hourglass.models.factory import get_preset, model_spec
from hourglass.registry import MODEL

__all__ = ["spec_from_dit", "convert_state_dict", "to_dit_state_dict", "from_dit", "sincos_table", "load_checked",
           "rename_key"]

_POS_ATOL = 1e-5  # the file's fp32 table (numpy float64 rounded) vs ours


def _require(state: Mapping[str, Tensor], key: str, what: str) -> Tensor:
    if key not in state:
        first = ", ".join(list(state)[:6])
        raise ValueError(f"not an official {what} state dict: it has no {key!r} (first keys: {first})")
    return state[key]


def _depth(state: Mapping[str, Any], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"^{re.escape(prefix)}(\d+)\.", k))}
    return max(found) + 1 if found else 0


def spec_from_dit(state_dict: Mapping[str, Tensor], preset: str = "dit_xl_2", **overrides: Any) -> DiTSpec:
    """The hourglass spec of an official DiT state dict: ``preset`` (which names the heads), with the
    channels, classes and input size read off the weights, and DiT's timestep input.

    Args:
        state_dict: DiT's names (see the module docstring).
        preset: a ``dit`` preset, e.g. ``"dit_xl_2"``.
        **overrides: further spec fields (e.g. ``attention={...}``).
    Raises:
        ValueError: not a DiT state dict, or one whose depth, width or patch size differ from the preset's.
    """
    base = get_preset(preset)
    if base.get("type") != "dit":
        raise ValueError(f"{preset!r} is not a DiT preset; use one of dit_{{s,b,l,xl}}_{{2,4,8}}")
    conv = _require(state_dict, "x_embedder.proj.weight", "DiT")
    width, c_in, p = conv.shape[0], conv.shape[1], conv.shape[2]
    c_out = _require(state_dict, "final_layer.linear.weight", "DiT").shape[0] // (p * p)
    tokens = _require(state_dict, "pos_embed", "DiT").shape[1]
    side = round(tokens**0.5)
    rows = state_dict.get("y_embedder.embedding_table.weight")
    num_classes = rows.shape[0] - 1 if rows is not None else 0
    depth = _depth(state_dict, "blocks.")
    mismatch = [f"{name} {theirs} (the preset: {ours})" for name, theirs, ours in (
        ("depth", depth, base["depth"]), ("width", width, base["width"]), ("patch_size", p, base["patch_size"]),
    ) if theirs != ours]
    if mismatch:
        raise ValueError(f"the weights do not fit preset {preset!r}: they have {', '.join(mismatch)}; pick the DiT "
                         "preset of the checkpoint (DiT-XL/2: dit_xl_2, DiT-B/4: dit_b_4, ...)")
    mapping = {"type": "dit", **dict(base.get("mapping") or {}), "time_input": "timestep"}
    data = {**base, "in_channels": c_in, "out_channels": c_out, "num_classes": num_classes,
            "input_size": side * p, "mapping": mapping, **overrides}
    spec = model_spec(data)
    if not isinstance(spec, DiTSpec):  # pragma: no cover - a dit preset builds a DiT spec
        raise TypeError(f"expected a DiT spec, got {type(spec).__name__}")
    return spec


def sincos_table(width: int, grid: int | tuple[int, int]) -> Tensor:
    """The fixed positions hourglass's DiT adds, flattened as DiT's ``pos_embed``: ``(1, h*w, width)`` float32."""
    from hourglass.nn.pos_emb import SinCos2D

    h, w = (grid, grid) if isinstance(grid, int) else grid
    return SinCos2D(width=width).table(h, w, dtype=torch.float64).reshape(1, h * w, width).float()


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """DiT names -> hourglass names (every tensor; ``pos_embed`` is checked against the sin-cos table and dropped).

    Args:
        state_dict: an official DiT state dict.
    Raises:
        ValueError: an unknown name, or a ``pos_embed`` that is not DiT's fixed table.
    """
    width = _require(state_dict, "x_embedder.proj.weight", "DiT").shape[0]
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key == "pos_embed":
            side = round(value.shape[1] ** 0.5)
            table = sincos_table(value.shape[-1], side)
            if value.shape != table.shape or not torch.allclose(value.float(), table, atol=_POS_ATOL):
                raise ValueError(f"pos_embed {tuple(value.shape)} is not DiT's fixed sin-cos table of a {side}x{side} "
                                 "grid (hourglass computes that table; a learned or changed pos_embed cannot be kept)")
            continue
        if key == "x_embedder.proj.weight":
            out["patch_in.proj.weight"] = value.permute(0, 2, 3, 1).reshape(value.shape[0], -1)
            continue
        m = re.match(r"^blocks\.(\d+)\.adaLN_modulation\.1\.(weight|bias)$", key)
        if m:
            i, kind = m.groups()
            attn, mlp = value[: 3 * width], value[3 * width:]
            out[f"layers.{i}.attn_norm.linear.{kind}"] = attn
            out[f"layers.{i}.ffn_norm.linear.{kind}"] = mlp
            continue
        new = rename_key(key, _TO_OURS)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"names that are not DiT's: {sorted(unknown)}")
    return out


_TO_OURS: list[tuple[str, str]] = [
    (r"^x_embedder\.proj\.bias$", "patch_in.proj.bias"),
    (r"^t_embedder\.mlp\.(0|2)\.(weight|bias)$", r"mapping.time_mlp.\1.\2"),
    (r"^y_embedder\.embedding_table\.weight$", "mapping.class_emb.weight"),
    (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"layers.\1.attn.qkv_proj.\2"),
    (r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$", r"layers.\1.attn.out_proj.\2"),
    (r"^blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$", r"layers.\1.ffn.up_proj.\2"),
    (r"^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$", r"layers.\1.ffn.down_proj.\2"),
    (r"^final_layer\.adaLN_modulation\.1\.(weight|bias)$", r"final_layer.modulation.\1"),
    (r"^final_layer\.linear\.(weight|bias)$", r"final_layer.unpatch.proj.\1"),
]
_TO_THEIRS: list[tuple[str, str]] = [
    (r"^patch_in\.proj\.bias$", "x_embedder.proj.bias"),
    (r"^mapping\.time_mlp\.(0|2)\.(weight|bias)$", r"t_embedder.mlp.\1.\2"),
    (r"^mapping\.class_emb\.weight$", "y_embedder.embedding_table.weight"),
    (r"^layers\.(\d+)\.attn\.qkv_proj\.(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (r"^layers\.(\d+)\.attn\.out_proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (r"^layers\.(\d+)\.ffn\.up_proj\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2"),
    (r"^layers\.(\d+)\.ffn\.down_proj\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2"),
    (r"^final_layer\.modulation\.(weight|bias)$", r"final_layer.adaLN_modulation.1.\1"),
    (r"^final_layer\.unpatch\.proj\.(weight|bias)$", r"final_layer.linear.\1"),
]


def rename_key(key: str, rules: list[tuple[str, str]]) -> str | None:
    """``key`` renamed by the first ``(pattern, replacement)`` of ``rules`` that matches it (None: none does)."""
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def to_dit_state_dict(model: DiT | Mapping[str, Tensor], spec: DiTSpec | None = None) -> dict[str, Tensor]:
    """hourglass names -> DiT names: the state dict DiT's ``models.DiT`` would load (``pos_embed`` included).

    Args:
        model: an hourglass DiT, or its state dict (then ``spec`` is needed).
        spec: the DiT's spec (default: ``model.spec``).
    Raises:
        ValueError: a name with no DiT counterpart (a swapped component: RoPE, GEGLU, HDiT's mapping, ...).
    """
    if isinstance(model, Mapping):
        if spec is None:
            raise ValueError("pass spec= with a state dict (the pos_embed table needs the width and grid)")
        state = dict(model)
    else:
        state, spec = model.state_dict(), spec or model.spec
    out: dict[str, Tensor] = {}
    unknown = []
    adaln: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        if key == "patch_in.proj.weight":
            p = spec.stride[0]
            out["x_embedder.proj.weight"] = value.reshape(value.shape[0], p, p, -1).permute(0, 3, 1, 2)
            continue
        m = re.match(r"^layers\.(\d+)\.(attn|ffn)_norm\.linear\.(weight|bias)$", key)
        if m:
            i, part, kind = m.groups()
            adaln.setdefault((i, kind), {})[part] = value
            continue
        new = rename_key(key, _TO_THEIRS)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    for (i, kind), parts in adaln.items():
        if set(parts) != {"attn", "ffn"}:
            unknown.append(f"layers.{i}.*_norm.linear.{kind}")
            continue
        out[f"blocks.{i}.adaLN_modulation.1.{kind}"] = torch.cat([parts["attn"], parts["ffn"]])
    if unknown:
        raise ValueError(f"these hourglass parameters have no DiT counterpart (a component DiT does not have): "
                         f"{sorted(unknown)}")
    out["pos_embed"] = sincos_table(spec.width, spec.token_grid)
    return out


def load_checked(model: Any, converted: Mapping[str, Tensor], what: str) -> Any:
    """Load ``converted`` into ``model`` (built on the meta device) after checking every name and shape.

    Raises:
        ValueError: naming the missing, unexpected and mis-shaped parameters.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = [f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in sorted(set(expected) & set(converted)) if tuple(converted[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "",
                 f"shape mismatches {wrong}" if wrong else ""]
        raise ValueError(f"the {what} weights do not match the model: " + "; ".join(p for p in parts if p))
    model.load_state_dict({k: v.detach().clone() for k, v in converted.items()}, assign=True)
    return model


def from_dit(state_dict: Mapping[str, Tensor], preset: str = "dit_xl_2", **overrides: Any) -> DiT:
    """The hourglass DiT equal to an official DiT state dict (weights loaded, time input = DDPM timesteps).

    Args:
        state_dict: DiT's names (``DiT-XL-2-256x256.pt``, or the ``"ema"`` entry of a training checkpoint).
        preset: the DiT preset of the checkpoint (names the attention heads), e.g. ``"dit_xl_2"``.
        **overrides: further spec fields.
    Raises:
        ValueError: naming every missing, unexpected or mis-shaped parameter.
    """
    spec = spec_from_dit(state_dict, preset, **overrides)
    converted = convert_state_dict(state_dict)
    with torch.device("meta"):
        model = MODEL.build(spec)
    return load_checked(model, converted, "DiT")
