"""Recipe problems: pydantic's errors turned into :class:`~hourglass.spec.Problem` s with recipe paths.

Every problem carries the recipe path (``model.levels[1].attention.kernel_size``), the value found
there, the rule that is broken and how to fix it. Specs that check several fields together raise
:class:`~hourglass.spec.SpecError` with their problems already structured (paths relative to the
spec); pydantic keeps that exception in the error's context, so here the paths are only prefixed.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from hourglass.recipe.overrides import format_path, lookup
from hourglass.registry import ComponentOf, Registry
from hourglass.spec import NO_VALUE, Problem, SpecError

__all__ = [
    "Problem", "RecipeError", "problems_from_validation", "model_at", "registry_at", "NO_VALUE", "with_values",
    "components_in", "missing_components",
]


class RecipeError(ValueError):
    """A recipe that cannot be used, with every problem found (not just the first).

    Attributes:
        problems: the :class:`~hourglass.spec.Problem` list (absolute recipe paths), in recipe order.
        source: the file (or ``"<string>"``) the recipe came from, if known.
    """

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self._text())

    def _text(self) -> str:
        n = len(self.problems)
        where = f"recipe {self.source}" if self.source else "recipe"
        head = f"{where} has {n} problem{'s' if n != 1 else ''}:"
        return "\n".join([head] + [f"  {p}" for p in self.problems])

    def __str__(self) -> str:
        return self._text()


def with_values(problems: list[Problem], data: Any) -> list[Problem]:
    """``problems`` with the value found at each (absolute) path of ``data`` filled in."""
    from hourglass.recipe.overrides import OverrideError, parse_path

    out = []
    for p in problems:
        if p.value is not NO_VALUE or not p.path:
            out.append(p)
            continue
        try:
            found = lookup(data, parse_path(p.path))
        except OverrideError:
            found = None
        out.append(Problem(p.path, p.message, p.hint, NO_VALUE if found is None else found))
    return out


# -- walking the schema ---------------------------------------------------------------------------
def _descriptor(annotation: Any, metadata: Any = ()) -> Any:
    """What a field holds: a model class, a Registry, ``("seq", inner)``, ``("map", inner)`` or None."""
    for m in metadata or ():
        if isinstance(m, ComponentOf):
            return m.registry
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _descriptor(args[0], args[1:])
    if origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                found = _descriptor(arg)
                if found is not None:
                    return found
        return None
    if origin in (list, tuple, typing.Sequence) and args:
        inner = _descriptor(args[0])
        return ("seq", inner) if inner is not None else None
    if origin is dict and len(args) == 2:
        inner = _descriptor(args[1])
        return ("map", inner) if inner is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is not None and isinstance(origin, type) and issubclass(origin, BaseModel):
        return origin
    return None


def _as_model(desc: Any, node: Any) -> type[BaseModel] | None:
    if isinstance(desc, Registry):
        name = node.get("type") if isinstance(node, dict) else node if isinstance(node, str) else None
        if isinstance(name, str) and name in desc:
            return desc.spec_class(name)
        return None
    return desc if isinstance(desc, type) and issubclass(desc, BaseModel) else None


def _descriptor_at(root: type[BaseModel], data: Any, parts: list[Any]) -> tuple[Any, Any]:
    """``(descriptor, node)`` at ``parts``: what the schema says the value there is, and the value."""
    desc: Any = root
    node = data
    for part in parts:
        if isinstance(desc, tuple):
            kind, inner = desc
            if (kind == "seq") != isinstance(part, int):
                return None, None
            desc, node = inner, lookup(node, [part])
            continue
        cls = _as_model(desc, node)
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            return None, None
        field = cls.model_fields[part]
        desc, node = _descriptor(field.annotation, field.metadata), lookup(node, [part])
        if desc is None:
            return None, None
    return desc, node


def model_at(root: type[BaseModel], data: Any, parts: list[Any]) -> type[BaseModel] | None:
    """The spec class that validates the table at ``parts`` (following ``type`` keys), if any."""
    desc, node = _descriptor_at(root, data, parts)
    return _as_model(desc, node) if desc is not None and not isinstance(desc, tuple) else None


def registry_at(root: type[BaseModel], data: Any, parts: list[Any]) -> Registry | None:
    """The registry whose component sits at ``parts`` (e.g. ATTENTION for ``model.levels[0].attention``)."""
    desc, _ = _descriptor_at(root, data, parts)
    return desc if isinstance(desc, Registry) else None


def components_in(root: type[BaseModel] | Registry, data: Any) -> list[tuple[str, Registry, str]]:
    """``(path, registry, name)`` of every component named in ``data`` (paths relative to ``data``).

    Follows the schema from ``root`` (a spec class such as :class:`hourglass.recipe.Recipe`, or a
    registry such as ``MODEL`` for a model spec's data); a component whose name is not registered
    is listed but not entered (its fields are unknown).
    """
    from hourglass.spec import join_path

    found: list[tuple[str, Registry, str]] = []

    def walk(desc: Any, node: Any, path: str) -> None:
        if desc is None or node is None:
            return
        if isinstance(desc, tuple):
            kind, inner = desc
            if kind == "seq" and isinstance(node, (list, tuple)):
                for i, item in enumerate(node):
                    walk(inner, item, join_path(path, f"[{i}]"))
            elif kind == "map" and isinstance(node, dict):
                for key, item in node.items():
                    walk(inner, item, join_path(path, str(key)))
            return
        if isinstance(desc, Registry):
            name = node.get("type") if isinstance(node, dict) else node if isinstance(node, str) else None
            if not isinstance(name, str):
                return
            found.append((path, desc, name))
        cls = _as_model(desc, node)
        if cls is None or not isinstance(node, dict):
            return
        for fname, field in cls.model_fields.items():
            if fname in node:
                walk(_descriptor(field.annotation, field.metadata), node[fname], join_path(path, fname))

    walk(root, data, "")
    return found


def missing_components(root: type[BaseModel] | Registry, data: Any) -> list[tuple[str, str, str]]:
    """``(path, family, name)`` of every component named in ``data`` that is not registered here
    (e.g. an attention kind of a plugin that is not installed or is disabled)."""
    return [(path, registry.family, name) for path, registry, name in components_in(root, data) if name not in registry]


# -- converting errors ----------------------------------------------------------------------------
def _clean_loc(loc: tuple, data: Any, keep_last: bool) -> list[Any]:
    """Drop pydantic's union/validator tags (``'int'``, ``'function-wrap[...]'``) from a location."""
    import re

    out: list[Any] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(part, int) and isinstance(node, (list, tuple)):
            out.append(part)
            node = node[part] if -len(node) <= part < len(node) else None
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif last and keep_last and isinstance(part, str):
            out.append(part)
        elif isinstance(part, str) and isinstance(node, dict) and re.fullmatch(r"[A-Za-z_]\w*", part):
            out.append(part)  # a key absent from the data (e.g. filled by a default)
            node = None
        # anything else is a tag naming a union member or a validator: not part of the recipe path
    return out


_FIXES = {
    "int_parsing": "write a whole number without quotes, e.g. 3",
    "int_type": "write a whole number without quotes, e.g. 3",
    "int_from_float": "write a whole number, e.g. 3",
    "float_parsing": "write a number without quotes, e.g. 0.5",
    "float_type": "write a number without quotes, e.g. 0.5",
    "bool_parsing": "write true or false (no quotes)",
    "bool_type": "write true or false (no quotes)",
    "string_type": "write a quoted string",
    "literal_error": "use one of the values listed",
    "list_type": "write an array, e.g. [1, 2]",
    "tuple_type": "write an array, e.g. [1, 2]",
    "dict_type": "write a table, e.g. {type = \"...\"}",
    "model_type": "write a table",
    "model_attributes_type": "write a table",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value",
    "less_than_equal": "use a smaller value",
    "too_short": "add items",
    "too_long": "remove items",
    "finite_number": "use a finite number",
}


def _field_names(cls: type[BaseModel] | None) -> list[str]:
    return [n for n in cls.model_fields if n != "type"] if cls is not None else []


def _convert(err: dict, data: Any, root: type[BaseModel], prefix: list[Any]) -> list[Problem]:
    kind = err["type"]
    loc = prefix + _clean_loc(tuple(err["loc"]), lookup(data, prefix) if prefix else data,
                              keep_last=kind in ("missing", "extra_forbidden"))
    path = format_path(loc)
    value = err.get("input", NO_VALUE)
    if kind == "missing":
        parent = model_at(root, data, loc[:-1])
        field = parent.model_fields.get(loc[-1]) if parent is not None and loc else None
        about = f" ({field.description})" if field is not None and field.description else ""
        where = format_path(loc[:-1]) or "the recipe"
        return [Problem(path, f"required key is missing{about}", f"add {loc[-1]!s} = ... to {where}")]
    if kind == "extra_forbidden":
        parent = model_at(root, data, loc[:-1])
        names = _field_names(parent)
        msg = "unknown key"
        if parent is not None and "type" in parent.model_fields:
            msg += f" for {parent.model_fields['type'].default!r}"
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        fix = f"did you mean {close[0]!r}? " if close else ""
        fix += f"valid keys: {', '.join(names)}" if names else "remove it"
        return [Problem(path, msg, fix, value)]
    if kind in ("value_error", "assertion_error"):
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, SpecError):
            return with_values([p.under(path) for p in error.problems], data)
        text = str(error) if error is not None else str(err["msg"]).removeprefix("Value error, ")
        return [Problem(path, text, "", NO_VALUE if isinstance(value, dict) else value)]
    fix = _typed_fix(kind, value) or _FIXES.get(kind, "")
    return [Problem(path, str(err["msg"]), fix, value)]


def _number_text(text: str) -> int | float | None:
    """The number a string spells (``"32"`` -> 32, ``" 1e-4"`` -> 0.0001), or None."""
    from hourglass.recipe.toml import parse_value

    parsed = parse_value(text.strip()) if text.strip() else None
    return parsed if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else None


def _typed_fix(kind: str, value: Any) -> str:
    """A hint naming the fix for a value of the wrong type (strict types: no quoted numbers,
    no booleans for numbers, no numbers for booleans); ``""`` when the generic hint fits."""
    if kind in ("int_type", "int_parsing", "int_from_float", "float_type", "float_parsing"):
        whole = kind.startswith("int")
        example = "a whole number, e.g. 3" if whole else "a number, e.g. 0.5"
        if isinstance(value, bool):
            return f"true/false is not a number; write {example}"
        if isinstance(value, str):
            number = _number_text(value)
            if number is not None and (not whole or isinstance(number, int)):
                return f"write {value.strip()} without quotes"
            return f"write {example} (without quotes)"
        if whole and isinstance(value, float) and value.is_integer():
            return f"write {int(value)} (a whole number, no decimal point)"
        return ""
    if kind in ("bool_type", "bool_parsing"):
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return f"write {value.strip().lower()} without quotes"
        if isinstance(value, (int, float)):
            return "write true or false (a number is not a boolean)"
        return "write true or false (no quotes)"
    if kind == "literal_error" and isinstance(value, bool):
        return "true/false is not one of these values; write one of the values listed"
    if kind == "literal_error" and isinstance(value, str) and _number_text(value) is not None:
        return f"write {value.strip()} without quotes"
    return ""


def problems_from_validation(
    error: ValidationError, data: Any, root: type[BaseModel], prefix: list[Any] | tuple = ()
) -> list[Problem]:
    """Every error of ``error`` as :class:`~hourglass.spec.Problem` s with absolute recipe paths.

    Args:
        error: what validating the object at ``prefix`` inside ``data`` raised.
        data: the whole recipe's plain data (used to show values and follow ``type`` keys).
        root: the schema class of the whole ``data`` (e.g. :class:`hourglass.recipe.Recipe`).
        prefix: where in ``data`` the validated object sits (its errors' locations are relative to it).
    """
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for err in error.errors(include_url=False):
        for problem in _convert(err, data, root, list(prefix)):
            if problem.path in seen:  # union alternatives: one problem listing what would do
                i = seen[problem.path]
                old = problems[i]
                if problem.text not in old.text:
                    problems[i] = Problem(old.path, old.message, f"{old.hint + '; ' if old.hint else ''}or: "
                                          f"{problem.text}", old.value)
                continue
            seen[problem.path] = len(problems)
            problems.append(problem)
    return problems
