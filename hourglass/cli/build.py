"""``hourglass build``: validate a recipe or preset, build it on the meta device, print its anatomy.

The model is built on PyTorch's ``meta`` device (shapes only, no memory for weights), so even the
1024^2 FFHQ model reports instantly. For an hourglass model the table has one row per level:
token grid, layers (encoder + decoder, or the middle), width, heads, attention kind, the backend
that would run it on the recipe's runtime device, parameters and GMACs (multiply-accumulates of
one forward pass at the recipe's resolution, the unit the paper calls GFLOPs).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from hourglass.cli._common import (
    Target,
    add_json_option,
    add_set_option,
    format_table,
    human_count,
    load_target,
    print_json,
)

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run", "model_report"]

COMMAND = "build"


HELP = "validate and meta-build a recipe or preset; per-level table of params and GMACs"
EXAMPLES = (
    "hourglass build recipes/hdit_imagenet256.toml",
    "hourglass build hdit_imagenet128 --json",
    "hourglass build recipes/quickstart.toml --set model.levels[0].depth=3",
    "hourglass build hdit_l --resolution 512",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass build``."""
    parser.add_argument("target", metavar="RECIPE|PRESET", help="a .toml recipe or a model preset name (hourglass list presets)")
    parser.add_argument("--resolution", type=int, metavar="N", help="image side to build and count at (sets model.input_size)")
    parser.add_argument(
        "--inference", action="store_true",
        help="resolve attention backends for inference (no gradients) instead of training",
    )
    add_set_option(parser)
    add_json_option(parser)


def _backend(kernel: str | None, runtime: Any, requires_grad: bool) -> tuple[str | None, str | None]:
    """(backend name, None) or (None, reason) for ``kernel`` on the runtime's device (``"-"``: no kernel)."""
    import torch

    from hourglass.backends import BackendUnavailableError, resolve_backend
    from hourglass.devices import resolve_device, resolve_dtype

    if kernel is None:
        return "-", None
    try:
        device = resolve_device(runtime.device)
        dtype = getattr(torch, resolve_dtype(runtime.dtype, runtime.device))
        return resolve_backend(kernel, device, dtype, requires_grad, explicit=runtime.backends.get(kernel)), None
    except (BackendUnavailableError, ValueError) as exc:
        return None, str(exc)


def model_report(model_spec: Any, runtime: Any, requires_grad: bool = True) -> dict[str, Any]:
    """Parameters, GMACs and per-stage anatomy of a model spec (built on the meta device).

    Args:
        model_spec: a validated model spec (``input_size`` gives the resolution counted at).
        runtime: a :class:`hourglass.recipe.RuntimeSection` (device, dtype, backends).
        requires_grad: resolve backends for training (True) or inference.
    Returns:
        ``{"model", "resolution", "params", "gmacs", "levels": [...], "other": [...]}``; one
        ``levels`` row per stage of the backbone (an HDiT level, DiT's layers, U-ViT's blocks).
    """
    from hourglass.cli._common import meta_build
    from hourglass.flops import macs_by_module
    from hourglass.registry import ATTENTION
    from hourglass.spec import as_pair

    model = meta_build(model_spec)
    macs = macs_by_module(model)
    params: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():
        params[name] += p.numel()

    def within(prefixes: tuple[str, ...], table: dict[str, int]) -> int:
        return sum(v for k, v in table.items() if any(k == p[:-1] or k.startswith(p) for p in prefixes))

    levels_out: list[dict[str, Any]] = []
    claimed: list[str] = []
    for index, stage in enumerate(model.stages()):
        claimed += stage.prefixes
        kind = ATTENTION.get(stage.attention.type)
        backend, reason = _backend(kind.kernel, runtime, requires_grad)
        levels_out.append({
            "level": index,
            "stage": stage.name,
            "grid": list(stage.grid),
            "extra_tokens": stage.extra_tokens,
            "layers": stage.layers,
            "width": stage.width,
            "d_ff": stage.d_ff,
            "heads": kind.heads(stage.attention, stage.width),
            "attention": kind.label(stage.attention),
            "attention_kind": stage.attention.type,
            "kernel": kind.kernel,
            "backend": backend,
            "backend_error": reason,
            "dropout": stage.dropout,
            "params": within(stage.prefixes, params),
            "gmacs": within(stage.prefixes, macs) / 1e9,
        })
    # everything no stage claims, grouped by top-level module (in the model's order)
    other: dict[str, dict[str, Any]] = {name: {"part": name, "params": 0, "gmacs": 0.0} for name, _ in
                                        model.named_children()}
    for table, key, scale in ((params, "params", 1), (macs, "gmacs", 1e9)):
        for name, value in table.items():
            if not any(name == p[:-1] or name.startswith(p) for p in claimed):
                top = name.split(".")[0]
                other.setdefault(top, {"part": top, "params": 0, "gmacs": 0.0})[key] += value / scale
    other = {k: v for k, v in other.items() if v["params"] or v["gmacs"]}
    return {
        "model": model_spec.type,
        "resolution": list(as_pair(model_spec.input_size)),
        "params": int(sum(params.values())),
        "gmacs": float(sum(macs.values()) / 1e9),
        "levels": levels_out,
        "other": list(other.values()),
    }


def _dtype_text(runtime: Any) -> str:
    from hourglass.devices import resolve_dtype

    try:
        return resolve_dtype(runtime.dtype, runtime.device)
    except ValueError:
        return runtime.dtype


def _grid_text(level: dict[str, Any]) -> str:
    h, w = level["grid"]
    return f"{h}x{w}" + (f"+{level['extra_tokens']}" if level["extra_tokens"] else "")


def _g(gmacs: float) -> str:
    return f"{gmacs:.2f}" if gmacs >= 1 or gmacs == 0 else f"{gmacs:.3g}"


def _print(report: dict[str, Any], target: Target, requires_grad: bool) -> None:
    from hourglass.devices import resolve_device

    res = report["resolution"]
    runtime = target.runtime
    try:
        device = str(resolve_device(runtime.device))
    except ValueError:
        device = runtime.device
    print(f"{target.label}: {report['model']} at {res[0]}x{res[1]}" if res else f"{target.label}: {report['model']}")
    if report["levels"]:
        rows = []
        for lv in report["levels"]:
            rows.append([
                lv["stage"], _grid_text(lv), lv["layers"], lv["width"],
                lv["heads"] if lv["heads"] is not None else "-", lv["attention"],
                lv["backend"] or "unavailable", human_count(lv["params"]), _g(lv['gmacs']),
            ])
        for part in report["other"]:
            rows.append(["", "", "", "", "", part["part"], "", human_count(part["params"]), _g(part['gmacs'])])
        rows.append(["total", "", "", "", "", "", "", human_count(report["params"]), _g(report['gmacs'])])
        headers = ["level", "grid", "layers", "width", "heads", "attention", "backend", "params", "GMACs"]
        print(format_table(headers, rows, right=(2, 3, 4, 7, 8)))
    else:
        rows = [[p["part"], human_count(p["params"]), _g(p['gmacs'])] for p in report["other"]]
        rows.append(["total", human_count(report["params"]), _g(report['gmacs'])])
        print(format_table(["part", "params", "GMACs"], rows, right=(1, 2)))
    mode = "training" if requires_grad else "inference"
    print(f"params {report['params']:,}  GMACs {_g(report['gmacs'])} per forward (batch 1)  "
          f"backends for {mode} on {device}/{_dtype_text(runtime)}")
    for lv in report["levels"]:
        if lv["backend_error"]:
            print(f"note: {lv['stage']}: {lv['backend_error']}")


def run(args: argparse.Namespace) -> int:
    """Validate, meta-build and report ``args.target``; 0 on success."""
    overrides = list(args.set)
    if args.resolution is not None:
        overrides.append(("model.input_size", args.resolution))
    target = load_target(args.target, overrides)
    requires_grad = not args.inference
    report = model_report(target.model, target.runtime, requires_grad=requires_grad)
    if args.json:
        print_json({"target": target.label, **report})
    else:
        _print(report, target, requires_grad)
    return 0
