"""Structured recipe problems: pydantic errors turned into ``path = value: rule; fix`` lines.

Every problem carries the recipe path (``model.levels[1].attention.kernel_size``), the value
found there and a message saying what rule it breaks and how to fix it. Messages of the form
``"path: problem; path: problem"`` (raised by a spec's cross-field validator, e.g. HDiTSpec's
grid rules) are split into one problem per part, with the paths made absolute.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from hourglass._recipe_overrides import format_path, lookup
from hourglass.registry import Registry

__all__ = ["Problem", "RecipeError", "problems_from_validation", "model_at", "NO_VALUE"]


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _NoValue()
_PART_START = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\[\d+\]|\.[A-Za-z_][A-Za-z0-9_]*)*): (.+)$", re.S)
_PART_SPLIT = re.compile(r"; (?=[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\]|\.[A-Za-z_][A-Za-z0-9_]*)*: )")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe.

    Attributes:
        path: dotted recipe path, e.g. ``"model.levels[1].attention.kernel_size"`` (``""``: the file).
        value: the value found there (:data:`NO_VALUE` if the key is missing or unknown).
        message: the rule that is broken and how to fix it.
    """

    path: str
    value: Any
    message: str

    def __str__(self) -> str:
        where = self.path or "(recipe)"
        if self.value is NO_VALUE:
            return f"{where}: {self.message}"
        return f"{where} = {_show(self.value)}: {self.message}"


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RecipeError(ValueError):
    """A recipe that cannot be used, with every problem found (not just the first).

    Attributes:
        problems: the :class:`Problem` list, in recipe order.
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


# -- walking the schema ---------------------------------------------------------------------------
def _registry_in(metadata: Any) -> Registry | None:
    """The registry behind a ``Component(REG)`` validator (read from the validator's closure)."""
    func = getattr(metadata, "func", None)
    for cell in getattr(func, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(content, Registry):
            return content
    return None


def _descriptor(annotation: Any, metadata: Any = ()) -> Any:
    """What a field holds: a model class, a Registry, ``("seq", inner)``, ``("map", inner)`` or None."""
    for m in metadata or ():
        reg = _registry_in(m)
        if reg is not None:
            return reg
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


def model_at(root: type[BaseModel], data: Any, parts: list[Any]) -> type[BaseModel] | None:
    """The spec class that validates the table at ``parts`` (following ``type`` keys), if any."""
    desc: Any = root
    node = data
    for part in parts:
        if isinstance(desc, tuple):
            kind, inner = desc
            if (kind == "seq") != isinstance(part, int):
                return None
            desc, node = inner, lookup(node, [part])
            continue
        cls = _as_model(desc, node)
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            return None
        field = cls.model_fields[part]
        desc, node = _descriptor(field.annotation, field.metadata), lookup(node, [part])
        if desc is None:
            return None
    return _as_model(desc, node) if not isinstance(desc, tuple) else None


# -- converting errors ----------------------------------------------------------------------------
def _clean_loc(loc: tuple, data: Any, keep_last: bool) -> list[Any]:
    """Drop pydantic's union/validator tags (``'int'``, ``'function-wrap[...]'``) from a location."""
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
        return [Problem(path, NO_VALUE, f"required key is missing{about}; add {loc[-1]!s} = ... to {where}")]
    if kind == "extra_forbidden":
        parent = model_at(root, data, loc[:-1])
        names = _field_names(parent)
        msg = "unknown key"
        if parent is not None and "type" in parent.model_fields:
            msg += f" for {parent.model_fields['type'].default!r}"
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        fix = f"did you mean {close[0]!r}? " if close else ""
        fix += f"valid keys: {', '.join(names)}" if names else "remove it"
        return [Problem(path, value, f"{msg}; {fix}")]
    if kind in ("value_error", "assertion_error"):
        error = (err.get("ctx") or {}).get("error")
        listed = getattr(error, "problems", None)
        if isinstance(listed, (list, tuple)) and listed and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in listed
        ):  # a validator that lists its problems as (relative path, message) pairs
            return _split_listed(listed, loc, data, root, value)
        text = str(error) if error is not None else str(err["msg"]).removeprefix("Value error, ")
        return _split_parts(text, loc, data, root, value)
    msg = str(err["msg"])
    fix = _FIXES.get(kind)
    return [Problem(path, value, f"{msg}; {fix}" if fix else msg)]


def _owner_fields(root: type[BaseModel], data: Any, loc: list[Any]) -> set[str]:
    owner = model_at(root, data, loc)
    return set(owner.model_fields) if owner is not None else set()


def _absolute(text: str, loc: list[Any], fields: set[str]) -> list[Any] | None:
    """``loc + path`` for a path relative to the spec at ``loc`` (or naming ``loc``'s own field), else None."""
    from hourglass._recipe_overrides import OverrideError, parse_path

    try:
        sub = parse_path(text)
    except OverrideError:
        return None
    if sub and sub[0] in fields:
        return loc + sub  # relative to the spec that raised
    if sub and loc and sub[0] == loc[-1]:
        return loc[:-1] + sub  # a field validator naming its own field first
    return None


def _at(full: list[Any], data: Any, message: str) -> Problem:
    found = lookup(data, full)
    return Problem(format_path(full), NO_VALUE if found is None else found, message)


def _split_listed(listed: Any, loc: list[Any], data: Any, root: type[BaseModel], value: Any) -> list[Problem]:
    """Problems from an exception's ``problems`` list of ``(relative path, message)`` pairs."""
    fields = _owner_fields(root, data, loc)
    out = []
    for path, message in listed:
        full = _absolute(path, loc, fields) if path else None
        if full is not None:
            out.append(_at(full, data, message))
        else:
            prefix = f"{path}: " if path else ""
            out.append(Problem(format_path(loc), NO_VALUE if isinstance(value, dict) else value, prefix + message))
    return out


def _split_parts(text: str, loc: list[Any], data: Any, root: type[BaseModel], value: Any) -> list[Problem]:
    """Split ``"a.b: problem; c[1].d: problem"`` into problems at ``loc + a.b`` and ``loc + c[1].d``."""
    fields = _owner_fields(root, data, loc)
    problems: list[Problem] = []
    for part in _PART_SPLIT.split(text):
        match = _PART_START.match(part)
        full = _absolute(match.group(1), loc, fields) if match else None
        if full is not None:
            problems.append(_at(full, data, match.group(2)))
        elif problems:
            last = problems.pop()  # a '; ' inside one message: glue it back
            problems.append(Problem(last.path, last.value, f"{last.message}; {part}"))
        else:
            problems.append(Problem(format_path(loc), NO_VALUE if isinstance(value, dict) else value, part))
    return problems


def problems_from_validation(
    error: ValidationError, data: Any, root: type[BaseModel], prefix: list[Any] | tuple = ()
) -> list[Problem]:
    """Every error of ``error`` as :class:`Problem` s with absolute recipe paths.

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
                if problem.message not in old.message:
                    problems[i] = Problem(old.path, old.value, f"{old.message}; or: {problem.message}")
                continue
            seen[problem.path] = len(problems)
            problems.append(problem)
    return problems
