"""The timm bridge: every preset becomes ``timm.create_model(name)``.

``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))`` loads a
``.safetensors`` file (a pretrained folder's ``model.safetensors`` or ``ema.safetensors``, a training
checkpoint, or a plain state dict), ``dict(hf_hub_id="owner/name")`` a pretrained folder on the
Hugging Face Hub (its EMA weights when present; ``hf_hub_filename`` picks a file), and
``pretrained=True`` alone the weights the preset declares (none ship yet: an error says so). The
same keys in ``pretrained_cfg`` work too.

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

#: every preset name to be a timm model, in registration order (registered again into a timm that is
#: imported afresh, e.g. after its modules were removed from ``sys.modules``)
_names: list[str] = []


def _timm_ready() -> bool:
    module = sys.modules.get("timm.models._registry")
    return module is not None and hasattr(module, "register_model")


def register(name: str) -> None:
    """Register preset ``name`` with timm now if timm is loaded, else when it gets imported."""
    if name not in _names:
        _names.append(name)
    _install_hook()
    if _timm_ready():
        _register_now(name)


def unregister(name: str) -> None:
    """Withdraw preset ``name`` from timm (a plugin that failed, or ``PRESET.unregister``).

    Uses timm's own clean-up of a registration (``_clear_model_entries``, the function timm runs
    when a name is registered again) and removes the entry point; names another package
    registered with timm are left alone.
    """
    if name in _names:
        _names.remove(name)
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

        cfg = pretrained_location(kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None))
        cache_dir = kwargs.pop("cache_dir", None)
        if not pretrained:
            return create_model(name, **kwargs)
        source = cfg.get("state_dict") or cfg.get("file") or cfg.get("hf_hub_id")
        if cfg.get("url") and not source:
            raise ValueError(f"{name}: pretrained_cfg url={cfg['url']!r} is not supported (hourglass fetches weights "
                             "through huggingface_hub only); pass file=... or hf_hub_id=...")
        if not source:  # the weights the preset declares, or an error saying there are none
            return create_model(name, pretrained=True, cache_dir=cache_dir, **kwargs)
        from hourglass.hub import load_weights_into

        model = create_model(name, **kwargs)
        load_weights_into(model, source, cache_dir=cache_dir, filename=cfg.get("hf_hub_filename"))
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"hourglass preset {name!r} (`hourglass show {name}` prints its spec)."
    register_model(entrypoint)


def pretrained_location(pretrained_cfg: Any = None, overlay: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where timm's ``pretrained_cfg`` and ``pretrained_cfg_overlay`` say the weights are.

    Returns:
        The keys ``state_dict``, ``file``, ``hf_hub_id``, ``hf_hub_filename`` and ``url`` that are set
        (the overlay wins; a ``pretrained_cfg`` given as a tag string names no location).
    """
    import dataclasses

    cfg: dict[str, Any] = {}
    if dataclasses.is_dataclass(pretrained_cfg) and not isinstance(pretrained_cfg, type):
        cfg = {f.name: getattr(pretrained_cfg, f.name) for f in dataclasses.fields(pretrained_cfg)}
    elif isinstance(pretrained_cfg, dict):
        cfg = dict(pretrained_cfg)
    cfg.update(overlay or {})
    keys = ("state_dict", "file", "hf_hub_id", "hf_hub_filename", "url")
    return {k: cfg[k] for k in keys if cfg.get(k) is not None and cfg.get(k) != ""}


def _flush() -> None:
    for name in list(_names):
        _register_now(name)  # a no-op for a name timm has


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
    """Runs :func:`sync` right after the top-level ``timm`` module finishes executing.

    It stays installed: a timm imported again (its modules removed from ``sys.modules``, as tests and
    notebooks' reloads do) gets the presets again.
    """

    def find_spec(self, fullname: str, path: Any, target: Any = None):  # noqa: D401
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec("timm")
        finally:
            sys.meta_path.insert(0, self)
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
    """Install the import hook once (a timm imported but not finished, a circular import, is
    registered into at first use: :func:`sync_if_timm_loaded`)."""
    if _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)
