"""Registers hourglass's own components: the loader :func:`hourglass.registry.add_loader` runs first.

Every module of the component packages is imported, so a new built-in component only needs its
own module (a new file under ``hourglass/nn/``, ``hourglass/diffusion/``, ...): no list to edit.
The module names come from the package folders themselves, never from user input.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__ = ["COMPONENT_PACKAGES", "load_builtins"]

#: packages whose modules register built-in components, kernels, backends and presets
COMPONENT_PACKAGES = (
    "hourglass.backends", "hourglass.nn", "hourglass.nn.attention", "hourglass.models",
    "hourglass.diffusion", "hourglass.data", "hourglass.vae", "hourglass.trackers",
)


def load_builtins() -> None:
    """Import every module of :data:`COMPONENT_PACKAGES` (their decorators register the built-ins)."""
    for name in COMPONENT_PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.ispkg:
                importlib.import_module(f"{name}.{info.name}")
