"""Samplers on a Gaussian toy whose exact denoiser and ODE solution are known.

Data ~ N(mu, s0^2) per pixel. Then D(x; sigma) = (s0^2 x + sigma^2 mu) / (s0^2 + sigma^2) exactly, and
the probability-flow ODE from x_T at sigma_T ends at x(0) = mu + (x_T - mu) s0 / sqrt(s0^2 + sigma_T^2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hourglass.diffusion import NoiseSampler, initial_noise, sample
from hourglass.diffusion.noise import derive_seed
from hourglass.diffusion.samplers import get_ancestral_step, lms_coefficients
from hourglass.registry import SAMPLER, SCHEDULE

MU, S0 = 0.3, 0.4


class GaussianToy:
    """The exact denoiser of N(MU, S0^2) data; counts calls and checks the sigma it receives."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x, sigma, **cond):
        assert sigma.shape == (x.shape[0],) and sigma.device == x.device
        self.calls += 1
        s = sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return (S0**2 * x + s**2 * MU) / (S0**2 + s**2)


def exact_ode_solution(x_t, sigma_t):
    return MU + (x_t - MU) * S0 / math.sqrt(S0**2 + sigma_t**2)


# (name, options, lowest accepted slope, highest accepted slope) of log error vs log steps
ODE_ORDERS = [
    ("euler", {}, 0.8, 1.3),
    ("heun", {}, 1.7, 2.8),
    ("dpm_2", {}, 1.7, 2.8),
    ("dpmpp_2m", {}, 1.7, 2.8),
    ("dpmpp_2m_sde", {"eta": 0.0}, 1.7, 2.8),
    ("dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}, 1.7, 2.8),
    # k-diffusion's 3M correction is half the Taylor-exact one, so it converges at 2nd order
    # (see samplers_dpmpp.py); its exact coefficients are pinned by test_dpmpp_3m_matches_k_diffusion_formula
    ("dpmpp_3m_sde", {"eta": 0.0}, 1.7, 3.2),
    ("lms", {}, 2.6, 5.0),
    ("lms", {"order": 1}, 0.8, 1.3),
]


@pytest.mark.parametrize("name,options,lo,hi", ODE_ORDERS, ids=lambda v: str(v))
def test_ode_samplers_converge_at_their_order(name, options, lo, hi):
    steps = [16, 32, 64]
    # sigma_min small enough that the final denoising step (error ~ sigma_min^2) does not matter
    schedule = SCHEDULE.build({"type": "exponential", "sigma_min": 1e-4, "sigma_max": 10.0})
    x_t = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 10.0
    errors = []
    for n in steps:
        sigmas = schedule(n, dtype=torch.float64)
        out = sample(name, GaussianToy(), x_t, sigmas, **options)
        errors.append((out - exact_ode_solution(x_t, float(sigmas[0]))).pow(2).mean().sqrt().item())
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert lo <= slope <= hi, f"{name} {options}: errors {errors}, slope {slope:.2f} not in [{lo}, {hi}]"
    assert errors[-1] < 0.05


def _toy_scalar(x: float, sigma: float) -> float:
    return (S0**2 * x + sigma**2 * MU) / (S0**2 + sigma**2)


def test_dpmpp_3m_matches_k_diffusion_formula():
    """Four steps of DPM-Solver++(3M) (eta = 0) written out with scalars, as in k-diffusion."""
    sigmas = [8.0, 3.0, 1.2, 0.5, 0.2]
    x = 5.0
    hs, ds = [], []
    for sigma, sigma_next in zip(sigmas, sigmas[1:], strict=False):
        d = _toy_scalar(x, sigma)
        h = math.log(sigma / sigma_next)
        x = math.exp(-h) * x - math.expm1(-h) * d
        phi_2 = math.expm1(-h) / h + 1
        if len(ds) >= 2:
            r0, r1 = hs[-1] / h, hs[-2] / h
            d1_0, d1_1 = (d - ds[-1]) / r0, (ds[-1] - ds[-2]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x += phi_2 * d1 - (phi_2 / h - 0.5) * d2
        elif ds:
            x += phi_2 * (d - ds[-1]) / (hs[-1] / h)
        hs.append(h)
        ds.append(d)
    out = sample("dpmpp_3m_sde", GaussianToy(), torch.full((1, 1, 1, 1), 5.0, dtype=torch.float64),
                 torch.tensor(sigmas, dtype=torch.float64), eta=0.0)
    assert out.item() == pytest.approx(x, rel=1e-12)


def test_ancestral_step_splits_the_variance():
    for sigma, sigma_next, eta in [(10.0, 5.0, 1.0), (2.0, 1.9, 1.0), (3.0, 1.0, 0.5), (1.0, 0.5, 0.0)]:
        down, up = get_ancestral_step(sigma, sigma_next, eta)
        assert down**2 + up**2 == pytest.approx(sigma_next**2)
        assert up == pytest.approx(eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    assert get_ancestral_step(1.0, 0.0) == (0.0, 0.0)


# stochastic samplers and the steps they need for a small discretisation bias
SDE_SAMPLERS = [
    ("euler_ancestral", {}, 400),
    ("euler", {"s_churn": 10.0}, 400),
    ("heun", {"s_churn": 40.0}, 50),
    ("dpm_2", {"s_churn": 40.0}, 50),
    ("dpmpp_2m_sde", {}, 50),
    ("dpmpp_2m_sde", {"solver_type": "heun"}, 50),
    ("dpmpp_3m_sde", {}, 50),
]


@pytest.mark.parametrize("name,options,n_steps", SDE_SAMPLERS, ids=lambda v: str(v))
def test_stochastic_samplers_reproduce_the_data_moments(name, options, n_steps):
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 20.0})(n_steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(250, 1, 4, 4, generator=g) * float(sigmas[0])  # 4000 i.i.d. pixels
    out = sample(name, GaussianToy(), x, sigmas, **options)
    assert out.mean().item() == pytest.approx(MU, abs=0.03)
    assert out.std().item() == pytest.approx(S0, abs=0.02)


STOCHASTIC = [
    ("euler", {"s_churn": 5.0}),
    ("heun", {"s_churn": 5.0}),
    ("dpm_2", {"s_churn": 5.0}),
    ("euler_ancestral", {}),
    ("dpmpp_2m_sde", {}),
    ("dpmpp_3m_sde", {}),
]


@pytest.mark.parametrize("name,options", STOCHASTIC, ids=lambda v: str(v))
def test_same_seed_same_sample_for_any_batch_size(name, options):
    sigmas = SCHEDULE.build("karras")(8)
    seeds = [11, 22, 33, 44]
    x = initial_noise(seeds, (1, 4, 4)) * sigmas[0]
    assert SAMPLER.build({"type": name, **options}).stochastic
    batch = sample(name, GaussianToy(), x, sigmas, noise=NoiseSampler(seeds), **options)
    for i, seed in enumerate(seeds):
        xi = initial_noise([seed], (1, 4, 4)) * sigmas[0]
        single = sample(name, GaussianToy(), xi, sigmas, noise=NoiseSampler([seed]), **options)
        torch.testing.assert_close(batch[i:i + 1], single, rtol=0, atol=1e-6)
    # the noise matters: another seed for the sampler noise gives another image
    other = sample(name, GaussianToy(), x, sigmas, noise=NoiseSampler([1, 2, 3, 4]), **options)
    assert (other - batch).abs().max().item() > 1e-3


def test_initial_noise_is_per_seed_and_streams_differ():
    noise = initial_noise([5, 6], (2, 3, 3))
    assert noise.shape == (2, 2, 3, 3)
    torch.testing.assert_close(noise[0], torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(5)))
    step_noise = NoiseSampler([5, 6])(torch.empty(2, 2, 3, 3))
    assert not torch.allclose(step_noise, noise)
    assert derive_seed(5, 1) != derive_seed(5, 2) and 0 <= derive_seed(2**63 - 1, 1) < 2**63
    with pytest.raises(ValueError, match="one seed per sample"):
        NoiseSampler([1, 2])(torch.empty(3, 1))
    with pytest.raises(ValueError, match=r"seeds\[1\]"):
        initial_noise([1, -2], (1,))
    with pytest.raises(TypeError, match="list of ints"):
        NoiseSampler(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SAMPLER.names())
def test_every_sampler_runs_with_callback_and_extra_args(name):
    sigmas = SCHEDULE.build("karras")(6)
    seen, cond_seen = [], []

    def denoiser(x, sigma, class_cond=None):
        cond_seen.append(class_cond)
        return GaussianToy()(x, sigma)

    x = torch.randn(2, 3, 4, 4) * sigmas[0]
    out = SAMPLER.build(name)(
        denoiser, x, sigmas, callback=seen.append, extra_args={"class_cond": torch.tensor([1, 2])},
        noise=NoiseSampler([0, 1]),
    )
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    assert [info["i"] for info in seen] == list(range(6))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    assert isinstance(seen[0]["sigma"], float) and seen[0]["sigma"] == pytest.approx(float(sigmas[0]))
    assert all(c is not None for c in cond_seen)
    assert abs(out.mean().item() - MU) < 0.5  # it went somewhere near the data


def test_deterministic_samplers_ignore_the_noise_source():
    sigmas = SCHEDULE.build("karras")(5)
    x = torch.randn(2, 1, 3, 3) * sigmas[0]
    calls = []

    def noise(like):
        calls.append(1)
        return torch.randn_like(like)

    for name in ("euler", "heun", "dpm_2", "lms", "dpmpp_2m"):
        sample(name, GaussianToy(), x, sigmas, noise=noise)
    sample("dpmpp_3m_sde", GaussianToy(), x, sigmas, noise=noise, eta=0.0)
    assert not calls


def test_heun_uses_two_evaluations_except_the_last_step():
    toy = GaussianToy()
    sample("heun", toy, torch.randn(1, 1, 2, 2) * 80, SCHEDULE.build("karras")(10))
    assert toy.calls == 2 * 10 - 1


def test_churn_is_bounded_and_limited_to_the_window():
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 10.0})(10)
    seen = []
    sample("heun", GaussianToy(), torch.randn(1, 1, 2, 2) * 10, sigmas, callback=seen.append,
           s_churn=100.0, s_tmin=0.1, s_tmax=5.0)
    for info in seen:
        inside = 0.1 <= info["sigma"] <= 5.0
        ratio = info["sigma_hat"] / info["sigma"]
        assert ratio == pytest.approx(math.sqrt(2) if inside else 1.0)


def test_euler_with_churn_evaluates_the_model_at_sigma_hat():
    """Karras et al. 2022 Algorithm 2 with Euler steps: with churn, D is called at sigma_hat, not at sigma."""
    n, s_churn, s_tmin, s_tmax, s_noise = 6, 1.2, 0.05, 5.0, 1.1
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 10.0})(n).tolist()
    eps = [torch.randn(2, 1, 2, 2, dtype=torch.float64) for _ in range(n)]
    x0 = torch.randn(2, 1, 2, 2, dtype=torch.float64) * sigmas[0]
    called, drawn = [], iter(eps)

    def denoiser(x, sigma):
        called.append(sigma[0].item())
        return GaussianToy()(x, sigma)

    out = sample("euler", denoiser, x0, sigmas, noise=lambda like: next(drawn),
                 s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
    # Algorithm 2: gamma_i = min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax], else 0
    x, expected, noise = x0.clone(), [], iter(eps)
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma + gamma * sigma
        if gamma > 0:
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * next(noise)
        expected.append(sigma_hat)
        d = (x - GaussianToy()(x, torch.full((2,), sigma_hat, dtype=torch.float64))) / sigma_hat
        x = x + (sigma_next - sigma_hat) * d
    assert 0 < sum(expected[i] != sigmas[i] for i in range(n)) < n  # some steps churn, some do not
    assert called == pytest.approx(expected, rel=1e-12)
    torch.testing.assert_close(out, x, rtol=1e-10, atol=1e-10)


def test_lms_coefficients_integrate_polynomials_exactly():
    sigmas = [10.0, 6.0, 3.5, 2.0, 1.1, 0.5, 0.0]
    coeffs = lms_coefficients(sigmas, 4)
    # d(s) = s^3 is integrated exactly once 4 past values are available
    for i in range(3, len(sigmas) - 1):
        approx = sum(c * sigmas[i - j] ** 3 for j, c in enumerate(coeffs[i]))
        exact = (sigmas[i + 1] ** 4 - sigmas[i] ** 4) / 4
        assert approx == pytest.approx(exact, rel=1e-12)
    assert coeffs[0] == [pytest.approx(sigmas[1] - sigmas[0])]


def test_sample_refuses_unknown_options_and_bad_schedules():
    sigmas = SCHEDULE.build("karras")(4)
    x = torch.randn(1, 1, 2, 2)
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'etaa'.*eta, s_noise.*extra_args"):
        sample("dpmpp_3m_sde", GaussianToy(), x, sigmas, etaa=1.0)
    with pytest.raises(ValueError):
        sample("dpmpp_3m_sde", GaussianToy(), x, sigmas, eta=-1.0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample("euler", GaussianToy(), x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="only as its last entry"):
        sample("euler", GaussianToy(), x, torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="at least 2"):
        sample("euler", GaussianToy(), x, torch.tensor([1.0]))
    with pytest.raises(Exception, match="unknown sampler 'eulr'.*Did you mean 'euler'"):
        sample("eulr", GaussianToy(), x, sigmas)


def test_sampling_to_a_nonzero_sigma_stops_there():
    sigmas = torch.tensor([10.0, 5.0, 2.0], dtype=torch.float64)
    x_t = torch.randn(4, 1, 2, 2, dtype=torch.float64) * 10
    out = sample("heun", GaussianToy(), x_t, sigmas)
    exact = MU + (x_t - MU) * math.sqrt(S0**2 + 4.0) / math.sqrt(S0**2 + 100.0)
    torch.testing.assert_close(out, exact, atol=0.01, rtol=0.03)
