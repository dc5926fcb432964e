"""Attention kernels, their runtime backends, and the choice of backend.

A *kernel* is one token-mixing computation (``neighborhood``, ``shifted_window``, ``global``, or
one a plugin registers); attention kinds name the kernel that serves them. A *backend* computes a
kernel: ``torch`` (the pure-PyTorch reference of each kernel, forward and backward on any
device), ``natten``, ``flex``, ``sdpa``, ``xformers``. Backends are a runtime choice and never
change the ``state_dict``. Optional packages (natten, xformers, flex_attention) are imported only
here, lazily.

All kernels take ``q``, ``k``, ``v`` of shape ``(B, H, W, heads, D)`` and return that shape.
Backend resolution: the module's pinned backend or ``backend=`` argument > :func:`use_backends`
> environment variable ``HOURGLASS_BACKEND_<KERNEL>`` (e.g. ``HOURGLASS_BACKEND_NEIGHBORHOOD=natten``)
> ``auto``. Plugins add kernels and backends with :func:`register_kernel` and
:func:`register_backend`.
"""

from __future__ import annotations

from hourglass.backends import _flex, _global, _natten, _torch_neighborhood, _window  # noqa: E402,F401 - register
from hourglass.backends._kernels import global_attention, neighborhood_attention, shifted_window_attention
from hourglass.backends._registry import (
    BACKEND,
    BACKENDS,
    KERNEL,
    Backend,
    BackendUnavailableError,
    Kernel,
    available_backends,
    backend_names,
    call_kernel,
    check_backend_choice,
    clear_backend_cache,
    kernel_names,
    register_backend,
    register_kernel,
    resolve_backend,
    select_backend,
    use_backends,
)

__all__ = [
    "BACKEND",
    "BACKENDS",
    "KERNEL",
    "Backend",
    "BackendUnavailableError",
    "Kernel",
    "available_backends",
    "backend_names",
    "call_kernel",
    "check_backend_choice",
    "clear_backend_cache",
    "global_attention",
    "kernel_names",
    "neighborhood_attention",
    "register_backend",
    "register_kernel",
    "resolve_backend",
    "select_backend",
    "shifted_window_attention",
    "use_backends",
]
