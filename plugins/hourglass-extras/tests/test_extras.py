"""Tests of hourglass-extras: the squared-ReLU FFN and DPM-Solver++(2S) ancestral on a Gaussian toy
whose exact denoiser and probability-flow ODE solution are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from hourglass.diffusion import sample
from hourglass.plugin import FFN, SAMPLER, SCHEDULE, NoiseSampler, check_component

if "relu2" not in FFN or "dpmpp_2s_ancestral" not in SAMPLER:
    pytest.skip("hourglass-extras is not installed: pip install -e plugins/hourglass-extras", allow_module_level=True)

RECIPE = Path(__file__).resolve().parents[1] / "recipe.toml"
MU, S0 = 0.3, 0.4  # data ~ N(MU, S0^2) per pixel
NAME = "dpmpp_2s_ancestral"


class GaussianToy:
    """Exact denoiser of N(MU, S0^2) data, ``D(x; sigma) = (S0^2 x + sigma^2 MU) / (S0^2 + sigma^2)``."""

    def __init__(self):
        self.sigmas = []

    def __call__(self, x, sigma, **cond):
        self.sigmas.append(float(sigma[0]))
        s = sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return (S0**2 * x + s**2 * MU) / (S0**2 + s**2)


def exact_ode_solution(x_t, sigma_t, sigma_end=0.0):
    """The probability-flow ODE maps x at sigma_t to MU + (x - MU) sqrt(S0^2 + sigma_end^2) / sqrt(S0^2 + sigma_t^2)."""
    return MU + (x_t - MU) * math.sqrt(S0**2 + sigma_end**2) / math.sqrt(S0**2 + sigma_t**2)


def test_registered_by_this_distribution():
    assert FFN.provider("relu2") == "hourglass-extras"
    assert SAMPLER.provider(NAME) == "hourglass-extras"


# -- relu2 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"bias": True, "zero_init": False}])
def test_relu2_passes_hourglass_component_checks(options):
    assert check_component("ffn", "relu2", options=options, width=64) == [
        "spec", "forward", "gradients", "state_dict", "meta"
    ]


def test_relu2_computes_down_of_squared_relu_of_up():
    ffn = FFN.build({"type": "relu2", "bias": True, "zero_init": False}, width=6, d_ff=10)
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    ffn = ffn.double()
    hidden = x @ ffn.up_proj.weight.T + ffn.up_proj.bias
    expected = torch.where(hidden > 0, hidden * hidden, torch.zeros_like(hidden)) @ ffn.down_proj.weight.T
    torch.testing.assert_close(ffn(x), expected + ffn.down_proj.bias)
    # positive homogeneity of degree 2 of the hidden activation (no biases): f(2x) = 4 f(x)
    plain = FFN.build({"type": "relu2", "zero_init": False}, width=6, d_ff=10).double()
    torch.testing.assert_close(plain(2 * x), 4 * plain(x))


def test_relu2_zero_init_starts_as_an_empty_branch_and_dropout_acts_in_training():
    x = torch.randn(2, 5, 8)
    assert not FFN.build("relu2", width=8, d_ff=16)(x).any()
    ffn = FFN.build({"type": "relu2", "zero_init": False}, width=8, d_ff=16, dropout=0.5)
    ffn.train()
    assert not torch.equal(ffn(x), ffn(x))
    ffn.eval()
    assert torch.equal(ffn(x), ffn(x))


# -- dpmpp_2s_ancestral ---------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"eta": 0.0}, {"r": 1.0}])
def test_sampler_passes_hourglass_component_checks(options):
    assert check_component("sampler", NAME, options=options) == ["spec", "sampler"]


@pytest.mark.parametrize("r", [0.5, 1.0, 0.3])
def test_ode_variant_converges_at_second_order(r):
    steps = [8, 16, 32]
    # sigma_min small enough that the final Euler step into sigma = 0 (error ~ sigma_min^2) does not matter
    schedule = SCHEDULE.build({"type": "exponential", "sigma_min": 1e-4, "sigma_max": 10.0})
    x_t = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 10.0
    errors = []
    for n in steps:
        sigmas = schedule(n, dtype=torch.float64)
        out = sample(NAME, GaussianToy(), x_t, sigmas, eta=0.0, r=r)
        errors.append((out - exact_ode_solution(x_t, float(sigmas[0]))).pow(2).mean().sqrt().item())
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 1.7 <= slope <= 2.8, f"r={r}: errors {errors}, slope {slope:.2f}"
    assert errors[-1] < 1e-2  # starting values have std 10


def test_one_step_matches_the_dpm_solver_pp_2s_formula_written_out():
    """Two ODE steps with scalars, from the formula of Lu et al. (2022), Algorithm 1, alpha = 1."""
    sigmas, r, x = [6.0, 2.0, 0.7], 0.3, 4.0

    def d(x, s):
        return (S0**2 * x + s**2 * MU) / (S0**2 + s**2)

    for sigma, sigma_next in zip(sigmas, sigmas[1:], strict=False):
        h = math.log(sigma / sigma_next)
        sigma_s = sigma * math.exp(-r * h)
        u = sigma_s / sigma * x - math.expm1(-r * h) * d(x, sigma)
        d_r = (1 - 1 / (2 * r)) * d(x, sigma) + 1 / (2 * r) * d(u, sigma_s)
        x = sigma_next / sigma * x - math.expm1(-h) * d_r
    toy = GaussianToy()
    out = sample(NAME, toy, torch.full((1, 1, 1, 1), 4.0, dtype=torch.float64),
                 torch.tensor(sigmas, dtype=torch.float64), eta=0.0, r=r)
    assert out.item() == pytest.approx(x, rel=1e-12)
    # the intermediate evaluations sit at sigma * exp(-r h)
    assert toy.sigmas[1] == pytest.approx(6.0 * (2.0 / 6.0) ** r)


def test_stopping_at_a_nonzero_sigma_follows_the_ode():
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0], dtype=torch.float64)
    x_t = torch.randn(4, 1, 2, 2, dtype=torch.float64) * 10
    out = sample(NAME, GaussianToy(), x_t, sigmas, eta=0.0)
    torch.testing.assert_close(out, exact_ode_solution(x_t, 10.0, 1.0), atol=5e-3, rtol=5e-3)


def test_ancestral_sampling_reproduces_the_data_moments():
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 20.0})(40)
    x = torch.randn(250, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])
    out = sample(NAME, GaussianToy(), x, sigmas, noise=NoiseSampler(list(range(250))))
    assert out.mean().item() == pytest.approx(MU, abs=0.03)
    assert out.std().item() == pytest.approx(S0, abs=0.02)


def test_two_evaluations_per_step_except_the_last_and_noise_only_when_stochastic():
    sigmas = SCHEDULE.build("karras")(10)
    toy, drawn = GaussianToy(), []

    def noise(like):
        drawn.append(1)
        return torch.randn_like(like)

    sample(NAME, toy, torch.randn(1, 1, 2, 2) * 80, sigmas, eta=0.0, noise=noise)
    assert len(toy.sigmas) == 2 * 10 - 1 and not drawn
    assert not SAMPLER.build({"type": NAME, "eta": 0.0}).stochastic
    assert not SAMPLER.build({"type": NAME, "s_noise": 0.0}).stochastic
    sample(NAME, GaussianToy(), torch.randn(1, 1, 2, 2) * 80, sigmas, noise=noise)
    assert len(drawn) == 9  # every step but the last (into sigma = 0) adds noise


def test_same_seed_same_sample_for_any_batch_size():
    from hourglass.diffusion import initial_noise

    sigmas = SCHEDULE.build("karras")(8)
    seeds = [11, 22, 33]
    x = initial_noise(seeds, (1, 4, 4)) * sigmas[0]
    batch = sample(NAME, GaussianToy(), x, sigmas, noise=NoiseSampler(seeds))
    for i, seed in enumerate(seeds):
        single = sample(NAME, GaussianToy(), x[i:i + 1], sigmas, noise=NoiseSampler([seed]))
        torch.testing.assert_close(batch[i:i + 1], single, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad,match", [({"r": 0.0}, "greater than 0"), ({"r": 1.5}, "less than or equal to 1"),
                                       ({"eta": -1.0}, "greater than or equal to 0"), ({"order": 2}, "Extra inputs")])
def test_bad_sampler_options_are_refused(bad, match):
    with pytest.raises(ValidationError, match=match):
        SAMPLER.validate({"type": NAME, **bad})


# -- the example recipe ---------------------------------------------------------------------------
def test_example_recipe_builds_and_samples_with_the_plugin_components():
    from hourglass.recipe import build_model, load_recipe

    recipe = load_recipe(RECIPE)
    assert recipe.model.ffn.type == "relu2" and recipe.sample.sampler.type == NAME
    model = build_model(recipe, device="cpu").eval()
    ffns = [m for m in model.modules() if getattr(getattr(m, "spec", None), "type", None) == "relu2"]
    assert len(ffns) == 2 * 2 + 2  # encoder + decoder layers of level 0, middle layers of level 1
    denoiser = lambda x, sigma, **cond: model(x, sigma, class_cond=torch.tensor([6]))  # noqa: E731
    sigmas = SCHEDULE.build(recipe.sample.schedule)(3)
    out = SAMPLER.build(recipe.sample.sampler)(denoiser, torch.randn(1, 3, 32, 32) * sigmas[0], sigmas)
    assert out.shape == (1, 3, 32, 32) and bool(torch.isfinite(out).all())
