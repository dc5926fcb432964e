"""Registers hourglass's own components: the loader :func:`hourglass.registry.add_loader` runs first."""

from __future__ import annotations

import importlib

__all__ = ["load_builtins"]


def load_builtins() -> None:
    """Import the packages whose decorators register hourglass's built-in components."""
    for module in ("hourglass.backends", "hourglass.nn", "hourglass.models", "hourglass.diffusion", "hourglass.data"):
        importlib.import_module(module)
