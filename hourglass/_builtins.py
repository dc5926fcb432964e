"""Registers hourglass's own components: the loader :func:`hourglass.registry.add_loader` runs first."""

from __future__ import annotations

__all__ = ["load_builtins"]


def load_builtins() -> None:
    """Import the packages whose decorators register hourglass's built-in components."""
    import hourglass.backends
    import hourglass.data
    import hourglass.diffusion
    import hourglass.models
    import hourglass.nn  # noqa: F401
