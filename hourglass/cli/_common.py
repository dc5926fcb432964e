"""Helpers shared by the ``hourglass`` commands: errors, ``--set``, targets, tables.

A command reports a problem the user can fix by raising :class:`CLIError` (or letting a
:class:`hourglass.recipe.RecipeError`, ``RegistryError`` or ``PluginError`` through):
:func:`hourglass.cli.main` prints the message, without a traceback, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from hourglass.recipe import Recipe, RecipeError, RuntimeSection, apply_overrides, load_recipe
from hourglass.recipe.problems import problems_from_validation
from hourglass.registry import MODEL
from hourglass.spec import Component, Problem, Spec

__all__ = [
    "CLIError",
    "EXIT_USAGE",
    "add_set_option",
    "add_json_option",
    "Target",
    "load_target",
    "format_table",
    "print_json",
    "human_count",
    "example_epilog",
    "meta_build",
    "print_notes",
]

#: exit status of every user error (bad recipe, bad arguments, unknown names)
EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: printed as ``hourglass <command>: error: <message>``, exit status 2."""


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--set KEY=VALUE`` override option (stored in ``args.set``)."""
    parser.add_argument(
        "--set", "-s", dest="set", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe value before validation; repeatable. KEY is dotted with list indices "
        "(train.lr, model.levels[0].depth, data.dataset.root); VALUE is read as TOML (1e-4, [2, 11], "
        "{type = \"global\"}, true), else as a plain string",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` (machine-readable output on stdout, stored in ``args.json``)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def print_notes(notes: Iterable[str]) -> None:
    """Print notes (e.g. what a ``--set`` of a component's type kept and dropped) on stderr."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def example_epilog(*examples: str) -> str:
    """An ``epilog`` listing example command lines (use with RawDescriptionHelpFormatter)."""
    return "examples:\n" + "\n".join(f"  {e}" for e in examples)


class _ModelTarget(Spec):
    """What ``build`` and ``flops`` need from a preset: a model and (default) runtime settings."""

    model: Component(MODEL) = Field(...)  # type: ignore[valid-type]
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)


class Target:
    """A model to inspect: from a recipe file or a preset name.

    Attributes:
        label: the recipe path or preset name.
        model: the validated model spec.
        runtime: the runtime section (defaults for presets).
        recipe: the full :class:`Recipe` when the target is a recipe file, else ``None``.
        data: the plain data that validated (after overrides), with a ``model`` key.
    """

    def __init__(self, label: str, model: Any, runtime: RuntimeSection, recipe: Recipe | None, data: dict) -> None:
        self.label, self.model, self.runtime, self.recipe, self.data = label, model, runtime, recipe, data


def _looks_like_file(target: str) -> bool:
    return target.endswith(".toml") or "/" in target or Path(target).is_file()


def load_target(target: str, overrides: Sequence[str | tuple[str, Any]] = ()) -> Target:
    """Load ``target`` (a recipe path or a model preset name) with ``overrides`` applied.

    For a preset, overrides address ``model.*`` and ``runtime.*`` as in a recipe.

    Raises:
        RecipeError: every problem of the recipe / overrides.
        CLIError: ``target`` is neither a readable recipe nor a known preset.
    """
    notes: list[str] = []
    if _looks_like_file(target):
        try:
            recipe = load_recipe(target, overrides, notes=notes)
        finally:
            print_notes(notes)
        return Target(target, recipe.model, recipe.runtime, recipe, recipe.to_data())
    from hourglass.models.factory import get_preset, list_models

    if target not in list_models():
        import difflib

        close = difflib.get_close_matches(target, list_models(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CLIError(
            f"{target!r} is neither a recipe file nor a model preset.{hint} Give a path to a .toml recipe "
            f"or one of the presets: {', '.join(list_models())}"
        )
    try:
        data = apply_overrides({"model": get_preset(target)}, overrides, notes=notes)
    finally:
        print_notes(notes)
    try:
        parsed = _ModelTarget.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(problems_from_validation(exc, data, _ModelTarget), f"preset {target}") from None
    return Target(target, parsed.model, parsed.runtime, None, data)


def meta_build(model_spec: Any, label: str | None = None) -> Any:
    """Build ``model_spec`` on the meta device (no memory for weights).

    Raises:
        RecipeError: at path ``model`` if the model's own constructor refuses the spec.
    """
    import torch

    try:
        with torch.device("meta"):
            return MODEL.build(model_spec)
    except (ValueError, TypeError) as exc:
        raise RecipeError([Problem("model", f"the model cannot be built: {exc}", "fix the model section")], label) from None


def human_count(n: float) -> str:
    """``85_100_000`` -> ``"85.1M"``; ``1234`` -> ``"1.2K"``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """A plain-text table; columns listed in ``right`` are right-aligned (numbers)."""
    right = set(right)
    text_rows = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), sep] + [line(r) for r in text_rows])


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")

