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
from typing import Any

from hourglass.cli._common import (
    CLIError,
    add_json_option,
    add_set_option,
    format_table,
    human_count,
    load_target,
    print_json,
)

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run", "flops_table"]

COMMAND = "flops"


HELP = "GMACs per forward at several resolutions (optionally growing levels like the paper)"
EXAMPLES = (
    "hourglass flops hdit_imagenet128 --resolution 128 256 512 --grow",
    "hourglass flops recipes/ablation/1_global_only.toml --resolution 128 256 512 --grow",
    "hourglass flops recipes/hdit_ffhq1024.toml --resolution 256 512 1024 --json",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass flops``."""
    parser.add_argument("target", metavar="RECIPE|PRESET", help="a .toml recipe or a model preset name")
    parser.add_argument("--resolution", "-r", type=int, nargs="+", metavar="N",
                        help="image sides to count at (default: the recipe's own)")
    parser.add_argument("--grow", action="store_true",
                        help="add one level (outermost width and attention, depth 2) per doubling above the "
                        "native resolution, as the paper does")
    add_set_option(parser)
    add_json_option(parser)


def flops_table(target: str, resolutions: list[int] | None, grow: bool, overrides: list = ()) -> list[dict[str, Any]]:
    """One row per resolution: ``{"resolution", "levels", "params", "gmacs"}`` (or ``"error"``).

    Raises:
        RecipeError / CLIError: for a broken target.
    """
    from pydantic import ValidationError

    from hourglass.cli._common import _ModelTarget, meta_build
    from hourglass.flops import count_macs
    from hourglass.models.hdit import grow as grow_levels
    from hourglass.recipe import RecipeError
    from hourglass.recipe.problems import problems_from_validation
    from hourglass.registry import MODEL
    from hourglass.spec import as_pair

    base = load_target(target, overrides)
    model_data = base.model.model_dump(mode="python")
    resolutions = resolutions or [as_pair(model_data.get("input_size", 0))[0]]
    rows = []
    for res in resolutions:
        if res < 1:
            raise CLIError(f"--resolution {res}: use a positive image side, e.g. 256")
        try:
            data = grow_levels(model_data, res) if grow else {**model_data, "input_size": res}
        except ValueError as exc:
            raise CLIError(f"--grow: {exc}") from None
        try:
            spec = MODEL.validate(data)
        except ValidationError as exc:
            problems = problems_from_validation(exc, {"model": data}, _ModelTarget, ("model",))
            rows.append({"resolution": res, "error": "; ".join(str(p) for p in problems)})
            continue
        try:
            model = meta_build(spec, target)
        except RecipeError as exc:
            rows.append({"resolution": res, "error": "; ".join(str(p) for p in exc.problems)})
            continue
        rows.append({
            "resolution": res,
            "levels": len(model.stages()),
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
