"""Spec base class, registry-typed component fields and structured problems.

A spec is frozen data: what a recipe may set for one component. A field typed
``Component(ATTENTION)`` accepts a name, a table with a ``type`` key, or a spec instance, and
validates it through the registry at validation time, so plugin components need no schema change.

A spec that finds something wrong across its fields raises :class:`SpecError` with one
:class:`Problem` per rule broken, each with a path relative to the spec, the rule and a hint.
The recipe layer prefixes the paths (``model.levels[0].attention.kernel_size``) and adds the
value found there; the CLI prints one line per problem. Nothing is parsed back out of text.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, SerializeAsAny, WrapValidator, field_validator
from pydantic_core import PydanticCustomError

from hourglass.registry import ComponentOf, Registry

__all__ = [
    "Spec", "Component", "ComponentOf", "Problem", "SpecError", "NO_VALUE", "as_pair", "join_path", "raise_problems",
]


class Spec(BaseModel):
    """Base of every component spec: frozen, unknown keys refused, strict types.

    Strict: a string or a boolean is refused where a number is expected (``batch_size = "32"``,
    ``--set data.batch_size=true``), a number where a boolean is, and a float with a fraction
    where an integer is; an integer is a valid float. Arrays (TOML, JSON) are valid for tuple
    fields, so a spec written as TOML or JSON reads back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _lists_as_tuples(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        return value if field is None else _loosen(field.annotation, value)


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly ``Annotated`` / ``Optional`` / union) annotation."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _loosen(annotation: Any, value: Any) -> Any:
    """What strict mode leaves out: arrays for tuples (recursively), and no booleans for numeric literals.

    A list becomes a tuple where the annotation has a tuple; ``True`` is refused for
    ``Literal[1, 3]`` (pydantic compares literals by equality, and ``True == 1``).
    """
    members = _members(annotation)
    if isinstance(value, list):
        for member in members:
            if typing.get_origin(member) is tuple:
                args = typing.get_args(member)
                if len(args) == 2 and args[1] is Ellipsis:
                    return tuple(_loosen(args[0], v) for v in value)
                if args and len(args) == len(value):
                    return tuple(_loosen(a, v) for a, v in zip(args, value, strict=True))
                return tuple(value)
        return value
    if isinstance(value, bool):
        literals = [a for m in members if typing.get_origin(m) is Literal for a in typing.get_args(m)]
        if literals and not any(isinstance(a, bool) for a in literals) and all(
            isinstance(a, (int, float)) for a in literals
        ):
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": " or ".join(map(str, literals))}
            )
    return value


def Component(registry: Registry) -> Any:  # noqa: N802 - reads as a type in annotations
    """Annotated field type validating a component of ``registry``.

    Example:
        ``attention: Component(ATTENTION) = NeighborhoodAttentionSpec()``
    """

    def validate(value: Any, handler: Any, info: Any) -> BaseModel:
        return registry.validate(value)

    return Annotated[SerializeAsAny[Spec], WrapValidator(validate), ComponentOf(registry)]


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


#: the value of a :class:`Problem` whose key is missing, unknown or not looked up
NO_VALUE: Any = _NoValue()


def join_path(prefix: str, path: str) -> str:
    """``join_path("levels[0]", "attention.kernel_size") == "levels[0].attention.kernel_size"``.

    Either side may be empty; a ``path`` starting with an index (``"[2].depth"``) attaches
    without a dot.
    """
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


@dataclass(frozen=True)
class Problem:
    """One broken rule: where, what, and how to fix it.

    Attributes:
        path: dotted path with list indices, relative to whoever holds the problem (a spec's own
            problems are relative to the spec; a recipe's are absolute, ``""`` is the file itself).
        message: the rule that is broken, e.g. ``"7 does not fit the 4x4 token grid of level 2"``.
        hint: how to fix it, e.g. ``"use kernel_size <= 4 or global attention"`` (may be empty).
        value: the value found at ``path`` (:data:`NO_VALUE` when missing or not looked up).
    """

    path: str
    message: str
    hint: str = ""
    value: Any = NO_VALUE

    def under(self, prefix: str) -> Problem:
        """This problem with ``prefix`` put in front of its path."""
        return replace(self, path=join_path(prefix, self.path))

    @property
    def text(self) -> str:
        """``message; hint`` (what a user reads after the path)."""
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __str__(self) -> str:
        where = self.path or "(recipe)"
        if self.value is NO_VALUE:
            return f"{where}: {self.text}"
        return f"{where} = {_show(self.value)}: {self.text}"


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SpecError(ValueError):
    """Problems found by a spec's cross-field validator (paths relative to that spec).

    Raised inside a pydantic validator, it reaches the recipe layer intact (pydantic keeps the
    exception in the error's context), so every problem keeps its path, message and hint.

    Attributes:
        problems: the :class:`Problem` s, in the order found.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid spec")


def raise_problems(problems: Iterable[Problem]) -> None:
    """Raise :class:`SpecError` if ``problems`` is not empty."""
    problems = list(problems)
    if problems:
        raise SpecError(problems)


def as_pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``7 -> (7, 7)``; ``(4, 8)`` or ``[4, 8]`` -> ``(4, 8)`` (sizes given as a side or ``(H, W)``)."""
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)
