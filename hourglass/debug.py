"""When hourglass reads tensor *values* on the host to check them (no host sync on the hot path).

Checking that every ``sigma`` is positive or every class id in range needs the tensor's contents
on the host: on an accelerator that is a device-to-host synchronisation per call, which stalls the
GPU queue, and under ``torch.compile`` a graph break. So forwards and sampler steps check values only
where it costs nothing, tensors on the CPU; on other devices they check shapes, dtypes and devices
only, unless value checks are switched on for debugging with :func:`debug_checks` or the
environment variable ``HOURGLASS_DEBUG_CHECKS=1``. Nothing is read while ``torch.compile`` traces,
or on the meta device. The API and CLI boundaries (sampling entry points, dataset loading, recipe
validation) check their host-side values always.

Without value checks on an accelerator, a bad class id surfaces as an embedding index error and a
non-positive ``sigma`` as NaN outputs: switch debug checks on to get a message naming the input.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["DEBUG_ENV", "debug_checks", "debug_checks_on", "should_check_values"]

#: environment variable that turns value checks on for every device (``1``/``true``/``yes``/``on``)
DEBUG_ENV = "HOURGLASS_DEBUG_CHECKS"

#: device types whose tensors can be read on the host without a device synchronisation
_HOST_DEVICES = frozenset({"cpu"})

_forced: contextvars.ContextVar[bool | None] = contextvars.ContextVar("hourglass_debug_checks", default=None)


def debug_checks_on() -> bool:
    """Whether value checks run on every device (:func:`debug_checks`, else ``HOURGLASS_DEBUG_CHECKS``)."""
    forced = _forced.get()
    if forced is not None:
        return forced
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@contextlib.contextmanager
def debug_checks(enabled: bool = True) -> Iterator[None]:
    """Check input *values* (noise levels, class ids, ...) on every device inside this block.

    ``enabled=False`` checks CPU tensors only (the default behaviour), whatever the environment
    says. Per thread / asyncio task.

    Example:
        ``with hourglass.debug_checks(): model(x.cuda(), sigma.cuda(), class_cond=y.cuda())``
    """
    token = _forced.set(bool(enabled))
    try:
        yield
    finally:
        _forced.reset(token)


def should_check_values(*tensors: Tensor) -> bool:
    """Whether a forward may read these tensors' values now: never while compiling or on ``meta``;
    when every tensor is on the CPU; elsewhere only with debug checks on."""
    if torch.compiler.is_compiling() or any(t.device.type == "meta" for t in tensors):
        return False
    return all(t.device.type in _HOST_DEVICES for t in tensors) or debug_checks_on()
