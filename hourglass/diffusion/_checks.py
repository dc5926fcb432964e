"""Input checks shared by the diffusion modules (private).

Checking a tensor's *values* (is every sigma positive and finite?) needs its contents on the host,
which on an accelerator is a device-to-host synchronisation. The denoiser checks ``sigma``'s values
only where that costs no synchronisation (CPU tensors) or in debug mode, never while compiling (see
:mod:`hourglass.debug`). The samplers validate their whole sigma schedule once, as Python floats,
and then run their loop inside :func:`trusted_sigmas`, where the denoiser skips the per-call value
check; shape checks never synchronise and always run.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from hourglass.debug import should_check_values

_state = threading.local()


@contextlib.contextmanager
def trusted_sigmas() -> Iterator[None]:
    """Within this block the denoisers skip the value check of ``sigma`` (already validated)."""
    previous = getattr(_state, "trusted", False)
    _state.trusted = True
    try:
        yield
    finally:
        _state.trusted = previous


def sigmas_trusted() -> bool:
    """Whether the current thread is inside :func:`trusted_sigmas`."""
    return getattr(_state, "trusted", False)


def _describe_bad(values: Tensor, bad: Tensor, limit: int = 6) -> str:
    idx = bad.nonzero().flatten()[:limit].tolist()
    flat = values.detach().flatten()
    shown = ", ".join(f"[{i}]={flat[i].item():g}" for i in idx)
    more = int(bad.sum().item()) - len(idx)
    return shown + (f" and {more} more" if more > 0 else "")


def check_sigma(sigma: Tensor, batch: int, *, what: str = "sigma") -> Tensor:
    """Validate a noise level for a batch of ``batch`` samples and return it as ``(B,)`` or ``(1,)``.

    Args:
        sigma: a 0-d tensor, or ``(1,)`` / ``(B,)``.
        batch: the batch size ``B`` it must broadcast against.
        what: the argument's name, used in error messages.

    Returns:
        ``sigma`` reshaped to ``(B,)`` or ``(1,)``.

    Raises:
        ValueError: wrong shape, or (outside :func:`trusted_sigmas`, for CPU tensors or in debug
            mode) a value that is not positive and finite; the message names the offending entries.
    """
    if not isinstance(sigma, Tensor):
        raise TypeError(f"{what} must be a tensor of shape (B,), got {type(sigma).__name__}; "
                        "pass torch.full((B,), value)")
    if not sigma.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {sigma.dtype}; call .float() on it")
    if sigma.ndim > 1 or sigma.numel() not in (1, batch):
        raise ValueError(
            f"{what} must have shape (B,) = ({batch},) or be a single value, got shape {tuple(sigma.shape)}; "
            "give one noise level per sample"
        )
    sigma = sigma.reshape(-1)
    if not sigmas_trusted() and should_check_values(sigma):
        bad = ~(torch.isfinite(sigma) & (sigma > 0))
        if bool(bad.any()):
            raise ValueError(
                f"{what} must be positive and finite, got {_describe_bad(sigma, bad)}; "
                "noise levels live in (0, inf) (sigma = 0 is the clean image: use it as is)"
            )
    return sigma


def check_image(x: Tensor, *, what: str = "x") -> None:
    """Refuse non-tensors, integer tensors and tensors without a batch dimension."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a tensor of shape (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}; call .float() on it")
    if x.ndim < 2:
        raise ValueError(f"{what} must have a batch dimension, shape (B, C, H, W); got shape {tuple(x.shape)}")


def schedule_floats(sigmas: Tensor | Sequence[float]) -> list[float]:
    """Validate a sampling schedule and return it as Python floats (one host transfer).

    A schedule is 1-D, has at least two entries, is finite, strictly decreasing and positive except
    for an optional final 0.

    Raises:
        ValueError: naming the rule that is broken and the offending entries.
    """
    if isinstance(sigmas, Tensor):
        if sigmas.ndim != 1:
            raise ValueError(f"sigmas must be 1-D (n_steps + 1,), got shape {tuple(sigmas.shape)}")
        values = [float(v) for v in sigmas.detach().double().cpu().tolist()]
    else:
        values = [float(v) for v in sigmas]
    if len(values) < 2:
        raise ValueError(
            f"sigmas needs at least 2 entries (a start and an end noise level), got {len(values)}; "
            "build one with a schedule, e.g. SCHEDULE.build('karras')(n_steps)"
        )
    bad = [f"[{i}]={v:g}" for i, v in enumerate(values) if not math.isfinite(v) or v < 0]
    if bad:
        raise ValueError(f"sigmas must be finite and non-negative, got {', '.join(bad[:6])}")
    zeros = [i for i, v in enumerate(values) if v == 0.0]
    if zeros and zeros != [len(values) - 1]:
        raise ValueError(
            f"sigmas may contain 0 only as its last entry, found 0 at positions {zeros}; "
            "drop the extra zeros"
        )
    rising = [f"[{i}]={a:g} -> [{i + 1}]={b:g}" for i, (a, b) in enumerate(zip(values, values[1:], strict=False)) if b >= a]
    if rising:
        raise ValueError(
            f"sigmas must be strictly decreasing, got {', '.join(rising[:4])}; "
            "sample from high noise to low noise without repeated levels"
        )
    return values
