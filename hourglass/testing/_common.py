"""What every family's checks share (private): the error, the ``spec`` check and small helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor, nn

from hourglass.registry import Registry

__all__ = ["ComponentCheckError", "BATCH", "fail", "unzero_", "first_output", "resolve_specs", "check_spec", "check_describe"]

#: batch size of every check's inputs
BATCH = 2


class ComponentCheckError(AssertionError):
    """A component broke hourglass's component contract; the message says which check and why.

    Subclasses ``AssertionError`` so pytest reports it as a test failure with its message.
    """

    __module__ = "hourglass.testing"  # where users import it from


def fail(family: str, name: str, check: str, why: str) -> ComponentCheckError:
    """The error of a failed check: ``"<family> '<name>' fails the '<check>' check: <why>"``."""
    return ComponentCheckError(f"{family} {name!r} fails the {check!r} check: {why}")


def unzero_(module: nn.Module, std: float = 0.2) -> nn.Module:
    """Fill every all-zero (zero-initialised) parameter with noise ``N(0, std^2)``, in place.

    Zero-initialised output projections (HDiT's ``Out`` and ``Down``, adaLN-Zero) would otherwise
    stop gradients and hide a branch from every output check.

    Args:
        module: any module; parameters with a non-zero entry are left as they are.
        std: standard deviation of the noise.

    Returns:
        ``module``.
    """
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.randn_like(p) * std)
    return module


def first_output(result: Any) -> Tensor:
    """A module's main output: ``result[0]`` for a tuple (a norm's ``(y, gate)``), else ``result``."""
    return result[0] if isinstance(result, tuple) else result


def resolve_specs(
    registry: Registry, name: str, base: Mapping[str, Any], options: Mapping[str, Any] | None
) -> tuple[BaseModel, BaseModel]:
    """The default spec (``base``: the type, a model's test preset) and the spec under test (``options`` over it).

    Raises:
        ValueError: the component's spec has required fields that neither ``base`` nor ``options``
            give (e.g. ``imagefolder``'s ``root``).
        pydantic.ValidationError: ``options`` do not validate.
    """
    options = dict(options or {})
    fields = registry.spec_class(name).model_fields
    required = [f for f, info in fields.items() if info.is_required() and f not in base]
    missing = [f for f in required if f not in options]
    if missing:
        raise ValueError(
            f"{registry.family} {name!r} has required options {', '.join(missing)} without defaults: "
            f"pass them, e.g. check_component({registry.family!r}, {name!r}, options={{{missing[0]!r}: ...}})"
        )
    base = {**base, **{f: options[f] for f in required}, "type": name}
    return registry.validate(base), registry.validate({**base, **options, "type": name})


def check_spec(registry: Registry, name: str, specs: list[BaseModel]) -> None:
    """The ``spec`` check: docstring, spec type, frozen, round trips, unknown options refused.

    Raises:
        ComponentCheckError: naming what is wrong.
    """
    fam = registry.family
    obj = registry.get(name)
    if not (obj.__doc__ or "").strip():
        raise fail(fam, name, "spec", "the component class has no docstring; `hourglass show` prints its first paragraph")
    for spec in specs:
        if spec.type != name:  # type: ignore[attr-defined]
            raise fail(fam, name, "spec", f"its spec has type {spec.type!r}")  # type: ignore[attr-defined]
        if not spec.model_config.get("frozen"):
            raise fail(fam, name, "spec", "its Spec is not frozen; derive it from hourglass.plugin.Spec")
        data = spec.model_dump()
        if registry.validate(data) != spec:
            raise fail(fam, name, "spec", "model_dump() does not validate back to an equal spec")
        if type(spec).model_validate_json(spec.model_dump_json()) != spec:
            raise fail(fam, name, "spec", "the JSON round trip (how checkpoints store specs) changes the spec")
        try:
            registry.validate({**data, "no_such_option__": 1})
        except ValidationError:
            pass
        else:
            raise fail(fam, name, "spec", "an unknown option was accepted; its Spec must forbid extra keys")


def check_describe(registry: Registry, name: str) -> None:
    """The end of the ``spec`` check (after the family's declared facts): ``describe`` works."""
    try:
        registry.describe(name)
    except Exception as exc:
        raise fail(registry.family, name, "spec", f"describe() (what `hourglass show` prints) raised {type(exc).__name__}: {exc}") from exc
