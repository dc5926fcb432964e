"""Samplers of the probability-flow ODE / reverse SDE in the Karras et al. (2022) parametrisation.

``dx/dsigma = (x - D(x; sigma)) / sigma``. Every sampler is a registered class built from its
spec and called as ``sampler(denoiser, x, sigmas, *, noise=None, callback=None,
disable_progress=True, extra_args=None) -> x0`` (see :class:`Sampler`). The algorithms follow
k-diffusion's ``sampling.py`` (Crowson); the DPM-Solver++ family lives in
:mod:`hourglass.diffusion.samplers_dpmpp` and is re-exported here.

| name | kind | order | options |
|---|---|---|---|
| ``euler`` | ODE (SDE with churn) | 1 | ``s_churn, s_tmin, s_tmax, s_noise`` |
| ``euler_ancestral`` | ancestral SDE | 1 | ``eta, s_noise`` |
| ``heun`` | EDM Algorithm 2 | 2 | ``s_churn, s_tmin, s_tmax, s_noise`` |
| ``dpm_2`` | DPM-Solver-2 style midpoint | 2 | ``s_churn, s_tmin, s_tmax, s_noise`` |
| ``lms`` | linear multistep (Adams-Bashforth in sigma) | ``order`` | ``order`` |
| ``dpmpp_2m`` | DPM-Solver++(2M) | 2 | -- |
| ``dpmpp_2m_sde`` | DPM-Solver++(2M) SDE | 2 (ODE at eta 0) | ``eta, s_noise, solver_type`` |
| ``dpmpp_3m_sde`` | DPM-Solver++(3M) SDE (the paper's) | 2 measured (see its note) | ``eta, s_noise`` |
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
from pydantic import Field
from torch import Tensor

from hourglass.diffusion._sampler_base import Sampler, SamplerRun, SamplerSpec
from hourglass.diffusion.samplers_dpmpp import (
    DPMPP2MSampler,
    DPMPP2MSamplerSpec,
    DPMPP2MSDESampler,
    DPMPP2MSDESamplerSpec,
    DPMPP3MSDESampler,
    DPMPP3MSDESamplerSpec,
)
from hourglass.registry import SAMPLER

__all__ = [
    "Sampler", "SamplerSpec",
    "EulerSampler", "EulerSamplerSpec",
    "EulerAncestralSampler", "EulerAncestralSamplerSpec",
    "HeunSampler", "HeunSamplerSpec",
    "DPM2Sampler", "DPM2SamplerSpec",
    "LMSSampler", "LMSSamplerSpec",
    "DPMPP2MSampler", "DPMPP2MSamplerSpec",
    "DPMPP2MSDESampler", "DPMPP2MSDESamplerSpec",
    "DPMPP3MSDESampler", "DPMPP3MSDESamplerSpec",
    "get_ancestral_step", "lms_coefficients",
]


def get_ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split an ancestral step ``sigma -> sigma_next`` into a deterministic part and fresh noise.

    Returns:
        ``(sigma_down, sigma_up)``: step the ODE to ``sigma_down``, then add noise of std
        ``sigma_up``, with ``sigma_down^2 + sigma_up^2 = sigma_next^2``; ``eta = 0`` is the ODE step.
    """
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
    return sigma_down, sigma_up


# -- stochastic churn (EDM Algorithm 2) -----------------------------------------------------------
class _ChurnSpec(SamplerSpec):
    s_churn: float = Field(0.0, ge=0, description="total churn; 0 = deterministic ODE sampler")
    s_tmin: float = Field(0.0, ge=0, description="churn only where sigma >= s_tmin")
    s_tmax: float | None = Field(None, gt=0, description="churn only where sigma <= s_tmax (None = no bound)")
    s_noise: float = Field(1.0, ge=0, description="scale of the churn noise (EDM S_noise)")


class _ChurnSampler(Sampler):
    """Samplers that may raise sigma to ``sigma_hat = sigma (1 + gamma)`` before each step."""

    spec: _ChurnSpec

    @property
    def stochastic(self) -> bool:
        return self.spec.s_churn > 0 and self.spec.s_noise > 0

    def _churn(self, run: SamplerRun, x: Tensor, sigma: float) -> tuple[Tensor, float]:
        spec = self.spec
        s_tmax = math.inf if spec.s_tmax is None else spec.s_tmax
        if spec.s_churn <= 0 or not spec.s_tmin <= sigma <= s_tmax:
            return x, sigma
        gamma = min(spec.s_churn / run.n_steps, math.sqrt(2) - 1)
        sigma_hat = sigma * (1 + gamma)
        x = x + run.noise(x) * (spec.s_noise * math.sqrt(sigma_hat**2 - sigma**2))
        return x, sigma_hat


class EulerSamplerSpec(_ChurnSpec):
    type: Literal["euler"] = "euler"


@SAMPLER.register("euler")
class EulerSampler(_ChurnSampler):
    """Euler steps of the probability-flow ODE (Karras et al. 2022 Algorithm 2 with Euler steps)."""

    Spec = EulerSamplerSpec

    def solve(self, run: SamplerRun, x: Tensor, sigmas: list[float]) -> Tensor:
        for i in run.steps():
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            x, sigma_hat = self._churn(run, x, sigma)
            denoised = run.model(x, sigma_hat)
            run.report(x, i, sigma, sigma_hat, denoised)
            d = (x - denoised) / sigma_hat
            x = x + d * (sigma_next - sigma_hat)
        return x


class HeunSamplerSpec(_ChurnSpec):
    type: Literal["heun"] = "heun"


@SAMPLER.register("heun")
class HeunSampler(_ChurnSampler):
    """Heun's 2nd-order method, EDM Algorithm 2 (Karras et al. 2022), with optional churn.

    The last step (to sigma = 0) is an Euler step, as in the paper.
    """

    Spec = HeunSamplerSpec

    def solve(self, run: SamplerRun, x: Tensor, sigmas: list[float]) -> Tensor:
        for i in run.steps():
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            x, sigma_hat = self._churn(run, x, sigma)
            denoised = run.model(x, sigma_hat)
            run.report(x, i, sigma, sigma_hat, denoised)
            d = (x - denoised) / sigma_hat
            dt = sigma_next - sigma_hat
            if sigma_next == 0:
                x = x + d * dt
            else:
                x_2 = x + d * dt
                d_2 = (x_2 - run.model(x_2, sigma_next)) / sigma_next
                x = x + (d + d_2) * (dt / 2)
        return x


class DPM2SamplerSpec(_ChurnSpec):
    type: Literal["dpm_2"] = "dpm_2"


@SAMPLER.register("dpm_2")
class DPM2Sampler(_ChurnSampler):
    """DPM-Solver-2-style midpoint steps: the midpoint is the geometric mean of the two sigmas.

    (k-diffusion's ``sample_dpm_2``; the last step, to sigma = 0, is an Euler step.)
    """

    Spec = DPM2SamplerSpec

    def solve(self, run: SamplerRun, x: Tensor, sigmas: list[float]) -> Tensor:
        for i in run.steps():
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            x, sigma_hat = self._churn(run, x, sigma)
            denoised = run.model(x, sigma_hat)
            run.report(x, i, sigma, sigma_hat, denoised)
            d = (x - denoised) / sigma_hat
            if sigma_next == 0:
                x = x + d * (sigma_next - sigma_hat)
            else:
                sigma_mid = math.sqrt(sigma_hat * sigma_next)
                x_2 = x + d * (sigma_mid - sigma_hat)
                d_2 = (x_2 - run.model(x_2, sigma_mid)) / sigma_mid
                x = x + d_2 * (sigma_next - sigma_hat)
        return x


# -- ancestral ------------------------------------------------------------------------------------
class EulerAncestralSamplerSpec(SamplerSpec):
    type: Literal["euler_ancestral"] = "euler_ancestral"
    eta: float = Field(1.0, ge=0, description="ancestral noise amount; 0 = Euler ODE steps")
    s_noise: float = Field(1.0, ge=0, description="scale of the added noise")


@SAMPLER.register("euler_ancestral")
class EulerAncestralSampler(Sampler):
    """Ancestral sampling with Euler steps: step to ``sigma_down``, add noise of std ``sigma_up``."""

    Spec = EulerAncestralSamplerSpec

    @property
    def stochastic(self) -> bool:
        return self.spec.eta > 0 and self.spec.s_noise > 0

    def solve(self, run: SamplerRun, x: Tensor, sigmas: list[float]) -> Tensor:
        for i in run.steps():
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            denoised = run.model(x, sigma)
            run.report(x, i, sigma, sigma, denoised)
            sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, self.spec.eta)
            d = (x - denoised) / sigma
            x = x + d * (sigma_down - sigma)
            if sigma_next > 0 and sigma_up > 0:
                x = x + run.noise(x) * (self.spec.s_noise * sigma_up)
        return x


# -- linear multistep -----------------------------------------------------------------------------
@functools.cache
def _gauss_legendre(order: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights of ``order``-point Gauss-Legendre quadrature on [-1, 1] (cached: numpy's
    ``leggauss`` costs tens of microseconds, more than a small model's whole sampler step)."""
    nodes, weights = np.polynomial.legendre.leggauss(order)
    return tuple(float(v) for v in nodes), tuple(float(v) for v in weights)


def _lms_coefficient(order: int, t: list[float], i: int, j: int) -> float:
    """``integral_{t_i}^{t_{i+1}} l_j(tau) dtau`` for the Lagrange basis on ``t_i, ..., t_{i-order+1}``.

    The integrand is a polynomial of degree ``order - 1``, so Gauss-Legendre quadrature with
    ``order`` nodes is exact.
    """
    nodes, weights = _gauss_legendre(order)
    a, b = t[i], t[i + 1]
    half = 0.5 * (b - a)
    total = 0.0
    for node, weight in zip(nodes, weights, strict=True):
        tau = half * node + 0.5 * (a + b)
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        total += weight * prod
    return float(total * half)


def lms_coefficients(sigmas: list[float], order: int) -> list[list[float]]:
    """Adams-Bashforth weights for every step of ``sigmas`` (first steps use lower orders).

    Returns:
        ``coeffs[i][j]``: the weight of the derivative from step ``i - j`` in step ``i``.
    """
    out = []
    for i in range(len(sigmas) - 1):
        cur = min(i + 1, order)
        out.append([_lms_coefficient(cur, sigmas, i, j) for j in range(cur)])
    return out


class LMSSamplerSpec(SamplerSpec):
    type: Literal["lms"] = "lms"
    order: int = Field(4, ge=1, le=6, description="multistep order (derivatives remembered)")


@SAMPLER.register("lms")
class LMSSampler(Sampler):
    """Linear multistep (variable-step Adams-Bashforth) on ``dx/dsigma`` (k-diffusion ``sample_lms``).

    Weights integrate the Lagrange interpolant of the last ``order`` derivatives exactly
    (Gauss-Legendre), computed once per call as Python floats.
    """

    Spec = LMSSamplerSpec

    def solve(self, run: SamplerRun, x: Tensor, sigmas: list[float]) -> Tensor:
        coeffs = lms_coefficients(sigmas, self.spec.order)
        ds: list[Tensor] = []
        for i in run.steps():
            sigma = sigmas[i]
            denoised = run.model(x, sigma)
            run.report(x, i, sigma, sigma, denoised)
            ds.append((x - denoised) / sigma)
            if len(ds) > self.spec.order:
                ds.pop(0)
            for c, d in zip(coeffs[i], reversed(ds), strict=True):
                x = x + c * d
        return x
