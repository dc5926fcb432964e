"""``hourglass flops``: GMACs of one forward pass at several resolutions.

Without ``--grow`` the same model is counted at every size. With ``--grow`` the model grows the
way the paper scales HDiT (Crowson et al. 2024, arXiv 2401.11605, Sec. 4.1, Fig. 3 and Sec. 5.2,
Table 1; App. A): for each doubling above the recipe's native resolution
one more level is added outside the outermost one, with the outermost level's width and
attention (neighborhood k=7 for HDiT) and depth 2 (2 + 2 layers), so the cost stays linear in
pixels. GMAC = multiply-accumulates, the unit the paper (like DiT) calls "GFLOPs".
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from hourglass.cli._common import (
    CLIError,
    add_json_option,
    add_set_option,
    example_epilog,
    format_table,
    human_count,
    load_target,
    print_json,
)

__all__ = ["add_parser", "run", "grow_model_data", "flops_table"]

COMMAND = "flops"
GROW_DEPTH = 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``hourglass flops``."""
    parser = subparsers.add_parser(
        COMMAND,
        help="GMACs per forward at several resolutions (optionally growing levels like the paper)",
        description=__doc__,
        epilog=example_epilog(
            "hourglass flops hdit_imagenet128 --resolution 128 256 512 --grow",
            "hourglass flops recipes/ablation/1_global_only.toml --resolution 128 256 512 --grow",
            "hourglass flops recipes/hdit_ffhq1024.toml --resolution 256 512 1024 --json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="RECIPE|PRESET", help="a .toml recipe or a model preset name")
    parser.add_argument("--resolution", "-r", type=int, nargs="+", metavar="N",
                        help="image sides to count at (default: the recipe's own)")
    parser.add_argument("--grow", action="store_true",
                        help="add one level (outermost width and attention, depth 2) per doubling above the "
                        "native resolution, as the paper does")
    add_set_option(parser)
    add_json_option(parser)
    return parser


def _side(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def grow_model_data(model: dict[str, Any], resolution: int, grow: bool) -> dict[str, Any]:
    """Model data counted at ``resolution``: ``input_size`` set and, with ``grow``, levels added.

    Args:
        model: plain model data with ``levels`` and ``input_size`` (the native resolution).
        resolution: the image side to count at.
        grow: add ``log2(resolution / native)`` levels in front of the outermost one, each a copy
            of it with depth 2 and no dropout.
    Raises:
        CLIError: if growing needs a power-of-two multiple of the native size, or the model has no levels.
    """
    out = dict(model)
    native_h, native_w = _side(model.get("input_size", resolution))
    if grow and resolution > native_h:
        levels = model.get("levels")
        if not isinstance(levels, list) or not levels:
            raise CLIError(f"--grow needs a model with levels; {model.get('type')!r} has none")
        ratio = resolution / native_h
        doublings = round(math.log2(ratio))
        if 2**doublings != ratio or native_h != native_w:
            raise CLIError(
                f"--grow adds one level per doubling, so {resolution} must be the native {native_h}x{native_w} "
                f"times a power of two (and the native size square); use e.g. {native_h * 2} or {native_h * 4}"
            )
        outer = dict(levels[0])
        new = {**outer, "depth": GROW_DEPTH, "dropout": 0.0}
        out["levels"] = [dict(new) for _ in range(doublings)] + [dict(lv) for lv in levels]
    out["input_size"] = resolution
    return out


def flops_table(target: str, resolutions: list[int] | None, grow: bool, overrides: list = ()) -> list[dict[str, Any]]:
    """One row per resolution: ``{"resolution", "levels", "params", "gmacs"}`` (or ``"error"``).

    Raises:
        RecipeError / CLIError: for a broken target.
    """
    from hourglass.cli._common import meta_build
    from hourglass.flops import count_macs
    from hourglass.recipe import RecipeError
    from hourglass.registry import MODEL

    base = load_target(target, overrides)
    model_data = base.model.model_dump(mode="python")
    resolutions = resolutions or [_side(model_data.get("input_size", 0))[0]]
    rows = []
    for res in resolutions:
        if res < 1:
            raise CLIError(f"--resolution {res}: use a positive image side, e.g. 256")
        data = grow_model_data(model_data, res, grow)
        try:
            from pydantic import ValidationError

            spec = MODEL.validate(data)
        except ValidationError as exc:
            from hourglass._recipe_errors import problems_from_validation
            from hourglass.cli._common import _ModelTarget

            problems = problems_from_validation(exc, {"model": data}, _ModelTarget, ("model",))
            rows.append({"resolution": res, "error": "; ".join(str(p) for p in problems)})
            continue
        try:
            model = meta_build(spec, target)
        except RecipeError as exc:
            rows.append({"resolution": res, "error": "; ".join(str(p) for p in exc.problems)})
            continue
        n_levels = len(getattr(spec, "levels", []) or [])
        rows.append({
            "resolution": res,
            "levels": n_levels or None,
            "params": int(sum(p.numel() for p in model.parameters())),
            "gmacs": count_macs(spec) / 1e9,
        })
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the GMAC table of ``args.target``; 2 if any resolution does not fit the model."""
    rows = flops_table(args.target, args.resolution, args.grow, list(args.set))
    if args.json:
        print_json({"target": args.target, "grow": args.grow, "rows": rows})
    else:
        table = [
            [r["resolution"], r.get("levels") or "-", human_count(r["params"]), f"{r['gmacs']:.1f}"]
            if "error" not in r else [r["resolution"], "-", "-", "does not fit"]
            for r in rows
        ]
        print(format_table(["resolution", "levels", "params", "GMACs"], table, right=(0, 1, 2, 3)))
        for r in rows:
            if "error" in r:
                print(f"note: {r['resolution']}: {r['error']}")
    return 2 if any("error" in r for r in rows) else 0
