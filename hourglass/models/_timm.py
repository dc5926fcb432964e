"""The timm bridge: every preset becomes ``timm.create_model(name)``.

timm is imported lazily: if it is already imported, presets register at once; otherwise an
import hook registers them right after ``import timm`` runs, so ``import hourglass`` stays cheap.
Whenever timm is in use (imported before or after hourglass), :func:`sync` loads the registries,
so the presets of plugins and of every built-in model module are timm models from the start.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any

from torch import nn

__all__: list[str] = []  # timm appends the entry-point names here

_pending: list[str] = []


def _timm_ready() -> bool:
    module = sys.modules.get("timm.models._registry")
    return module is not None and hasattr(module, "register_model")


def register(name: str) -> None:
    """Register preset ``name`` with timm now if timm is loaded, else when it gets imported."""
    if _timm_ready():
        _register_now(name)
    else:
        _pending.append(name)
        _install_hook()


def unregister(name: str) -> None:
    """Withdraw preset ``name`` from timm (a plugin that failed, or ``PRESET.unregister``).

    Uses timm's own clean-up of a registration (``_clear_model_entries``, the function timm runs
    when a name is registered again) and removes the entry point; names another package
    registered with timm are left alone.
    """
    if name in _pending:
        _pending.remove(name)
    if not _timm_ready():
        return
    registry = sys.modules["timm.models._registry"]
    entry = registry._model_entrypoints.get(name)
    if entry is None or getattr(entry, "__module__", None) != __name__:
        return
    clear = getattr(registry, "_clear_model_entries", None)
    if clear is not None:
        clear(name)
    else:  # older timm: the module maps are the registration
        module = registry._model_to_module.pop(name, None)
        registry._module_to_models.get(module, set()).discard(name)
    registry._model_entrypoints.pop(name, None)
    if name in __all__:
        __all__.remove(name)


def _register_now(name: str) -> None:
    from timm.models._registry import _model_entrypoints, register_model

    if name in _model_entrypoints:
        return

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        from hourglass.models.factory import create_model

        return create_model(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"hourglass preset {name!r} (`hourglass show {name}` prints its spec)."
    register_model(entrypoint)


def _flush() -> None:
    while _pending:
        _register_now(_pending.pop(0))


def sync() -> None:
    """Make timm see every preset: load the registries (built-ins and plugins), then register what waits."""
    from hourglass.registry import load_plugins

    load_plugins()
    _flush()


def sync_if_timm_loaded() -> None:
    """:func:`sync` now if timm is already imported (else the import hook does it when timm is)."""
    if _timm_ready():
        sync()
    else:
        _install_hook()


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Runs :func:`_flush` right after the top-level ``timm`` module finishes executing."""

    def find_spec(self, fullname: str, path: Any, target: Any = None):  # noqa: D401
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            sync()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


_hook = _TimmImportHook()


def _install_hook() -> None:
    if "timm" in sys.modules:  # imported but not finished (circular import): register at first use
        return
    if _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)
