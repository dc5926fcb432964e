"""The machinery every sampler shares (private): argument checks, the sigma-to-tensor call,
progress, callbacks and the noise source.

A sampler's loop sees the schedule as Python floats (validated once, one host transfer), so no
step needs a device-to-host synchronisation; ``sigma`` tensors for the denoiser are built with
``torch.full`` on the device of ``x``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from hourglass.diffusion._checks import check_image, schedule_floats, trusted_sigmas
from hourglass.registry import SAMPLER, Contract
from hourglass.spec import Spec

__all__ = ["Sampler", "SamplerSpec", "SamplerRun", "DenoiserFn", "NoiseFn", "Callback"]

DenoiserFn = Callable[..., Tensor]
NoiseFn = Callable[[Tensor], Tensor]
Callback = Callable[[dict[str, Any]], None]


class SamplerSpec(Spec):
    """Base of every sampler spec (options of the algorithm, not of one call)."""


class SamplerRun:
    """Per-call context handed to a sampler's loop."""

    def __init__(
        self, denoiser: DenoiserFn, x: Tensor, extra_args: dict[str, Any], noise: NoiseFn,
        callback: Callback | None, n_steps: int, disable_progress: bool,
    ) -> None:
        self._denoiser = denoiser
        self._extra = extra_args
        self._batch = x.shape[0]
        self._sigma_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.noise = noise
        self._callback = callback
        self.n_steps = n_steps
        self._disable = disable_progress or bool(os.environ.get("HOURGLASS_NO_PROGRESS"))

    def model(self, x: Tensor, sigma: float) -> Tensor:
        """``D(x; sigma)`` with ``sigma`` broadcast to ``(B,)`` on ``x``'s device (no sync)."""
        s = torch.full((self._batch,), sigma, device=x.device, dtype=self._sigma_dtype)
        return self._denoiser(x, s, **self._extra)

    def steps(self) -> Iterable[int]:
        """``range(n_steps)``, with a progress bar unless disabled."""
        if self._disable:
            return range(self.n_steps)
        from tqdm.auto import trange

        return trange(self.n_steps)

    def report(self, x: Tensor, i: int, sigma: float, sigma_hat: float, denoised: Tensor) -> None:
        """Call the user callback with k-diffusion's keys (``x``, ``i``, ``sigma``, ``sigma_hat``, ``denoised``)."""
        if self._callback is not None:
            self._callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


class Sampler(Contract):
    """Contract and base class of the ``sampler`` family: ``sampler(denoiser, x, sigmas) -> x0``.

    Subclasses set ``Spec``, implement :meth:`solve` over Python-float sigmas and override
    :attr:`stochastic` when they draw noise.
    """

    Spec: type[SamplerSpec] = SamplerSpec

    def __init__(self, spec: SamplerSpec, **context: Any) -> None:
        self.spec = spec

    @property
    def stochastic(self) -> bool:
        """Whether this configuration draws noise during sampling."""
        return False

    def __call__(
        self,
        denoiser: DenoiserFn,
        x: Tensor,
        sigmas: Tensor | Sequence[float],
        *,
        noise: NoiseFn | None = None,
        callback: Callback | None = None,
        disable_progress: bool = True,
        extra_args: dict[str, Any] | None = None,
    ) -> Tensor:
        """Integrate from ``sigmas[0]`` down to ``sigmas[-1]``.

        Args:
            denoiser: ``D(x, sigma, **extra_args) -> (B, C, H, W)`` denoised estimate, ``sigma (B,)``.
            x: ``(B, C, H, W)`` start, already at noise level ``sigmas[0]`` (e.g.
                ``initial_noise(seeds, shape) * sigmas[0]``).
            sigmas: ``(n_steps + 1,)`` strictly decreasing, positive except an optional final 0.
            noise: noise source for stochastic samplers, ``noise(x) -> (B, C, H, W)`` standard
                normal (a :class:`~hourglass.diffusion.noise.NoiseSampler` for batch-size-invariant
                seeds); default ``torch.randn_like``.
            callback: called after each denoiser evaluation of a step with a dict
                ``{x, i, sigma, sigma_hat, denoised}``.
            disable_progress: hide the progress bar (default).
            extra_args: keyword arguments for every denoiser call (``class_cond``, ...).

        Returns:
            ``(B, C, H, W)`` at noise level ``sigmas[-1]`` (the sample when it is 0).
        """
        check_image(x)
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable D(x, sigma, **cond), got {type(denoiser).__name__}")
        if extra_args is not None and not isinstance(extra_args, dict):
            raise TypeError(f"extra_args must be a dict of denoiser keyword arguments, got {type(extra_args).__name__}")
        if noise is not None and not callable(noise):
            raise TypeError(f"noise must be callable noise(x) -> tensor (e.g. NoiseSampler(seeds)), got {noise!r}")
        values = schedule_floats(sigmas)
        run = SamplerRun(
            denoiser, x, dict(extra_args or {}), noise if noise is not None else torch.randn_like,
            callback, len(values) - 1, disable_progress,
        )
        with torch.no_grad(), trusted_sigmas():
            return self.solve(run, x, values)

    def solve(self, run: SamplerRun, x: Tensor, sigmas: list[float]) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.spec.model_dump().items() if k != "type")
        return f"{type(self).__name__}({fields})"


SAMPLER.set_contract(Sampler)
