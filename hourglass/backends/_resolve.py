"""Backend table, capability probes and resolution (explicit > context > environment > auto).

A probe answers "can backend X of kind K run on (device type, dtype, requires_grad)?" with
``None`` (yes) or the reason it cannot. Probes are cached per (kind, device type, dtype,
requires_grad); they only import optional packages here, lazily.
"""

from __future__ import annotations

import contextvars
import difflib
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

__all__ = [
    "BACKENDS",
    "AUTO_ORDER",
    "BackendUnavailableError",
    "available_backends",
    "resolve_backend",
    "use_backends",
    "clear_backend_cache",
    "register_probe",
    "select_backend",
]

log = logging.getLogger("hourglass.backends")

#: kind -> backend names (the first is the pure-PyTorch reference of the kind).
BACKENDS: dict[str, tuple[str, ...]] = {
    "neighborhood": ("torch", "natten", "flex"),
    "shifted_window": ("torch", "flex"),
    "global": ("torch", "sdpa", "xformers"),
}

#: ``auto`` preference per (kind, device type); device types not listed use "cpu".
AUTO_ORDER: dict[tuple[str, str], tuple[str, ...]] = {
    # measured on an H200: the chunked torch kernel beat compiled flex at 64^2-256^2 tokens
    ("neighborhood", "cuda"): ("natten", "torch", "flex"),
    ("neighborhood", "cpu"): ("torch",),
    ("shifted_window", "cuda"): ("flex", "torch"),
    ("shifted_window", "cpu"): ("torch",),
    ("global", "cuda"): ("sdpa", "xformers", "torch"),
    ("global", "cpu"): ("sdpa", "torch"),
}

ENV_PREFIX = "HOURGLASS_BACKEND_"
AUTO = "auto"


class BackendUnavailableError(RuntimeError):
    """An explicitly chosen backend cannot run for these inputs (the message says why)."""


ProbeFn = Callable[[str, torch.dtype, bool], "str | None"]
_probes: dict[tuple[str, str], ProbeFn] = {}
_auto_vetoes: dict[tuple[str, str], ProbeFn] = {}
_probe_cache: dict[tuple[str, str, str, torch.dtype, bool], str | None] = {}
_auto_cache: dict[tuple[str, str, torch.dtype, bool], tuple[str, ...]] = {}
_lock = threading.Lock()
_choices: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("hourglass_backends", default=None)


def register_probe(kind: str, name: str, probe: ProbeFn, auto_veto: ProbeFn | None = None) -> None:
    """Set the capability probe of backend ``name`` of ``kind`` (internal; one per backend).

    ``auto_veto`` (same signature) names a reason for ``auto`` to pass over a backend that
    can run but should not be picked unasked (e.g. a slow fallback); explicit choices ignore it.
    """
    _probes[(kind, name)] = probe
    if auto_veto is not None:
        _auto_vetoes[(kind, name)] = auto_veto


def clear_backend_cache() -> None:
    """Forget cached probe results (e.g. after installing a package in a running process)."""
    with _lock:
        _probe_cache.clear()
        _auto_cache.clear()
    importlib.invalidate_caches()


def _check_kind(kind: str) -> None:
    if kind not in BACKENDS:
        raise ValueError(f"unknown attention kind {kind!r}; known kinds: {', '.join(BACKENDS)}")


def _check_name(kind: str, name: str, source: str) -> None:
    if name == AUTO or name in BACKENDS[kind]:
        return
    close = difflib.get_close_matches(name, BACKENDS[kind], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown {kind} backend {name!r} (from {source}); known {kind} backends: "
        f"{', '.join(BACKENDS[kind])}, or 'auto'.{hint}"
    )


def _device_type(device) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


def _probe(kind: str, name: str, device_type: str, dtype: torch.dtype, requires_grad: bool) -> str | None:
    key = (kind, name, device_type, dtype, requires_grad)
    if key in _probe_cache:
        return _probe_cache[key]
    probe = _probes.get((kind, name))
    if probe is None:  # a bug in this package, not a user error
        raise RuntimeError(f"internal error: no capability probe registered for {kind} backend {name!r}")
    try:
        reason = probe(device_type, dtype, requires_grad)
    except Exception as exc:  # a probe that breaks means the backend cannot be trusted here
        reason = f"probe failed: {type(exc).__name__}: {exc}"
    with _lock:
        _probe_cache[key] = reason
    return reason


def available_backends(
    kind: str, device="cpu", dtype: torch.dtype = torch.float32, requires_grad: bool = False
) -> dict[str, str | None]:
    """Which backends of ``kind`` can run here.

    Args:
        kind: ``"neighborhood"``, ``"shifted_window"`` or ``"global"``.
        device: device (or its type) the inputs live on.
        dtype: dtype of ``q``, ``k``, ``v``.
        requires_grad: whether a backward pass will be needed.

    Returns:
        ``{name: None}`` for a backend that can run, ``{name: reason}`` for one that cannot.
    """
    _check_kind(kind)
    dt = _device_type(device)
    return {name: _probe(kind, name, dt, dtype, requires_grad) for name in BACKENDS[kind]}


def _runnable_summary(kind: str, dt: str, dtype: torch.dtype, requires_grad: bool) -> str:
    ok = [n for n in BACKENDS[kind] if _probe(kind, n, dt, dtype, requires_grad) is None]
    return ", ".join(ok) if ok else "none"


def _requested(kind: str, explicit: str | None) -> tuple[str, str]:
    """The requested name and where it came from, by precedence."""
    if explicit is not None:
        return explicit, "the backend= argument"
    ctx = _choices.get() or {}
    if kind in ctx:
        return ctx[kind], f"use_backends({kind}=...)"
    env = ENV_PREFIX + kind.upper()
    value = os.environ.get(env, "").strip()
    if value:
        return value, f"the environment variable {env}"
    return AUTO, "auto"


def _auto_candidates(kind: str, dt: str, dtype: torch.dtype, requires_grad: bool) -> tuple[str, ...]:
    """Backends ``auto`` may use here, in preference order (skips logged once, then cached)."""
    key = (kind, dt, dtype, requires_grad)
    cached = _auto_cache.get(key)
    if cached is not None:
        return cached
    order = AUTO_ORDER.get((kind, dt), AUTO_ORDER[(kind, "cpu")])
    ok = []
    for candidate in order:
        reason = _probe(kind, candidate, dt, dtype, requires_grad)
        veto = _auto_vetoes.get((kind, candidate))
        if reason is None and veto is not None:
            reason = veto(dt, dtype, requires_grad)
        if reason is None:
            ok.append(candidate)
        else:
            log.debug(
                "auto %s backend on %s/%s (grad=%s): skipped %s: %s", kind, dt, dtype, requires_grad, candidate, reason
            )
    if not ok:
        raise BackendUnavailableError(
            f"no {kind} backend can run on {dt} with {dtype} (requires_grad={requires_grad}); tried "
            + "; ".join(f"{n}: {_probe(kind, n, dt, dtype, requires_grad)}" for n in order)
        )
    log.debug("auto %s backend on %s/%s (grad=%s): usable in order: %s", kind, dt, dtype, requires_grad, ok)
    with _lock:
        _auto_cache[key] = tuple(ok)
    return tuple(ok)


def resolve_backend(kind: str, device, dtype: torch.dtype, requires_grad: bool, explicit: str | None = None) -> str:
    """Pick the backend that computes ``kind`` for inputs on ``device`` with ``dtype``.

    Precedence: ``explicit`` > :func:`use_backends` context > ``HOURGLASS_BACKEND_<KIND>`` >
    ``auto``. ``auto`` takes the first backend of the device's preference list that can run
    (CUDA: natten > flex > torch for neighborhood, sdpa > xformers > torch for global; CPU:
    torch for the local kinds, sdpa for global) and logs (at DEBUG, logger
    ``hourglass.backends``) the ones it skipped and why.

    Args:
        kind: ``"neighborhood"``, ``"shifted_window"`` or ``"global"``.
        device: device (or device type) of the inputs.
        dtype: dtype of the inputs.
        requires_grad: whether a backward pass is needed.
        explicit: a backend name or ``"auto"``; ``None`` defers to the context and environment.

    Returns:
        The backend name.

    Raises:
        ValueError: unknown kind or backend name (the message lists the known ones).
        BackendUnavailableError: an explicit choice that cannot run here (the message says why
            and which backends can).
    """
    return select_backend(kind, device, dtype, requires_grad, explicit)


def select_backend(
    kind: str,
    device,
    dtype: torch.dtype,
    requires_grad: bool,
    explicit: str | None = None,
    input_problem: Callable[[str], str | None] | None = None,
) -> str:
    """:func:`resolve_backend` that also checks the actual inputs.

    ``input_problem(name)`` returns why backend ``name`` cannot take these particular inputs
    (e.g. a head dim it does not support) or ``None``; ``auto`` then moves on to the next
    backend, an explicit choice raises.
    """
    _check_kind(kind)
    name, source = _requested(kind, explicit)
    _check_name(kind, name, source)
    dt = _device_type(device)
    grad = "with" if requires_grad else "without"
    if name != AUTO:
        reason = _probe(kind, name, dt, dtype, requires_grad)
        if reason is None and input_problem is not None:
            reason = input_problem(name)
        if reason is not None:
            raise BackendUnavailableError(
                f"{kind} backend {name!r} (chosen by {source}) cannot run on {dt} with {dtype} {grad} gradients: "
                f"{reason}. Backends that can run here: {_runnable_summary(kind, dt, dtype, requires_grad)}; "
                f"choose one of them or 'auto'."
            )
        return name
    candidates = _auto_candidates(kind, dt, dtype, requires_grad)
    for candidate in candidates:
        reason = input_problem(candidate) if input_problem is not None else None
        if reason is None:
            return candidate
        log.debug("auto %s backend: skipped %s for these inputs: %s", kind, candidate, reason)
    raise BackendUnavailableError(
        f"no {kind} backend can take these inputs on {dt} with {dtype} {grad} gradients; tried "
        + "; ".join(f"{n}: {input_problem(n)}" for n in candidates)
    )


@contextmanager
def use_backends(**choices: str | None) -> Iterator[None]:
    """Choose backends per kind inside a ``with`` block (per thread / asyncio task).

    Example:
        ``with use_backends(neighborhood="natten", **{"global": "sdpa"}): model(x)``

    Args:
        **choices: kind -> backend name, ``"auto"``, or ``None`` (no choice: fall back to the
            environment / auto). ``global`` is a Python keyword, pass it via ``**{...}``.

    Raises:
        ValueError: an unknown kind or backend name.
    """
    merged = dict(_choices.get() or {})
    for kind, name in choices.items():
        _check_kind(kind)
        if name is None:
            merged.pop(kind, None)
            continue
        _check_name(kind, name, f"use_backends({kind}=...)")
        merged[kind] = name
    token = _choices.set(merged)
    try:
        yield
    finally:
        _choices.reset(token)
