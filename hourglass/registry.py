"""Component registries, one per family, with lazy plugin discovery and a single registration path.

A component is a class that carries a frozen pydantic ``Spec``. Registering it under a name makes
it available to recipes, presets and the CLI. Everything a package can add goes through a
:class:`Registry`: components, model presets, attention kernels and their backends. While a
plugin loads, every registration it makes is journaled, so a plugin that fails is rolled back
whole (its presets leave timm's model list too: registries tell their subscribers).

A family may declare a *contract*: a base class (derived from :class:`Contract`) that every
component of the family must subclass, declaring what the rest of hourglass needs to know about
it (an attention kind's kernel and grid rule, a dataset's classes and channels, ...).

This module is generic: it imports none of the packages that register components. Whoever
provides built-ins installs a loader with :func:`add_loader`; loaders run once, before the
first lookup, followed by the entry points of group ``hourglass.plugins``.
"""

from __future__ import annotations

import dataclasses
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
    "Contract",
    "ComponentOf",
    "REGISTRIES",
    "ATTENTION",
    "POS_EMB",
    "FFN",
    "NORM",
    "MERGE",
    "SKIP",
    "MAPPING",
    "MODEL",
    "DENOISER",
    "WEIGHTING",
    "SIGMA_DENSITY",
    "SAMPLER",
    "SCHEDULE",
    "DATASET",
    "VAE",
    "TRACKER",
    "PRESET",
    "add_loader",
    "plugin_statuses",
    "plugin_summary",
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


class Contract:
    """Base of a family's contract class: what every component of the family declares.

    A contract class lists, as class attributes and classmethods, the facts the rest of the system
    asks about a component (see :class:`hourglass.nn.attention.AttentionKind`). :meth:`facts`
    returns them for ``hourglass show`` and the docs' component catalogue.
    """

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """Declared facts of this component class, as plain data (``{}`` when it declares none)."""
        return {}

    @classmethod
    def contract_problem(cls) -> str | None:
        """Why this class cannot be registered (a declaration that refers to nothing), or ``None``."""
        return None


class ComponentOf:
    """Marker in a component field's metadata (see :func:`hourglass.spec.Component`): its family."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def __repr__(self) -> str:
        return f"ComponentOf({self.registry.family!r})"


@dataclass
class PluginStatus:
    """What happened when one entry point of group ``hourglass.plugins`` was loaded."""

    name: str
    distribution: str | None
    version: str | None
    status: str  # "loaded" | "failed" | "disabled"
    error: str | None = None
    components: list[str] = field(default_factory=list)


_MISSING: Any = object()
_plugin_lock = threading.RLock()
_plugins_loaded = False
_loaders_ran = False
_plugin_statuses: list[PluginStatus] = []
_loaders: list[Callable[[], None]] = []
_current = threading.local()  # provider name, status and journal of the plugin being loaded


def _provider() -> str:
    return getattr(_current, "name", None) or "hourglass"


def add_loader(loader: Callable[[], None]) -> None:
    """Run ``loader()`` once before the registries are first looked up (how built-ins register).

    Loaders run in the order added, before the plugins' entry points; one added after the first
    lookup runs at once.
    """
    with _plugin_lock:
        _loaders.append(loader)
        if _loaders_ran:
            loader()


class Registry(Generic[T]):
    """A named family of interchangeable components (or presets, kernels, backends).

    Args:
        family: family name used in messages, e.g. ``"attention"``.
        needs_spec: whether every entry must carry a pydantic ``Spec`` class attribute whose
            ``type`` field is ``Literal[name]``.
    """

    contract: type | None = None

    def __init__(self, family: str, needs_spec: bool = True) -> None:
        self.family = family
        self.needs_spec = needs_spec
        self._entries: dict[str, T] = {}
        self._providers: dict[str, str] = {}
        self._listeners: list[tuple[Callable[[str, T], None] | None, Callable[[str, T], None] | None]] = []
        self._lock = threading.RLock()

    # -- contract and listeners -------------------------------------------------------------
    def set_contract(self, base: type) -> None:
        """Require every component registered from now on to subclass ``base``."""
        self.contract = base

    def subscribe(
        self, on_add: Callable[[str, T], None] | None = None, on_remove: Callable[[str, T], None] | None = None
    ) -> None:
        """Call ``on_add(name, obj)`` after every registration and ``on_remove(name, obj)`` after removals."""
        self._listeners.append((on_add, on_remove))

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        Raises:
            RegistryError: if ``name`` is taken (and ``override`` is false), the spec's ``type``
                literal does not equal ``name``, or the class breaks the family's contract.
        """

        def decorator(obj: T) -> T:
            self.add(name, obj, override=override)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, override: bool = False) -> None:
        """Register ``obj`` under ``name`` (the non-decorator form of :meth:`register`)."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise RegistryError(f"{self.family} names must be non-empty strings, got {name!r}")
        if self.contract is not None and not (isinstance(obj, type) and issubclass(obj, self.contract)):
            raise RegistryError(
                f"{self.family} {name!r}: {obj!r} must subclass {self.contract.__module__}.{self.contract.__qualname__}"
                f" (the {self.family} contract; hourglass.plugin exports it)"
            )
        if self.contract is not None:
            reason = obj.contract_problem()  # type: ignore[attr-defined]
            if reason is not None:
                raise RegistryError(f"{self.family} {name!r}: {reason}")
        if self.needs_spec:
            _check_spec(self.family, name, obj)
        with self._lock:
            previous = self._entries.get(name, _MISSING)
            if previous is not _MISSING and not _same(previous, obj) and not override:
                raise RegistryError(
                    f"{self.family} {name!r} is already registered by {self._providers[name]!r}; "
                    "choose another name or pass override=True"
                )
            journal = getattr(_current, "journal", None)
            if journal is not None:
                journal.append((self, name, previous, self._providers.get(name)))
            self._entries[name] = obj
            self._providers[name] = _provider()
        status = getattr(_current, "status", None)
        if status is not None:
            status.components.append(f"{self.family}:{name}")
        for on_add, _ in self._listeners:
            if on_add is not None:
                on_add(name, obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (no error if absent) and tell the subscribers."""
        with self._lock:
            obj = self._entries.pop(name, _MISSING)
            self._providers.pop(name, None)
        if obj is not _MISSING:
            for _, on_remove in self._listeners:
                if on_remove is not None:
                    on_remove(name, obj)

    def _restore(self, name: str, obj: Any, provider: str | None) -> None:
        if obj is _MISSING:
            self.unregister(name)
            return
        with self._lock:
            self._entries[name] = obj
            self._providers[name] = provider or "hourglass"
        for on_add, _ in self._listeners:
            if on_add is not None:
                on_add(name, obj)

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

    def registered(self, name: str) -> bool:
        """Whether ``name`` is registered *so far* (no plugin loading: safe while registering)."""
        return name in self._entries

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        """Sorted names of every registered entry of this family."""
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
            cls = self.spec_class(value.type) if "type" in type(value).model_fields else None
            if cls is not None and isinstance(value, cls):
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
        """Fields (with type, default, description), declared facts and provider of ``name``."""
        obj = self.get(name)
        info: dict[str, Any] = {
            "family": self.family,
            "name": name,
            "provider": self._providers[name],
            "doc": (obj.__doc__ or "").strip().split("\n\n")[0],
            "fields": {},
        }
        if self.needs_spec:
            for fname, f in obj.Spec.model_fields.items():  # type: ignore[attr-defined]
                if fname == "type":
                    continue
                default = None if f.is_required() else f.get_default(call_default_factory=True)
                if isinstance(default, BaseModel):
                    default = default.model_dump()
                family = next((m.registry.family for m in f.metadata if isinstance(m, ComponentOf)), None)
                info["fields"][fname] = {
                    "type": f"{family} component" if family else _type_name(f.annotation),
                    "default": default,
                    "required": f.is_required(),
                    "description": f.description or "",
                }
        if isinstance(obj, type) and issubclass(obj, Contract):
            info["facts"] = obj.facts()
        return info

    def _unknown_message(self, name: object) -> str:
        known = sorted(self._entries)
        msg = f"unknown {self.family} {name!r}; known: {', '.join(known) or '(none)'}"
        close = difflib.get_close_matches(str(name), known, n=1)
        if close:
            msg += f". Did you mean {close[0]!r}?"
        if not msg.endswith("?"):
            msg += "."
        summary = plugin_summary()
        return f"{msg} {summary}" if summary else msg

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {len(self._entries)} entries)"


def _same(a: Any, b: Any) -> bool:
    """Registering the same object again, or an equal record (a preset's data, a kernel or backend
    record a re-run entry point builds anew), is not a conflict."""
    if a is b:
        return True
    record = isinstance(a, (dict, str, tuple)) or dataclasses.is_dataclass(a)
    return not isinstance(a, type) and type(a) is type(b) and record and a == b


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
SKIP: Registry = Registry("skip")
MAPPING: Registry = Registry("mapping")
MODEL: Registry = Registry("model")
DENOISER: Registry = Registry("denoiser")
WEIGHTING: Registry = Registry("weighting")
SIGMA_DENSITY: Registry = Registry("sigma_density")
SAMPLER: Registry = Registry("sampler")
SCHEDULE: Registry = Registry("schedule")
DATASET: Registry = Registry("dataset")
VAE: Registry = Registry("vae")
TRACKER: Registry = Registry("tracker")

#: the component families (entries carry a Spec), by family name
REGISTRIES: dict[str, Registry] = {
    r.family: r
    for r in (
        ATTENTION, POS_EMB, FFN, NORM, MERGE, SKIP, MAPPING, MODEL,
        DENOISER, WEIGHTING, SIGMA_DENSITY, SAMPLER, SCHEDULE, DATASET, VAE, TRACKER,
    )
}

#: named model configurations: preset name -> plain spec data with a ``type`` key
PRESET: Registry = Registry("preset", needs_spec=False)


# -- plugins ------------------------------------------------------------------------------------
def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def load_plugins(*, strict: bool | None = None, force: bool = False) -> list[PluginStatus]:
    """Run the built-in loaders, then load every entry point of group ``hourglass.plugins`` once.

    Each entry point names a module (imported for its registrations) or a callable (called
    with no arguments). A plugin that raises is rolled back (every registration it made, in every
    registry, is undone), reported with a warning naming it, and the rest keeps working; with
    ``strict`` (or ``HOURGLASS_STRICT_PLUGINS=1``) it raises :class:`PluginError` instead.
    ``HOURGLASS_DISABLE_PLUGINS=a,b`` skips plugins by entry-point or distribution name.

    Returns:
        One :class:`PluginStatus` per entry point seen.
    """
    global _plugins_loaded, _loaders_ran
    if _plugins_loaded and not force:
        return list(_plugin_statuses)
    with _plugin_lock:
        if _plugins_loaded and not force:
            return list(_plugin_statuses)
        strict = _env_flag("HOURGLASS_STRICT_PLUGINS") if strict is None else strict
        disabled = {
            s.strip() for s in os.environ.get("HOURGLASS_DISABLE_PLUGINS", "").split(",") if s.strip()
        }
        _plugin_statuses.clear()
        _plugins_loaded = True  # set first: loaders and plugins touch registries while loading
        if not _loaders_ran:
            _loaders_ran = True
            for loader in list(_loaders):
                loader()
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
    dist = getattr(ep, "dist", None)  # importlib.metadata: entry points of a path-less finder have none
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
    journal: list[tuple[Registry, str, Any, str | None]] = []
    _current.name, _current.status, _current.journal = status.distribution or ep.name, status, journal
    try:
        obj = ep.load()
        if callable(obj):
            obj()
    except Exception as exc:
        for registry, name, previous, provider in reversed(journal):  # undo every registration
            registry._restore(name, previous, provider)
        status.status = "failed"
        status.error = f"{type(exc).__name__}: {exc}"
        status.components.clear()
        if not strict:
            warnings.warn(
                f"hourglass plugin {ep.name!r} ({ep.value}) failed to load: {status.error}; "
                "the other components are unaffected",
                RuntimeWarning,
                stacklevel=3,
            )
    finally:
        _current.name = _current.status = _current.journal = None


def plugin_summary() -> str:
    """The plugins' state in a sentence or three (``""`` when none is installed): which loaded,
    which failed (and why) and which ``HOURGLASS_DISABLE_PLUGINS`` skipped."""
    loaded = [s.name for s in _plugin_statuses if s.status == "loaded"]
    failed = [f"{s.name} ({s.error})" for s in _plugin_statuses if s.status == "failed"]
    disabled = [s.name for s in _plugin_statuses if s.status == "disabled"]
    parts = []
    if loaded:
        parts.append(f"Plugins loaded: {', '.join(loaded)}.")
    if failed:
        parts.append(f"Plugins that failed: {', '.join(failed)}.")
    if disabled:
        parts.append(f"Plugins disabled by HOURGLASS_DISABLE_PLUGINS: {', '.join(disabled)}.")
    return " ".join(parts)


def plugin_statuses() -> list[PluginStatus]:
    """Statuses of the plugins seen so far (loads them if not yet done)."""
    return load_plugins()

