"""When hourglass reads tensor *values* on the host to check them (no host sync on the hot path).

Checking that every ``sigma`` is positive or every class id in range needs the tensor's contents
on the host: on an accelerator that is a device-to-host synchronisation, which stalls the GPU
queue and breaks CUDA graphs and ``torch.compile(fullgraph=True)``. So forwards and sampler steps
check values only where it costs nothing: tensors on the CPU. On other devices they check shapes,
dtypes and devices only, unless value checks are switched on, for debugging, with
:func:`check_values` or the environment variable ``HOURGLASS_CHECK_VALUES=1``. Nothing is read
while ``torch.compile`` traces, or on the meta device. The API and CLI boundaries (sampling
entry points, dataset loading, recipe validation) check their host-side values always.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["check_values", "value_checks_on", "should_check_values"]

_forced: contextvars.ContextVar[bool | None] = contextvars.ContextVar("hourglass_check_values", default=None)


def value_checks_on() -> bool:
    """Whether value checks run on every device (:func:`check_values` or ``HOURGLASS_CHECK_VALUES=1``)."""
    forced = _forced.get()
    if forced is not None:
        return forced
    return os.environ.get("HOURGLASS_CHECK_VALUES", "").strip().lower() in {"1", "true", "yes", "on"}


@contextlib.contextmanager
def check_values(enabled: bool = True) -> Iterator[None]:
    """Inside this block, value checks run on every device (``enabled=False``: on none)."""
    token = _forced.set(enabled)
    try:
        yield
    finally:
        _forced.reset(token)


def should_check_values(tensor: Tensor) -> bool:
    """Whether a forward may read ``tensor``'s values now: never while compiling or on ``meta``;
    on the CPU unless switched off; elsewhere only when switched on (see the module docstring)."""
    if torch.compiler.is_compiling() or tensor.device.type == "meta":
        return False
    forced = _forced.get()
    if forced is not None:
        return forced
    return tensor.device.type == "cpu" or value_checks_on()
