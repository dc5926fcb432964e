"""Spec base class and registry-typed component fields.

A spec is frozen data: what a recipe may set for one component. A field typed
``Component(ATTENTION)`` accepts a name, a table with a ``type`` key, or a spec instance, and
validates it through the registry at validation time, so plugin components need no schema change.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, SerializeAsAny, WrapValidator

from hourglass.registry import Registry

__all__ = ["Spec", "Component", "ComponentOf"]


class Spec(BaseModel):
    """Base of every component spec: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class ComponentOf:
    """Marker in a :func:`Component` field's metadata: which registry validates it."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def __repr__(self) -> str:
        return f"ComponentOf({self.registry.family!r})"


def Component(registry: Registry) -> Any:  # noqa: N802 - reads as a type in annotations
    """Annotated field type validating a component of ``registry``.

    Example:
        ``attention: Component(ATTENTION) = NeighborhoodAttentionSpec()``
    """

    def validate(value: Any, handler: Any, info: Any) -> BaseModel:
        return registry.validate(value)

    return Annotated[SerializeAsAny[Spec], WrapValidator(validate), ComponentOf(registry)]
