"""Reading, overriding, writing and building recipes.

:func:`load_recipe` reports *every* problem at once as a :class:`~hourglass.recipe.RecipeError`,
each with its recipe path, the value found and how to fix it; :func:`apply_overrides` applies
``--set`` overrides before validation; :func:`dump_recipe` writes the resolved recipe back as TOML;
:func:`build_model` builds the backbone with the runtime's pinned attention backends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hourglass.diffusion.conditioning import ConditioningSection
from hourglass.recipe import toml
from hourglass.recipe.overrides import OverrideError, format_path, parse_path
from hourglass.recipe.overrides import apply_overrides as _apply_overrides
from hourglass.recipe.problems import RecipeError, problems_from_validation, registry_at, with_values
from hourglass.recipe.schema import SECTIONS, EvalSection, Recipe, cross_field_problems
from hourglass.registry import MODEL, VAE
from hourglass.spec import NO_VALUE, Problem

__all__ = [
    "plain_data",
    "dump_recipe",
    "apply_overrides",
    "recipe_from_data",
    "loads_recipe",
    "load_recipe",
    "build_model",
]


def plain_data(value: Any) -> Any:
    """Dicts/lists/scalars only (tuples -> lists, ``None`` entries dropped): what TOML can hold."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0] != "type")  # a component's type first
        return {str(k): plain_data(v) for k, v in items if v is not None}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump_recipe(recipe: Recipe, header: str = "") -> str:
    """Write ``recipe`` (defaults and overrides resolved) as TOML that loads to an equal recipe.

    Args:
        recipe: a validated :class:`Recipe`.
        header: comment lines put at the top.
    Returns:
        TOML text.
    """
    return toml.dumps(recipe.to_data(), header=header)


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str | tuple[str, Any]], *, notes: list[str] | None = None
) -> dict[str, Any]:
    """Apply ``--set`` style overrides to plain recipe data (a copy is returned).

    Setting a component's ``type`` (``model.levels[0].attention.type=dinat``) keeps the options the
    new type also has (``d_head``, ``qk_norm``, ...) and drops the others; each such change is
    described in ``notes``. An override that reaches into a model preset's values
    (``model.levels[0].depth`` under ``preset = "hdit_s"``) first writes the preset out.

    Args:
        data: recipe data (e.g. from ``tomllib``) or a :class:`Recipe` (its resolved data is used).
        overrides: ``"train.lr=1e-4"``, ``"model.levels[0].depth=3"``, ``"data.dataset.root=/x"``
            strings (values read as TOML, else as plain strings) or ``(path, value)`` pairs.
        notes: if given, receives one line per component whose type changed, e.g.
            ``"model.levels[0].attention: type neighborhood -> dinat keeps d_head, kernel_size; drops
            window_size"`` (the CLI prints them on stderr).
    Raises:
        RecipeError: listing every malformed override.
    """
    if isinstance(data, Recipe):
        data = data.to_data()
    problems = []
    out = _apply_overrides(data, ())

    def retype(root: dict[str, Any], parts: list, old: dict[str, Any], new_type: Any) -> list[str] | None:
        registry = registry_at(Recipe, root, parts)
        if registry is None or not isinstance(new_type, str) or new_type not in registry:
            return None
        fields = registry.spec_class(new_type).model_fields
        options = [k for k in old if k != "type"]
        kept = [k for k in options if k in fields]
        dropped = [k for k in options if k not in fields]
        if notes is not None and options:
            text = f"{format_path(parts)}: type {old.get('type')} -> {new_type}"
            text += f" keeps {', '.join(kept)}" if kept else " keeps no option"
            text += f"; drops {', '.join(dropped)} (not options of {new_type})" if dropped else ""
            notes.append(text)
        return kept

    for item in overrides:
        try:
            out = _apply_overrides(_expand_model_preset(out, item), (item,), retype=retype)
        except OverrideError as exc:
            problems.append(Problem(exc.path, exc.message, "", NO_VALUE if exc.value is None else exc.value))
    if problems:
        raise RecipeError(problems, source="--set overrides")
    return out


def _override_parts(item: str | tuple[str, Any]) -> list[str | int]:
    path = item.split("=", 1)[0] if isinstance(item, str) else item[0]
    try:
        return parse_path(str(path))
    except OverrideError:
        return []


def _expand_model_preset(data: dict[str, Any], item: str | tuple[str, Any]) -> dict[str, Any]:
    """``data`` with ``model.preset`` written out if the override ``item`` reaches into a preset's value."""
    model = data.get("model")
    parts = _override_parts(item)
    if not (isinstance(model, dict) and isinstance(model.get("preset"), str)):
        return data
    if len(parts) < 3 or parts[0] != "model" or parts[1] == "preset" or parts[1] in model:
        return data
    from hourglass.models.factory import get_preset

    try:
        preset = get_preset(model["preset"])
    except (KeyError, ValueError):  # an unknown preset: validation names it
        return data
    return {**data, "model": {**plain_data(preset), **{k: v for k, v in model.items() if k != "preset"}}}


def recipe_from_data(
    data: dict[str, Any], overrides: Iterable[str | tuple[str, Any]] = (), source: str | None = None,
    *, notes: list[str] | None = None,
) -> Recipe:
    """Validate plain recipe data (after ``overrides``) into a :class:`Recipe`.

    ``notes`` (if given) receives what the overrides changed beyond their own value (see
    :func:`apply_overrides`).

    Raises:
        RecipeError: with every problem found, each naming its recipe path.
    """
    if not isinstance(data, dict):
        raise RecipeError([Problem("", f"a recipe must be a table, got {type(data).__name__}")], source)
    try:
        data = apply_overrides(data, overrides, notes=notes)
    except RecipeError as exc:
        raise RecipeError(exc.problems, source) from None
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, data, Recipe)
    problems += _partial_cross_problems(data, {p.path for p in problems})
    raise RecipeError(problems, source)


def _partial_cross_problems(data: dict[str, Any], known: set[str]) -> list[Problem]:
    """Cross-section rules among the sections that did validate (so one run reports them too)."""
    sections: dict[str, Any] = {}
    for name in ("model", "vae", *SECTIONS):
        value = data.get(name)
        try:
            if name in ("model", "vae"):
                sections[name] = (MODEL if name == "model" else VAE).validate(value) if value is not None else None
            elif value is not None or not Recipe.model_fields[name].is_required():
                sections[name] = SECTIONS[name].model_validate(value if value is not None else {})
        except (ValidationError, ValueError, TypeError):
            sections[name] = None
    try:
        sections["eval"] = EvalSection.model_validate(data["eval"]) if data.get("eval") is not None else None
    except (ValidationError, ValueError, TypeError):
        sections["eval"] = None
    try:
        sections["conditioning"] = (ConditioningSection.model_validate(data["conditioning"])
                                    if data.get("conditioning") is not None else None)
    except (ValidationError, ValueError, TypeError):
        sections["conditioning"] = None
    names = ("model", "diffusion", "data", "train", "sample", "vae", "eval", "conditioning")
    found = cross_field_problems(**{k: sections.get(k) for k in names})
    if data.get("vae") is not None and sections["vae"] is None:  # an invalid [vae]: the channels are its latents'
        found = [p for p in found if p.path not in ("model.in_channels", "data.dataset.channels")]
    return [p for p in with_values(found, data) if p.path not in known]


def loads_recipe(
    text: str, overrides: Iterable[str | tuple[str, Any]] = (), source: str = "<string>",
    *, notes: list[str] | None = None,
) -> Recipe:
    """Parse TOML ``text`` and validate it (after ``overrides``) into a :class:`Recipe`.

    ``notes``: see :func:`apply_overrides`.

    Raises:
        RecipeError: for TOML syntax errors (with line and column) and every schema problem.
    """
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        where = toml.toml_location(exc)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        if where is not None:
            line, col = where
            lines = text.splitlines()
            shown = lines[line - 1].strip() if 0 < line <= len(lines) else ""
            message = f"TOML syntax error at line {line}, column {col}: {reason}"
            if shown:
                message += f" (the line reads: {shown!r})"
        else:
            message = f"TOML syntax error: {reason}"
        hint = "fix the syntax there (strings need quotes, tables [name], arrays [a, b])"
        raise RecipeError([Problem("", message, hint)], source) from None
    return recipe_from_data(data, overrides, source, notes=notes)


def load_recipe(
    path: str | Path, overrides: Iterable[str | tuple[str, Any]] = (), *, notes: list[str] | None = None
) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: a ``.toml`` recipe.
        overrides: dotted overrides, e.g. ``["train.lr=1e-4", "model.levels[0].depth=3"]``.
        notes: receives notes on what the overrides changed (see :func:`apply_overrides`).
    Returns:
        The validated, frozen :class:`Recipe`.
    Raises:
        RecipeError: listing every problem (missing file, TOML syntax, schema, cross-field rules).
    """
    path = Path(path)
    if path.is_dir():
        hint = (f"to continue that run: hourglass train {path / 'recipe.toml'} --run-dir {path}"
                if (path / "recipe.toml").is_file() else "pass a .toml recipe file")
        raise RecipeError([Problem("", "a folder, not a recipe file", hint)], str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError([_not_a_recipe(path)], str(path)) from None
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RecipeError(
            [Problem("", f"cannot read the recipe file: {reason}", "check the path")], str(path)
        ) from None
    return loads_recipe(text, overrides, source=str(path), notes=notes)


def _not_a_recipe(path: Path) -> Problem:
    """What a file that is not TOML text holds (a checkpoint, an image, ...), and what to do."""
    from hourglass._files import SAFETENSORS, file_kind

    try:
        kind = file_kind(path)
    except OSError:
        kind = None
    if kind == SAFETENSORS:
        return Problem("", "a safetensors file (a checkpoint?), not a TOML recipe",
                       "sample or inspect a checkpoint with `hourglass sample` / `hourglass show`; train a .toml recipe")
    what = kind or "a binary file"
    return Problem("", f"{what}, not a TOML recipe", "pass a .toml recipe (see recipes/)")


def build_model(recipe: Recipe, device: str = "meta") -> Any:
    """Build the recipe's backbone (on ``device``; ``"meta"`` allocates no memory for weights).

    The runtime's explicit attention backends (``[runtime.backends]``, by kernel) are pinned on
    every attention module that kernel computes, plugin kinds included; ``auto`` kernels are left
    for the backend resolver to pick at run time.

    Args:
        recipe: a validated :class:`~hourglass.recipe.Recipe`.
        device: ``"meta"``, ``"cpu"``, ``"cuda"``, ...; ``"auto"`` follows :func:`hourglass.devices.resolve_device`.
    Returns:
        The ``nn.Module``; ``model.spec`` is ``recipe.model``.
    """
    import torch

    from hourglass.devices import resolve_device
    from hourglass.nn.attention import pin_backends

    with torch.device(resolve_device(device)):
        model = MODEL.build(recipe.model)
    pin_backends(model, recipe.runtime.backends)
    return model
