"""``hourglass validate``: check recipes and list every problem of each file.

Each recipe is parsed, overridden (``--set``), validated against the schema and the cross-field
rules (widths vs heads, windows vs token grids, image size vs patch and levels, classes and
channels vs the data and the VAE), its data looked for (an image folder must exist and hold an image;
a ``[vae]``'s folder or Hub cache entry must be there, and diffusers installed; each of ``[train] trackers``'
packages installed; ``--no-data-check`` skips this on a machine without the data), then built on the meta device.
Every problem is printed with its recipe path, the value found and how to fix it. Exit status 2
if any file has a problem.
"""

from __future__ import annotations

import argparse
import sys

from hourglass.cli._common import add_json_option, add_set_option, human_count, meta_build, print_json, print_notes
from hourglass.recipe import RecipeError, availability_problems, load_recipe
from hourglass.recipe.problems import with_values
from hourglass.spec import NO_VALUE

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

COMMAND = "validate"


HELP = "check recipes: every problem of each file, with its path and a fix"
EXAMPLES = (
    "hourglass validate recipes/hdit_ffhq1024.toml --set data.dataset.root=data/ffhq1024",
    "hourglass validate recipes/*.toml recipes/ablation/*.toml --no-data-check   # their data lives elsewhere",
    "hourglass validate my.toml --set data.dataset.root=data/ffhq256",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass validate``."""
    parser.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe files (.toml)")
    parser.add_argument("--print", dest="print_resolved", action="store_true",
                        help="also print each valid recipe fully resolved (all defaults filled in) as TOML")
    parser.add_argument("--no-data-check", dest="data_check", action="store_false",
                        help="do not look for the data, the VAE's files and the trackers' packages (e.g. an image "
                        "folder that lives on another machine)")
    add_set_option(parser)
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    """Validate each file of ``args.recipes``; 0 if all are valid, 2 otherwise."""
    results = []
    failed = 0
    for path in args.recipes:
        notes: list[str] = []
        try:
            try:
                recipe = load_recipe(path, args.set, notes=notes)
            finally:
                print_notes(notes)  # also when the recipe fails: what a type change kept and dropped
            if args.data_check:
                missing = availability_problems(recipe.data, vae=recipe.vae, trackers=recipe.train.trackers)
                if missing:
                    raise RecipeError(with_values(missing, recipe.to_data()), path)
            model = meta_build(recipe.model, path)
        except RecipeError as exc:
            failed += 1
            results.append({"recipe": path, "ok": False, "problems": [
                {"path": p.path, "value": None if p.value is NO_VALUE else p.value, "message": p.message, "hint": p.hint}
                for p in exc.problems
            ]})
            if not args.json:
                print(f"FAIL {exc}", file=sys.stderr)
            continue
        params = sum(p.numel() for p in model.parameters())
        results.append({"recipe": path, "ok": True, "model": recipe.model.type, "params": params})
        if not args.json:
            latent = f" on the latents of a vae ({recipe.vae.type})" if recipe.vae is not None else ""
            print(f"ok   {path}: {recipe.model.type}, {human_count(params)} params{latent}, "
                  f"data {recipe.data.dataset.type}, {recipe.train.steps} steps")
            if args.print_resolved:
                print(recipe.to_toml())
    if args.json:
        print_json({"ok": failed == 0, "results": results})
    elif len(args.recipes) > 1:
        print(f"{len(args.recipes) - failed} of {len(args.recipes)} recipes valid")
    return 2 if failed else 0

