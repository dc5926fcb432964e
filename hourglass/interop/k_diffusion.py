"""Load k-diffusion ``image_transformer_v2`` (the authors' HDiT code) configs and checkpoints.

``from_k_diffusion(config, state_dict)`` returns the equivalent :class:`hourglass.models.HDiT`,
so checkpoints trained with the authors' code run on current NATTEN, on CPU, or on any backend.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from hourglass.models.factory import model_spec
from hourglass.models.hdit import HDiT, HDiTSpec
from hourglass.registry import ATTENTION, MODEL
from hourglass.spec import as_pair

__all__ = ["spec_from_k_diffusion", "convert_state_dict", "from_k_diffusion"]

_RULES: list[tuple[str, str]] = [
    (r"^time_emb\.", "mapping.time_emb."),
    (r"^time_in_proj\.", "mapping.time_in_proj."),
    (r"^aug_emb\.", "mapping.aug_emb."),
    (r"^aug_in_proj\.", "mapping.aug_in_proj."),
    (r"^class_emb\.", "mapping.class_emb."),
    (r"^mapping_cond_in_proj\.", "mapping.cond_in_proj."),
    (r"^mapping\.(in_norm|out_norm|blocks)\.", r"mapping.net.\1."),
    (r"^down_levels\.(\d+)\.(\d+)\.", r"encoder.\1.\2."),
    (r"^mid_level\.(\d+)\.", r"middle.\1."),
    (r"^up_levels\.(\d+)\.(\d+)\.", r"decoder.\1.\2."),
    (r"\.self_attn\.norm\.", ".attn_norm."),
    (r"\.self_attn\.", ".attn."),
    (r"\.ff\.norm\.", ".ffn_norm."),
    (r"\.ff\.", ".ffn."),
    (r"^splits\.(\d+)\.proj\.", r"splits.\1.up.proj."),
]


def _model_section(config: Mapping[str, Any]) -> tuple[Mapping[str, Any], int | None]:
    """The ``model`` section and ``dataset.num_classes`` (None when the config has no dataset section)."""
    if "model" in config and isinstance(config["model"], Mapping):
        model, dataset = config["model"], config.get("dataset")
    else:
        model, dataset = config, None
    num_classes = int(dataset.get("num_classes", 0) or 0) if isinstance(dataset, Mapping) else None
    kind = model.get("type", "image_transformer_v2")
    if kind != "image_transformer_v2":
        raise ValueError(
            f"only k-diffusion model type 'image_transformer_v2' (HDiT) can be converted, got {kind!r}"
        )
    return model, num_classes


#: the keys of a ``self_attns`` entry that k-diffusion's ``make_model`` reads (it ignores others,
#: e.g. a neighborhood ``dilation``); every other option keeps its hourglass default, which equals
#: k-diffusion's
_KDIFF_ATTENTION_KEYS = ("d_head", "kernel_size", "window_size")
#: the attention types k-diffusion's ``make_model`` knows, with the keys it requires (reads without a
#: default); each is the hourglass kind of the same name with ``-`` for ``_``
_KDIFF_TYPES: dict[str, tuple[str, ...]] = {
    "global": (), "neighborhood": (), "shifted-window": ("window_size",), "none": (),
}


def _attention(entry: Mapping[str, Any], path: str) -> dict[str, Any]:
    """One ``self_attns`` entry, read as k-diffusion's ``make_model`` reads it.

    k-diffusion's type names are hourglass's attention kinds with ``-`` for ``_``
    (``shifted-window`` is ``shifted_window``); the options it reads are passed to the kind's spec.
    """
    if not isinstance(entry, Mapping):
        raise ValueError(f"{path} must be a table such as {{\"type\": \"global\"}}, got {entry!r}")
    kd_type = entry.get("type")
    if kd_type not in _KDIFF_TYPES:
        raise ValueError(
            f"{path}.type: unknown k-diffusion attention type {kd_type!r}; expected one of {', '.join(_KDIFF_TYPES)}"
        )
    name = kd_type.replace("-", "_")
    for key in _KDIFF_TYPES[kd_type]:
        if key not in entry:
            raise ValueError(f"{path}.{key} is missing (k-diffusion requires it for {kd_type})")
    fields = ATTENTION.spec_class(name).model_fields
    return {"type": name, **{k: entry[k] for k in _KDIFF_ATTENTION_KEYS if k in entry and k in fields}}


def _fitting_input_size(data: dict[str, Any], start: int = 256, tries: int = 128) -> tuple[int, int]:
    """The smallest ``(H, W)``, each ``>= start`` and a multiple of the model's stride, that every level fits.

    k-diffusion's model takes images of any fitting size and its config need not say one; hourglass
    validates a spec at its ``input_size``, so a config without one gets a size whose token grids
    every level's attention kind accepts (asked through the spec's own validation).
    """
    sh, sw = HDiTSpec.model_construct(**data).stride  # stride needs only patch_size and the level count
    h0, w0 = -(-start // sh) * sh, -(-start // sw) * sw
    for total in range(tries):
        for i in range(total + 1):
            size = (h0 + i * sh, w0 + (total - i) * sw)
            try:
                model_spec({**data, "input_size": list(size)})
            except ValueError:  # pydantic's ValidationError: this size does not fit some level
                continue
            return size
    raise ValueError(
        f"no input_size from {start} to {start + tries * max(sh, sw)} px fits every level of this config; "
        "add model.input_size to the k-diffusion config"
    )


def spec_from_k_diffusion(config: Mapping[str, Any]) -> HDiTSpec:
    """Translate a k-diffusion config (whole JSON, or its ``model`` section) into an :class:`HDiTSpec`.

    Missing keys get k-diffusion's own defaults (``load_config``): ``d_ffs`` 3 x width,
    ``self_attns`` neighborhood (d_head 64, k 7) at every level but the last, which is global,
    ``dropout_rate`` 0, ``mapping_width`` 256, ``mapping_depth`` 2, ``mapping_d_ff`` 3 x
    mapping width. ``dataset.num_classes`` gives the real classes (the embedding's extra row is
    CFG's "no class"); without a dataset section the model is unconditional (see
    :func:`from_k_diffusion`, which reads the class count off the weights instead). Without
    ``input_size`` the spec gets the smallest size from 256 up that fits every level.
    """
    model, num_classes = _model_section(config)
    try:
        depths, widths = list(model["depths"]), list(model["widths"])
    except KeyError as exc:
        raise ValueError(f"k-diffusion config: model.{exc.args[0]} is missing") from None
    n = len(depths)
    d_ffs = list(model.get("d_ffs") or [3 * w for w in widths])
    attns = list(model.get("self_attns") or (
        [{"type": "neighborhood", "d_head": 64, "kernel_size": 7}] * (n - 1) + [{"type": "global", "d_head": 64}]
    ))
    dropout = model.get("dropout_rate")
    dropouts = [float(p) for p in dropout] if isinstance(dropout, (list, tuple)) else [float(dropout or 0.0)] * n
    if not (len(widths) == len(d_ffs) == len(attns) == len(dropouts) == n):
        raise ValueError(
            "k-diffusion config: model.depths, widths, d_ffs, self_attns and dropout_rate must have one entry "
            f"per level; got lengths {n}, {len(widths)}, {len(d_ffs)}, {len(attns)}, {len(dropouts)}"
        )
    levels = [
        {"depth": d, "width": w, "d_ff": f, "dropout": p, "attention": _attention(a, f"model.self_attns[{i}]")}
        for i, (d, w, f, a, p) in enumerate(zip(depths, widths, d_ffs, attns, dropouts, strict=True))
    ]
    patch = as_pair(model.get("patch_size", [4, 4]))
    mapping_width = int(model.get("mapping_width") or 256)
    depth = model.get("mapping_depth")
    data = {
        "type": "hdit",
        "levels": levels,
        "mapping": {
            "type": "hdit",
            "depth": 2 if depth is None else int(depth),
            "width": mapping_width,
            "d_ff": int(model.get("mapping_d_ff") or 3 * mapping_width),
            "dropout": float(model.get("mapping_dropout_rate") or 0.0),
        },
        "patch_size": patch,
        "in_channels": model.get("input_channels", 3),
        "num_classes": num_classes or 0,
        "mapping_cond_dim": int(model.get("mapping_cond_dim") or 0),
    }
    data["input_size"] = as_pair(model["input_size"]) if model.get("input_size") else _fitting_input_size(data)
    spec = model_spec(data)
    if not isinstance(spec, HDiTSpec):  # pragma: no cover - MODEL "hdit" is always HDiT
        raise TypeError(f"expected an HDiT spec, got {type(spec).__name__}")
    return spec


def _strip_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop whatever prefix (``model.``, ``model_ema.inner_model.``, ...) sits before the model's names."""
    anchor = "patch_in.proj.weight"
    prefixes = sorted((k[: -len(anchor)] for k in state_dict if k.endswith(anchor)), key=len)
    if not prefixes:
        raise ValueError(
            f"not a k-diffusion image_transformer_v2 state_dict: no '{anchor}' "
            f"(first keys: {', '.join(list(state_dict)[:5])})"
        )
    prefix = prefixes[0]  # the shortest: e.g. the EMA copy's prefix if only it is present
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename k-diffusion parameter names to hourglass's (``model.``/``inner_model.`` prefixes stripped)."""
    out = {}
    for key, value in _strip_prefix(state_dict).items():
        new = key
        for pattern, repl in _RULES:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


def from_k_diffusion(config: Mapping[str, Any], state_dict: Mapping[str, Tensor]) -> HDiT:
    """Build the hourglass HDiT equal to a k-diffusion ``image_transformer_v2`` and load its weights.

    Args:
        config: the k-diffusion config JSON (``model`` and ``dataset`` sections) or its model section
            (then the class count is read off the class embedding's rows).
        state_dict: the k-diffusion model's parameters and buffers (prefixes are stripped).
    Raises:
        ValueError: for configs that are not HDiT, or weights that do not fit the config
            (missing/unexpected names, wrong shapes), naming each mismatch.
    """
    converted = convert_state_dict(state_dict)
    model_section, num_classes = _model_section(config)
    rows = converted.get("mapping.class_emb.weight")
    if num_classes is None and rows is not None:  # no dataset section: the embedding has classes + 1 rows
        config = {"model": model_section, "dataset": {"num_classes": rows.shape[0] - 1}}
    spec = spec_from_k_diffusion(config)
    with torch.device("meta"):
        model = MODEL.build(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(converted))
        if tuple(converted[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            "the k-diffusion weights do not match their config: "
            + "; ".join(
                part for part in (
                    f"missing {missing}" if missing else "",
                    f"unexpected {unexpected}" if unexpected else "",
                    f"shape mismatches {wrong}" if wrong else "",
                ) if part
            )
        )
    model.load_state_dict({k: v.detach().clone() for k, v in converted.items()}, assign=True)
    return model
