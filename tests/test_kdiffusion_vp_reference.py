"""hourglass's ``ddpm`` denoiser and samplers against the real k-diffusion's discrete-time VP wrappers and samplers.

``tests/data/k_diffusion/kdiff_vp_reference.safetensors`` was written by ``make_vp_reference.py`` (next to it)
with k-diffusion 0.1.1.post1 itself: ``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser`` (their
``DiscreteSchedule.sigma_to_t`` / ``t_to_sigma``), ``sample_euler``, ``sample_dpmpp_2m`` and
``get_sigmas_karras``, around a tiny official-format DiT (the plain-torch ``RefDiT`` of
``test_interop_dit_uvit.py``) whose float32 state dict the file holds. Here that state dict goes through
hourglass's converter (``hourglass.interop.dit.from_dit``), into ``DENOISER.build({"type": "ddpm", ...})``
and hourglass's own ``karras`` schedule and ``euler`` / ``dpmpp_2m`` samplers; everything runs in float64.

Tolerances (float64 throughout; the two sides differ only in the order of floating-point operations, and
the errors measured with torch 2.x on CPU are 100-1000 times below these):

* ``alphas_cumprod``, ``sigma_min``/``sigma_max``, ``t_to_sigma``, ``get_sigmas``, the Karras sigmas: relative ``1e-13``
  (measured <= 9e-16);
* ``sigma_to_t``: absolute ``1e-10`` in ``t`` (``t`` in ``[0, 999]``; measured <= 1.2e-13); quantized: equal;
* denoised outputs: ``1e-12 * max(1, max |expected|)`` (measured <= 4e-16 of it);
* final samples of 12 steps: ``1e-11 * max(1, max |expected|)`` (the random DiT's eps samples reach ~670;
  measured <= 2e-15 of it).

The file must exist: these tests fail, never skip, without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hourglass.diffusion import CFGDenoiser, sample
from hourglass.diffusion.ddpm import alphas_cumprod, beta_schedule
from hourglass.interop.dit import from_dit
from hourglass.registry import DENOISER, SCHEDULE

DATA = Path(__file__).resolve().parent / "data" / "k_diffusion" / "kdiff_vp_reference.safetensors"
SCHEDULES = ("linear", "scaled_linear")
PREDICTIONS = ("eps", "v")
CASES = [(s, p, q) for s in SCHEDULES for p in PREDICTIONS for q in (False, True)]
CASE_IDS = [f"{s}-{p}-q{int(q)}" for s, p, q in CASES]

REL_TABLE = 1e-13  # alphas_cumprod, sigma range, t_to_sigma, get_sigmas, Karras sigmas (relative)
ABS_T = 1e-10  # sigma_to_t (absolute, in timesteps)
REL_DENOISED = 1e-12  # of max(1, max |expected|)
REL_SAMPLE = 1e-11  # of max(1, max |expected|)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny DiT's ops are too small for a thread pool: on a busy 2-core machine two threads made this module
    ~20x slower (waiting on each other every op). One thread for these tests, the previous count restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ref() -> dict:
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: it is committed with the tests; regenerate it with "
                    "tests/data/k_diffusion/make_vp_reference.py (see its docstring)")
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(DATA), "pt") as f:
        meta = f.metadata()
    return {"tensors": load_file(str(DATA)), "meta": meta}


@pytest.fixture(scope="module")
def dit(ref):
    t = ref["tensors"]
    state = {k[len("model."):]: v for k, v in t.items() if k.startswith("model.")}
    model = from_dit(state, "dit_test").double().eval()
    spec = model.spec
    assert (spec.in_channels, spec.resolved_out_channels, spec.input_size, spec.num_classes) == (4, 8, 8, 10)
    assert spec.mapping.time_input == "timestep"
    return model


def denoiser_for(dit, schedule: str, prediction: str, quantize: bool):
    return DENOISER.build({"type": "ddpm", "prediction": prediction, "schedule": schedule, "quantize": quantize},
                          model=dit)


def max_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape, (got.shape, expected.shape)
    return float((got.double() - expected.double()).abs().max())


def assert_scaled(got: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    scale = max(1.0, float(expected.abs().max()))
    err = max_err(got, expected)
    assert err <= rel * scale, f"max abs error {err:.3e} > {rel:g} * {scale:.3g}"


def test_the_reference_is_k_diffusions_and_its_cases_differ(ref):
    meta = ref["meta"]
    assert meta["k_diffusion_version"] == "0.1.1.post1"
    config = json.loads(meta["config"])
    assert config["steps"] == 12 and config["cfg_scale"] == 4.0 and config["timesteps"] == 1000
    t = ref["tensors"]
    # the options under test change the reference far beyond the tolerances (else they would test nothing)
    for s in SCHEDULES:
        for kind in ("denoised", "euler", "dpmpp_2m"):
            q0, q1 = t[f"{s}.eps.q0.{kind}"], t[f"{s}.eps.q1.{kind}"]
            assert max_err(q0, q1) > 1e-4 * float(q0.abs().max()), (s, kind, "quantize")
            assert max_err(t[f"{s}.v.q0.{kind}"], t[f"{s}.v.q1.{kind}"]) > 1e-4, (s, kind, "quantize, v")
        for kind in ("euler", "dpmpp_2m"):
            plain, guided = t[f"{s}.eps.q0.{kind}"], t[f"{s}.eps.q0.{kind}_cfg4"]
            assert max_err(plain, guided) > 1e-3 * float(plain.abs().max()), (s, kind, "cfg")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_tables_and_range_match(ref, dit, schedule):
    t = ref["tensors"]
    abar = alphas_cumprod(beta_schedule(schedule, 1000))
    torch.testing.assert_close(abar, t[f"{schedule}.alphas_cumprod"], rtol=REL_TABLE, atol=0)
    den = denoiser_for(dit, schedule, "eps", False)
    got = torch.tensor([den.sigma_min, den.sigma_max], dtype=torch.float64)
    torch.testing.assert_close(got, t[f"{schedule}.sigma_min_max"], rtol=REL_TABLE, atol=0)


@pytest.mark.parametrize("quantize", [False, True], ids=["interp", "quantize"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sigma_to_t_matches(ref, dit, schedule, quantize):
    t = ref["tensors"]
    den = denoiser_for(dit, schedule, "eps", quantize)
    got = den.sigma_to_t(t["grid.sigma"])
    expected = t[f"{schedule}.q{int(quantize)}.sigma_to_t"]
    if quantize:
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=0, atol=ABS_T)
    # what the network is given is that t (t_offset 0, DiT's convention)
    torch.testing.assert_close(den.model_time(t["grid.sigma"]), expected, rtol=0, atol=ABS_T)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_t_to_sigma_matches(ref, dit, schedule):
    t = ref["tensors"]
    den = denoiser_for(dit, schedule, "eps", False)
    torch.testing.assert_close(den.t_to_sigma(t["grid.t"]), t[f"{schedule}.t_to_sigma"], rtol=REL_TABLE, atol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_schedules_own_levels_match_get_sigmas(ref, dit, schedule):
    t = ref["tensors"]
    den = denoiser_for(dit, schedule, "eps", False)
    for n in (10, 38):
        torch.testing.assert_close(den.schedule.get_sigmas(n), t[f"{schedule}.get_sigmas_{n}"], rtol=REL_TABLE,
                                   atol=0)


@pytest.mark.parametrize("schedule,prediction,quantize", CASES, ids=CASE_IDS)
def test_denoised_output_matches(ref, dit, schedule, prediction, quantize):
    t = ref["tensors"]
    sigma = t[f"{schedule}.denoise.sigma"]
    x = t["denoise.x_unit"] * sigma.view(-1, 1, 1, 1)
    den = denoiser_for(dit, schedule, prediction, quantize)
    with torch.no_grad():
        got = den(x, sigma, class_cond=t["denoise.y"])
    assert_scaled(got, t[f"{schedule}.{prediction}.q{int(quantize)}.denoised"], REL_DENOISED)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_karras_schedule_over_the_denoisers_range_matches(ref, dit, schedule):
    t = ref["tensors"]
    den = denoiser_for(dit, schedule, "eps", False)
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": den.sigma_min, "sigma_max": den.sigma_max,
                             "rho": 7.0})(12, dtype=torch.float64)
    torch.testing.assert_close(sigmas, t[f"{schedule}.sample.sigmas"], rtol=REL_TABLE, atol=0)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
@pytest.mark.parametrize("schedule,prediction,quantize", CASES, ids=CASE_IDS)
def test_sampling_matches(ref, dit, schedule, prediction, quantize, sampler):
    t = ref["tensors"]
    den = denoiser_for(dit, schedule, prediction, quantize)
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": den.sigma_min, "sigma_max": den.sigma_max})(
        12, dtype=torch.float64)
    x = t["sample.noise"] * sigmas[0]
    torch.testing.assert_close(x, t[f"{schedule}.sample.x_init"], rtol=REL_TABLE, atol=0)
    case = f"{schedule}.{prediction}.q{int(quantize)}"
    got = sample(sampler, den, x, sigmas, extra_args={"class_cond": t["sample.y"]})
    assert_scaled(got, t[f"{case}.{sampler}"], REL_SAMPLE)
    if prediction == "eps":
        guided = CFGDenoiser(den, scale=4.0, uncond_class=10)
        got = sample(sampler, guided, x, sigmas, extra_args={"class_cond": t["sample.y"]})
        assert_scaled(got, t[f"{case}.{sampler}_cfg4"], REL_SAMPLE)
