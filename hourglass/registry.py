"""Component registries, one per family, with lazy plugin discovery.

A component is an ``nn.Module`` (or a plain class or function holder) that carries a frozen
pydantic ``Spec``. Registering it under a name makes it available to recipes, presets and the
CLI. Third-party packages add components through the ``hourglass.plugins`` entry-point group;
plugins load lazily, once, on the first access to any registry.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import re
import threading
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

__all__ = [
    "Registry",
    "RegistryError",
    "PluginError",
    "PluginStatus",
    "REGISTRIES",
    "ATTENTION",
    "POS_EMB",
    "FFN",
    "NORM",
    "MERGE",
    "SPLIT",
    "MAPPING",
    "MODEL",
    "DENOISER",
    "WEIGHTING",
    "SIGMA_DENSITY",
    "SAMPLER",
    "SCHEDULE",
    "DATASET",
    "plugin_statuses",
    "load_plugins",
]

PLUGIN_GROUP = "hourglass.plugins"
T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """An unknown, duplicate or malformed component name.

    Subclasses both ``KeyError`` (lookup failed) and ``ValueError`` (so pydantic reports it as
    a validation error with the recipe path).
    """

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class PluginError(RuntimeError):
    """A plugin failed to load while strict plugin mode is on."""


@dataclass
class PluginStatus:
    """What happened when one entry point of group ``hourglass.plugins`` was loaded."""

    name: str
    distribution: str | None
    version: str | None
    status: str  # "loaded" | "failed" | "disabled"
    error: str | None = None
    components: list[str] = field(default_factory=list)


_plugin_lock = threading.RLock()
_plugins_loaded = False
_plugin_statuses: list[PluginStatus] = []
_current_provider = threading.local()


def _provider() -> str:
    return getattr(_current_provider, "name", None) or "hourglass"


class Registry(Generic[T]):
    """A named family of interchangeable components.

    Args:
        family: family name used in messages, e.g. ``"attention"``.
        needs_spec: whether every entry must carry a pydantic ``Spec`` class attribute whose
            ``type`` field is ``Literal[name]``.
    """

    def __init__(self, family: str, needs_spec: bool = True) -> None:
        self.family = family
        self.needs_spec = needs_spec
        self._entries: dict[str, T] = {}
        self._providers: dict[str, str] = {}
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        Raises:
            RegistryError: if ``name`` is taken (and ``override`` is false) or the spec's
                ``type`` literal does not equal ``name``.
        """

        def decorator(obj: T) -> T:
            self.add(name, obj, override=override)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, override: bool = False) -> None:
        """Register ``obj`` under ``name`` (the non-decorator form of :meth:`register`)."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise RegistryError(f"{self.family} names must be non-empty strings, got {name!r}")
        if self.needs_spec:
            _check_spec(self.family, name, obj)
        with self._lock:
            if name in self._entries and not override:
                raise RegistryError(
                    f"{self.family} {name!r} is already registered by {self._providers[name]!r}; "
                    "choose another name or pass override=True"
                )
            self._entries[name] = obj
            self._providers[name] = _provider()
        record = getattr(_current_provider, "status", None)
        if record is not None:
            record.components.append(f"{self.family}:{name}")

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plugin rollback)."""
        with self._lock:
            self._entries.pop(name, None)
            self._providers.pop(name, None)

    # -- lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """Return the component registered as ``name``.

        Raises:
            RegistryError: listing the known names, the closest match and the plugin state.
        """
        load_plugins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise RegistryError(self._unknown_message(name)) from None

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        """Sorted names of every registered component of this family."""
        load_plugins()
        return sorted(self._entries)

    def provider(self, name: str) -> str:
        """Distribution that registered ``name`` (``"hourglass"`` for built-ins)."""
        self.get(name)
        return self._providers[name]

    def spec_class(self, name: str) -> type[BaseModel]:
        """The pydantic spec class of component ``name``."""
        return self.get(name).Spec  # type: ignore[attr-defined]

    def build(self, spec: BaseModel | dict | str, **context: Any) -> Any:
        """Instantiate the component described by ``spec`` with structural ``context``.

        Args:
            spec: a spec instance, a dict with a ``type`` key, or a bare name.
            **context: structural arguments from the parent (``width``, ``cond_dim``, ...).
        """
        spec = self.validate(spec)
        return self.get(spec.type)(spec, **context)  # type: ignore[attr-defined,operator]

    def validate(self, value: BaseModel | dict | str) -> BaseModel:
        """Turn a name, dict or spec into the registered spec instance (pydantic-validated)."""
        if isinstance(value, str):
            value = {"type": value}
        if isinstance(value, BaseModel):
            name = getattr(value, "type", None)
            cls = self.spec_class(name)
            if isinstance(value, cls):
                return value
            value = value.model_dump()
        if not isinstance(value, dict):
            raise RegistryError(
                f"a {self.family} must be a name or a table with a 'type' key, got {value!r}"
            )
        if "type" not in value:
            raise RegistryError(
                f"a {self.family} table needs a 'type' key; known types: {', '.join(self.names())}"
            )
        return self.spec_class(value["type"]).model_validate(value)

    def describe(self, name: str) -> dict[str, Any]:
        """Fields (with type, default, description), backends and provider of ``name``."""
        obj = self.get(name)
        info: dict[str, Any] = {
            "family": self.family,
            "name": name,
            "provider": self._providers[name],
            "doc": (obj.__doc__ or "").strip().split("\n\n")[0],
            "fields": {},
        }
        spec = getattr(obj, "Spec", None)
        if spec is not None:
            for fname, f in spec.model_fields.items():
                if fname == "type":
                    continue
                default = None if f.is_required() else f.get_default(call_default_factory=True)
                if isinstance(default, BaseModel):
                    default = default.model_dump()
                family = next((m.registry.family for m in f.metadata if hasattr(m, "registry")), None)
                info["fields"][fname] = {
                    "type": f"{family} component" if family else _type_name(f.annotation),
                    "default": default,
                    "required": f.is_required(),
                    "description": f.description or "",
                }
        backends = getattr(obj, "backends", None)
        if backends:
            info["backends"] = list(backends)
        return info

    def _unknown_message(self, name: object) -> str:
        known = sorted(self._entries)
        msg = f"unknown {self.family} {name!r}; known: {', '.join(known) or '(none)'}"
        close = difflib.get_close_matches(str(name), known, n=1)
        if close:
            msg += f". Did you mean {close[0]!r}?"
        loaded = [s.name for s in _plugin_statuses if s.status == "loaded"]
        failed = [f"{s.name} ({s.error})" for s in _plugin_statuses if s.status == "failed"]
        if not msg.endswith("?"):
            msg += "."
        if loaded:
            msg += f" Plugins loaded: {', '.join(loaded)}."
        if failed:
            msg += f" Plugins that failed: {', '.join(failed)}."
        return msg

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {len(self._entries)} entries)"


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", repr(annotation))  # drop module paths


def _check_spec(family: str, name: str, obj: Any) -> None:
    spec = getattr(obj, "Spec", None)
    if not (isinstance(spec, type) and issubclass(spec, BaseModel)):
        raise RegistryError(f"{family} {name!r}: {obj!r} needs a pydantic 'Spec' class attribute")
    field_info = spec.model_fields.get("type")
    args = typing.get_args(field_info.annotation) if field_info else ()
    if field_info is None or args != (name,):
        raise RegistryError(
            f"{family} {name!r}: {spec.__name__}.type must be Literal[{name!r}] "
            f"with that default, got {field_info.annotation if field_info else None!r}"
        )
    if field_info.default != name:
        raise RegistryError(f"{family} {name!r}: {spec.__name__}.type must default to {name!r}")


# -- the families -------------------------------------------------------------------------------
ATTENTION: Registry = Registry("attention")
POS_EMB: Registry = Registry("pos_emb")
FFN: Registry = Registry("ffn")
NORM: Registry = Registry("norm")
MERGE: Registry = Registry("merge")
SPLIT: Registry = Registry("split")
MAPPING: Registry = Registry("mapping")
MODEL: Registry = Registry("model")
DENOISER: Registry = Registry("denoiser")
WEIGHTING: Registry = Registry("weighting")
SIGMA_DENSITY: Registry = Registry("sigma_density")
SAMPLER: Registry = Registry("sampler")
SCHEDULE: Registry = Registry("schedule")
DATASET: Registry = Registry("dataset")

REGISTRIES: dict[str, Registry] = {
    r.family: r
    for r in (
        ATTENTION, POS_EMB, FFN, NORM, MERGE, SPLIT, MAPPING, MODEL,
        DENOISER, WEIGHTING, SIGMA_DENSITY, SAMPLER, SCHEDULE, DATASET,
    )
}


# -- plugins ------------------------------------------------------------------------------------
def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def load_plugins(*, strict: bool | None = None, force: bool = False) -> list[PluginStatus]:
    """Load every entry point of group ``hourglass.plugins`` once (thread-safe).

    Each entry point names a module (imported for its registrations) or a callable (called
    with no arguments). A plugin that raises is rolled back, reported with a warning naming it,
    and the rest keeps working; with ``strict`` (or ``HOURGLASS_STRICT_PLUGINS=1``) it raises
    :class:`PluginError` instead. ``HOURGLASS_DISABLE_PLUGINS=a,b`` skips plugins by name.

    Returns:
        One :class:`PluginStatus` per entry point seen.
    """
    global _plugins_loaded
    if _plugins_loaded and not force:
        return list(_plugin_statuses)
    with _plugin_lock:
        if _plugins_loaded and not force:
            return list(_plugin_statuses)
        _import_builtins()
        strict = _env_flag("HOURGLASS_STRICT_PLUGINS") if strict is None else strict
        disabled = {
            s.strip() for s in os.environ.get("HOURGLASS_DISABLE_PLUGINS", "").split(",") if s.strip()
        }
        _plugin_statuses.clear()
        _plugins_loaded = True  # set first: plugins may touch registries while loading
        try:
            eps = importlib.metadata.entry_points(group=PLUGIN_GROUP)
        except Exception as exc:  # a broken environment must not break hourglass
            warnings.warn(f"hourglass could not list plugins: {exc}", RuntimeWarning, stacklevel=2)
            eps = []
        for ep in sorted(eps, key=lambda e: e.name):
            _load_one(ep, strict=strict, disabled=disabled)
        failed = [s for s in _plugin_statuses if s.status == "failed"]
        if strict and failed:
            _plugins_loaded = False  # strict mode keeps failing until the plugins are fixed
            raise PluginError(
                "strict plugin mode is on and plugins failed to load: "
                + "; ".join(f"plugin {s.name!r} ({s.distribution or 'unknown distribution'}) failed: {s.error}"
                            for s in failed)
                + ". Fix or uninstall them, skip them with HOURGLASS_DISABLE_PLUGINS, or unset HOURGLASS_STRICT_PLUGINS"
            )
        return list(_plugin_statuses)


def _load_one(ep: Any, *, strict: bool, disabled: set[str]) -> None:
    dist = getattr(ep, "dist", None)
    status = PluginStatus(
        name=ep.name,
        distribution=dist.metadata["Name"] if dist is not None else None,
        version=dist.version if dist is not None else None,
        status="loaded",
    )
    _plugin_statuses.append(status)
    if ep.name in disabled or (status.distribution or "") in disabled:
        status.status = "disabled"
        return
    before = {fam: dict(r._entries) for fam, r in REGISTRIES.items()}
    before_providers = {fam: dict(r._providers) for fam, r in REGISTRIES.items()}
    _current_provider.name = status.distribution or ep.name
    _current_provider.status = status
    try:
        obj = ep.load()
        if callable(obj):
            obj()
    except Exception as exc:
        for fam, reg in REGISTRIES.items():  # roll back partial registrations
            reg._entries = before[fam]
            reg._providers = before_providers[fam]
        status.status = "failed"
        status.error = f"{type(exc).__name__}: {exc}"
        status.components.clear()
        message = f"hourglass plugin {ep.name!r} ({ep.value}) failed to load: {status.error}"
        if strict:
            return
        warnings.warn(message + "; the other components are unaffected", RuntimeWarning, stacklevel=3)
    finally:
        _current_provider.name = None
        _current_provider.status = None


def plugin_statuses() -> list[PluginStatus]:
    """Statuses of the plugins seen so far (loads them if not yet done)."""
    return load_plugins()


def _import_builtins() -> None:
    """Import the modules whose decorators register hourglass's own components."""
    import importlib

    for module in (
        "hourglass.nn",
        "hourglass.models",
        "hourglass.diffusion",
        "hourglass.data",
    ):
        importlib.import_module(module)
