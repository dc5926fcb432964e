"""Kernels, their backends, capability probes and backend resolution.

A *kernel* is a token-mixing computation with one signature, e.g. ``neighborhood``:
``fn(q, k, v, kernel_size, dilation, scale)`` on ``(B, H, W, heads, D)`` tensors. Attention kinds
name the kernel that serves them (several kinds may share one: ``dinat`` runs on
``neighborhood``). A *backend* is one implementation of a kernel (``torch``, ``natten``,
``flex``, ...); every kernel has a pure-PyTorch *reference* backend that runs forward and backward
on any device. Backends never change the maths or the ``state_dict``: they are a runtime choice.

Both live in registries (:data:`KERNEL`, :data:`BACKEND`), so a plugin adds a kernel or a
backend with :func:`register_kernel` / :func:`register_backend` exactly as hourglass does, and a
failing plugin's backends are rolled back with the rest of its registrations.

A probe answers "can backend X of kernel K run on (device type, dtype, requires_grad)?" with
``None`` (yes) or the reason it cannot; results are cached. Resolution: an explicit choice
(``backend=`` argument or a module's pinned backend) > :func:`use_backends` > environment variable
``HOURGLASS_BACKEND_<KERNEL>`` > ``auto``, which takes the runnable backend of best ``auto`` rank
for the device type.

Under ``torch.compile`` the choice is made while Dynamo traces and is baked into the graph:
:func:`_probe` and :func:`_auto_candidates` (imports, test kernels, locks, logging, caches) are
marked :func:`torch.compiler.assume_constant_result`, so Dynamo runs them as plain Python and keeps
their answer, a function of constants only (kernel, backend name, device type, dtype,
requires_grad, all guarded by Dynamo's tensor and grad-mode guards). The requested name comes from
a module's pinned backend (a guarded attribute), :func:`use_backends` (a guarded ``ContextVar``) or
the environment, which is read when a graph is traced: set ``HOURGLASS_BACKEND_*`` before
compiling, or call ``torch.compiler.reset()`` after changing it.
"""

from __future__ import annotations

import contextvars
import difflib
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hourglass.registry import Registry, RegistryError

__all__ = [
    "KERNEL",
    "BACKEND",
    "BACKENDS",
    "Kernel",
    "Backend",
    "BackendUnavailableError",
    "register_kernel",
    "register_backend",
    "kernel_names",
    "backend_names",
    "available_backends",
    "resolve_backend",
    "select_backend",
    "use_backends",
    "clear_backend_cache",
    "call_kernel",
    "check_backend_choice",
]

log = logging.getLogger("hourglass.backends")

ENV_PREFIX = "HOURGLASS_BACKEND_"
AUTO = "auto"
ANY_DEVICE = "*"

ProbeFn = Callable[[str, torch.dtype, bool], "str | None"]


class BackendUnavailableError(RuntimeError):
    """An explicitly chosen backend cannot run for these inputs (the message says why)."""


@dataclass(frozen=True)
class Kernel:
    """A token-mixing computation that backends implement.

    Attributes:
        name: the kernel's name (``[runtime.backends]`` keys and ``use_backends`` use it).
        reference: the name of its pure-PyTorch backend (forward and backward on any device).
        check: ``check(q, *args)`` raises ``ValueError`` for arguments no backend can take
            (e.g. a window larger than the grid); runs before a backend is chosen.
        doc: one line saying what it computes and its extra arguments.
    """

    name: str
    reference: str
    check: Callable[..., None] | None = None
    doc: str = ""


@dataclass(frozen=True)
class Backend:
    """One implementation of a kernel.

    Attributes:
        kernel: the kernel it implements.
        name: the backend's name, e.g. ``"natten"``.
        fn: ``fn(q, k, v, *args, scale) -> out``, all ``(B, H, W, heads, D)``.
        probe: ``probe(device_type, dtype, requires_grad) -> reason | None``.
        input_problem: ``input_problem(q, *args) -> reason | None`` for inputs it cannot take
            (``auto`` then moves on, an explicit choice raises).
        auto: ``{device_type: rank}``: ``auto`` tries lower ranks first; ``"*"`` covers device types
            not listed; a device type with no rank is never chosen by ``auto`` (explicit choice only).
        auto_veto: like ``probe``, a reason for ``auto`` to pass over a backend that can run but
            should not be picked unasked (e.g. a slow fallback); explicit choices ignore it.
    """

    kernel: str
    name: str
    fn: Callable[..., Tensor]
    probe: ProbeFn | None = None
    input_problem: Callable[..., str | None] | None = None
    auto: Mapping[str, int] = field(default_factory=lambda: {ANY_DEVICE: 100})
    auto_veto: ProbeFn | None = None

    def rank(self, device_type: str) -> int | None:
        """``auto`` rank on ``device_type`` (None: never chosen by auto there)."""
        return self.auto.get(device_type, self.auto.get(ANY_DEVICE))


#: kernel name -> :class:`Kernel`
KERNEL: Registry = Registry("kernel", needs_spec=False)
#: ``"kernel:backend"`` -> :class:`Backend`
BACKEND: Registry = Registry("backend", needs_spec=False)

_probe_cache: dict[tuple[str, str, str, torch.dtype, bool], str | None] = {}
_auto_cache: dict[tuple[str, str, torch.dtype, bool], tuple[str, ...]] = {}
_lock = threading.Lock()
_choices: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("hourglass_backends", default=None)


def clear_backend_cache(*_: object) -> None:
    """Forget cached probe results (e.g. after installing a package in a running process)."""
    with _lock:
        _probe_cache.clear()
        _auto_cache.clear()
    importlib.invalidate_caches()


KERNEL.subscribe(clear_backend_cache, clear_backend_cache)
BACKEND.subscribe(clear_backend_cache, clear_backend_cache)


def register_kernel(
    name: str, *, reference: str = "torch", check: Callable[..., None] | None = None, doc: str = "",
    override: bool = False,
) -> Kernel:
    """Register a kernel (a token-mixing computation that backends implement).

    Register its reference backend (named ``reference``) with :func:`register_backend` next.

    Args:
        name: snake_case kernel name; ``[runtime.backends]`` keys and ``HOURGLASS_BACKEND_<NAME>`` use it.
        reference: name of the pure-PyTorch backend every device can run (forward and backward).
        check: ``check(q, *args)`` raising ``ValueError`` for arguments no backend can take.
        doc: one line: what it computes and its extra arguments.
        override: replace a kernel of that name.

    Returns:
        The registered :class:`Kernel`.
    """
    kernel = Kernel(name=name, reference=reference, check=check, doc=doc)
    KERNEL.add(name, kernel, override=override)
    return kernel


def register_backend(
    kernel: str,
    name: str,
    fn: Callable[..., Tensor],
    *,
    probe: ProbeFn | None = None,
    input_problem: Callable[..., str | None] | None = None,
    auto: Mapping[str, int] | None = None,
    auto_veto: ProbeFn | None = None,
    override: bool = False,
) -> Backend:
    """Register backend ``name`` of ``kernel``.

    Args:
        kernel: a registered kernel name.
        name: the backend's name (what users pin: ``[runtime.backends] <kernel> = "<name>"``).
        fn: ``fn(q, k, v, *args, scale)`` with ``q, k, v`` of shape ``(B, H, W, heads, D)``,
            returning the same shape; ``args`` are the kernel's extra arguments.
        probe: ``probe(device_type, dtype, requires_grad) -> reason | None``; ``None`` = runs anywhere.
        input_problem: ``input_problem(q, *args) -> reason | None`` for inputs it cannot take.
        auto: ``{device_type: rank}`` for ``auto`` (lower first, ``"*"`` = other devices); default
            ``{"*": 100}``: eligible everywhere, after the built-ins.
        auto_veto: reason for ``auto`` to skip it although it can run (explicit choices ignore it).
        override: replace a backend of that name.

    Raises:
        RegistryError: an unknown kernel (the message lists the known ones) or a taken name.
    """
    if not KERNEL.registered(kernel):
        raise RegistryError(
            f"backend {name!r}: no kernel {kernel!r} is registered; register it first with register_kernel "
            f"(known kernels: {', '.join(sorted(KERNEL._entries))})"
        )
    backend = Backend(
        kernel=kernel, name=name, fn=fn, probe=probe, input_problem=input_problem,
        auto=dict(auto) if auto is not None else {ANY_DEVICE: 100}, auto_veto=auto_veto,
    )
    BACKEND.add(f"{kernel}:{name}", backend, override=override)
    return backend


def kernel_names() -> list[str]:
    """Sorted names of the registered kernels."""
    return KERNEL.names()


def backend_names(kernel: str) -> tuple[str, ...]:
    """Backends of ``kernel``: its reference first, then the others by name.

    Raises:
        ValueError: an unknown kernel (the message lists the known ones).
    """
    ref = _kernel(kernel).reference
    names = sorted(key.split(":", 1)[1] for key in BACKEND.names() if key.split(":", 1)[0] == kernel)
    return tuple([ref] if ref in names else []) + tuple(n for n in names if n != ref)


class _BackendsView(Mapping):
    """``BACKENDS[kernel] -> backend names``: a live, read-only view of the registry."""

    def __getitem__(self, kernel: str) -> tuple[str, ...]:
        if kernel not in KERNEL:
            raise KeyError(kernel)
        return backend_names(kernel)

    def __iter__(self) -> Iterator[str]:
        return iter(KERNEL.names())

    def __len__(self) -> int:
        return len(KERNEL.names())


#: kernel -> backend names (the first is the kernel's pure-PyTorch reference)
BACKENDS: Mapping[str, tuple[str, ...]] = _BackendsView()


def _kernel(kernel: str) -> Kernel:
    if kernel not in KERNEL:
        close = difflib.get_close_matches(str(kernel), KERNEL.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown attention kernel {kernel!r}; known kernels: {', '.join(KERNEL.names())}.{hint}")
    return KERNEL.get(kernel)


def check_backend_choice(kernel: str, name: str) -> str | None:
    """Why ``name`` is not a valid backend choice for ``kernel`` (``None`` if it is, or ``"auto"``)."""
    if kernel not in KERNEL:
        close = difflib.get_close_matches(str(kernel), KERNEL.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"no attention kernel is called {kernel!r}{hint}; known kernels: {', '.join(KERNEL.names())}"
    names = backend_names(kernel)
    if name == AUTO or name in names:
        return None
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kernel} backend {name!r}{hint}; known {kernel} backends: {', '.join(names)}, or 'auto'"


def _check_name(kernel: str, name: str, source: str) -> None:
    _kernel(kernel)
    reason = check_backend_choice(kernel, name)
    if reason is not None:
        raise ValueError(f"{reason} (from {source})")


def _device_type(device) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


@torch.compiler.assume_constant_result  # Dynamo runs it eagerly and keeps the answer (see the module doc)
def _probe(kernel: str, name: str, device_type: str, dtype: torch.dtype, requires_grad: bool) -> str | None:
    key = (kernel, name, device_type, dtype, requires_grad)
    if key in _probe_cache:
        return _probe_cache[key]
    probe = BACKEND.get(f"{kernel}:{name}").probe
    try:
        reason = probe(device_type, dtype, requires_grad) if probe is not None else None
    except Exception as exc:  # a probe that breaks means the backend cannot be trusted here
        reason = f"probe failed: {type(exc).__name__}: {exc}"
    with _lock:
        _probe_cache[key] = reason
    return reason


def available_backends(
    kernel: str, device="cpu", dtype: torch.dtype = torch.float32, requires_grad: bool = False
) -> dict[str, str | None]:
    """Which backends of ``kernel`` can run here.

    Args:
        kernel: a kernel name, e.g. ``"neighborhood"``.
        device: device (or its type) the inputs live on.
        dtype: dtype of ``q``, ``k``, ``v``.
        requires_grad: whether a backward pass will be needed.

    Returns:
        ``{name: None}`` for a backend that can run, ``{name: reason}`` for one that cannot.
    """
    _kernel(kernel)
    dt = _device_type(device)
    return {name: _probe(kernel, name, dt, dtype, requires_grad) for name in backend_names(kernel)}


def _runnable_summary(kernel: str, dt: str, dtype: torch.dtype, requires_grad: bool) -> str:
    ok = [n for n in backend_names(kernel) if _probe(kernel, n, dt, dtype, requires_grad) is None]
    return ", ".join(ok) if ok else "none"


def _requested(kernel: str, explicit: str | None) -> tuple[str, str]:
    """The requested name and where it came from, by precedence."""
    if explicit is not None:
        return explicit, "the backend= argument"
    ctx = _choices.get() or {}
    if kernel in ctx:
        return ctx[kernel], f"use_backends({kernel}=...)"
    env = ENV_PREFIX + kernel.upper()
    value = os.environ.get(env, "").strip()
    if value:
        return value, f"the environment variable {env}"
    return AUTO, "auto"


@torch.compiler.assume_constant_result  # Dynamo runs it eagerly and keeps the answer (see the module doc)
def _auto_candidates(kernel: str, dt: str, dtype: torch.dtype, requires_grad: bool) -> tuple[str, ...]:
    """Backends ``auto`` may use here, in preference order (skips logged once, then cached)."""
    key = (kernel, dt, dtype, requires_grad)
    cached = _auto_cache.get(key)
    if cached is not None:
        return cached
    ranked = []
    for name in backend_names(kernel):
        rank = BACKEND.get(f"{kernel}:{name}").rank(dt)
        if rank is not None:
            ranked.append((rank, name))
    order = [name for _, name in sorted(ranked)]
    ok = []
    for candidate in order:
        reason = _probe(kernel, candidate, dt, dtype, requires_grad)
        veto = BACKEND.get(f"{kernel}:{candidate}").auto_veto
        if reason is None and veto is not None:
            reason = veto(dt, dtype, requires_grad)
        if reason is None:
            ok.append(candidate)
        else:
            log.debug("auto %s backend on %s/%s (grad=%s): skipped %s: %s", kernel, dt, dtype, requires_grad,
                      candidate, reason)
    if not ok:
        raise BackendUnavailableError(
            f"no {kernel} backend can run on {dt} with {dtype} (requires_grad={requires_grad}); tried "
            + ("; ".join(f"{n}: {_probe(kernel, n, dt, dtype, requires_grad)}" for n in order) or "none")
            + "; pin one that can with [runtime.backends] or use_backends()"
        )
    log.debug("auto %s backend on %s/%s (grad=%s): usable in order: %s", kernel, dt, dtype, requires_grad, ok)
    with _lock:
        _auto_cache[key] = tuple(ok)
    return tuple(ok)


def resolve_backend(kernel: str, device, dtype: torch.dtype, requires_grad: bool, explicit: str | None = None) -> str:
    """Pick the backend that computes ``kernel`` for inputs on ``device`` with ``dtype``.

    Precedence: ``explicit`` > :func:`use_backends` context > ``HOURGLASS_BACKEND_<KERNEL>`` >
    ``auto``. ``auto`` takes the runnable backend of best rank for the device type (CUDA: natten
    > torch > flex for neighborhood, sdpa > xformers > torch for global; CPU: torch for the local
    kernels, sdpa for global) and logs (at DEBUG, logger ``hourglass.backends``) what it skipped and why.

    Args:
        kernel: a kernel name, e.g. ``"neighborhood"``.
        device: device (or device type) of the inputs.
        dtype: dtype of the inputs.
        requires_grad: whether a backward pass is needed.
        explicit: a backend name or ``"auto"``; ``None`` defers to the context and environment.

    Returns:
        The backend name.

    Raises:
        ValueError: unknown kernel or backend name (the message lists the known ones).
        BackendUnavailableError: an explicit choice that cannot run here (the message says why
            and which backends can).
    """
    return select_backend(kernel, device, dtype, requires_grad, explicit)


def select_backend(
    kernel: str,
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
    name, source = _requested(kernel, explicit)
    _check_name(kernel, name, source)
    dt = _device_type(device)
    grad = "with" if requires_grad else "without"
    if name != AUTO:
        reason = _probe(kernel, name, dt, dtype, requires_grad)
        if reason is None and input_problem is not None:
            reason = input_problem(name)
        if reason is not None:
            raise BackendUnavailableError(
                f"{kernel} backend {name!r} (chosen by {source}) cannot run on {dt} with {dtype} {grad} gradients: "
                f"{reason}. Backends that can run here: {_runnable_summary(kernel, dt, dtype, requires_grad)}; "
                f"choose one of them or 'auto'."
            )
        return name
    candidates = _auto_candidates(kernel, dt, dtype, requires_grad)
    for candidate in candidates:
        reason = input_problem(candidate) if input_problem is not None else None
        if reason is None:
            return candidate
        if not torch.compiler.is_compiling():  # Dynamo cannot trace logging calls
            log.debug("auto %s backend: skipped %s for these inputs: %s", kernel, candidate, reason)
    raise BackendUnavailableError(
        f"no {kernel} backend can take these inputs on {dt} with {dtype} {grad} gradients; tried "
        + "; ".join(f"{n}: {input_problem(n)}" for n in candidates)
    )


@contextmanager
def use_backends(**choices: str | None) -> Iterator[None]:
    """Choose backends per kernel inside a ``with`` block (per thread / asyncio task).

    Example:
        ``with use_backends(neighborhood="natten", **{"global": "sdpa"}): model(x)``

    Args:
        **choices: kernel -> backend name, ``"auto"``, or ``None`` (no choice: fall back to the
            environment / auto). ``global`` is a Python keyword, pass it via ``**{...}``.

    Raises:
        ValueError: an unknown kernel or backend name.
    """
    merged = dict(_choices.get() or {})
    for kernel, name in choices.items():
        _kernel(kernel)
        if name is None:
            merged.pop(kernel, None)
            continue
        _check_name(kernel, name, f"use_backends({kernel}=...)")
        merged[kernel] = name
    token = _choices.set(merged)
    try:
        yield
    finally:
        _choices.reset(token)


def _check_qkv(fn: str, q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Validate ``q``, ``k``, ``v``; returns whether a backward pass will be needed."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 5:
            raise ValueError(
                f"{fn}: {name} must have shape (B, H, W, heads, D), got {tuple(t.shape)}; "
                "split channels into heads first, e.g. x.unflatten(-1, (heads, -1))"
            )
    if not q.shape == k.shape == v.shape:
        raise ValueError(
            f"{fn}: q, k and v must have the same shape (B, H, W, heads, D), got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"{fn}: q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}; cast them")
    if not q.device == k.device == v.device:
        raise ValueError(f"{fn}: q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    return torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)


def call_kernel(kernel: str, q: Tensor, k: Tensor, v: Tensor, *args, scale: float = 1.0,
                backend: str | None = None) -> Tensor:
    """Run ``kernel`` on ``q, k, v`` with the resolved backend.

    Args:
        kernel: a kernel name.
        q, k, v: ``(B, H, W, heads, D)``.
        *args: the kernel's extra arguments (e.g. ``kernel_size, dilation`` for ``neighborhood``).
        scale: multiplier of ``q . k`` before the softmax.
        backend: a backend name, ``"auto"``, or ``None`` (context, environment, then auto).

    Returns:
        ``(B, H, W, heads, D)``.

    Raises:
        ValueError: bad shapes or arguments (the kernel's own check says which).
        BackendUnavailableError: the chosen backend cannot run these inputs here.
    """
    spec = _kernel(kernel)
    grad = _check_qkv(f"{kernel} attention", q, k, v)
    if spec.check is not None:
        spec.check(q, *args)

    def problem(name: str) -> str | None:
        found = BACKEND.get(f"{kernel}:{name}").input_problem
        return found(q, *args) if found is not None else None

    name = select_backend(kernel, q.device, q.dtype, grad, backend, problem)
    if not grad:  # flex (and NATTEN on CPU) refuse inputs that require grad even under no_grad
        q, k, v = q.detach(), k.detach(), v.detach()
    return BACKEND.get(f"{kernel}:{name}").fn(q, k, v, *args, float(scale))
