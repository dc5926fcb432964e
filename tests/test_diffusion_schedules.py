"""Training sigma densities (stratification, the paper's medians) and sampling schedules."""

from __future__ import annotations

import math

import pytest
import torch

from hourglass.diffusion.sigma_density import stratified_uniform
from hourglass.registry import SCHEDULE, SIGMA_DENSITY

DENSITIES = [
    ("cosine_interpolated", {"image_size": 256, "sigma_data": 0.5}),
    ("log_normal", {}),
    ("log_uniform", {}),
]


@pytest.mark.parametrize("name,context", DENSITIES)
def test_one_draw_per_stratum_in_random_order(name, context):
    density = SIGMA_DENSITY.build(name, **context)
    n = 64
    sigma = density.sample(n, generator=torch.Generator().manual_seed(3))
    assert sigma.shape == (n,) and sigma.dtype == torch.float32
    sigma = sigma.double()
    assert bool((sigma > 0).all()) and bool(torch.isfinite(sigma).all())
    bounds = density.icdf(torch.linspace(0, 1, n + 1, dtype=torch.float64).clamp(1e-7, 1 - 1e-7))
    ordered = sigma.sort().values
    # the i-th smallest draw lies in the i-th stratum [icdf(i/n), icdf((i+1)/n)]
    assert bool((ordered >= bounds[:-1] * (1 - 1e-5)).all()) and bool((ordered <= bounds[1:] * (1 + 1e-5)).all())
    assert not torch.equal(sigma, ordered), "stratified draws must come in a random order"


@pytest.mark.parametrize("name,context", DENSITIES)
def test_sampling_is_reproducible_with_a_generator(name, context):
    density = SIGMA_DENSITY.build(name, **context)
    a = density.sample(16, generator=torch.Generator().manual_seed(7))
    b = density.sample(16, generator=torch.Generator().manual_seed(7))
    c = density.sample(16, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stratified_uniform_covers_each_stratum_once():
    u = stratified_uniform(100, generator=torch.Generator().manual_seed(0))
    assert sorted((u * 100).floor().long().tolist()) == list(range(100))
    with pytest.raises(ValueError, match="positive int"):
        stratified_uniform(0)


@pytest.mark.parametrize("size,median", [(32, 0.50), (256, 1.41), (1024, 2.81)])
def test_cosine_interpolated_medians_match_the_paper(size, median):
    density = SIGMA_DENSITY.build("cosine_interpolated", image_size=size, sigma_data=0.5)
    assert density.median() == pytest.approx(median, rel=0.05)
    draws = density.sample(4001, generator=torch.Generator().manual_seed(size))
    assert draws.median().item() == pytest.approx(median, rel=0.05)


def test_cosine_interpolated_bounds_and_shift():
    density = SIGMA_DENSITY.build("cosine_interpolated", image_size=64)
    ends = density.icdf(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ends, torch.tensor([1e-3, 1e3], dtype=torch.float64), rtol=1e-6, atol=0)
    # 32 px: both ends of the interpolation coincide with the unshifted cosine (median = sigma_data)
    base = SIGMA_DENSITY.build("cosine_interpolated", image_size=32, sigma_data=0.8)
    assert base.median() == pytest.approx(0.8, rel=2e-3)
    # noise_d_high overrides the image size: a coarser noise resolution shifts mass to higher noise
    default = SIGMA_DENSITY.build("cosine_interpolated", image_size=256).median()
    coarse = SIGMA_DENSITY.build({"type": "cosine_interpolated", "noise_d_high": 64}, image_size=256)
    fine = SIGMA_DENSITY.build({"type": "cosine_interpolated", "noise_d_high": 1024}, image_size=256)
    assert coarse.median() > default > fine.median()


def _paper_cosine_interpolated(t: float, image_d: float, sd: float = 0.5) -> float:
    """The cosine-interpolated density written out with scalars.

    Simple diffusion's shifted and interpolated cosine schedule (Hoogeboom et al. 2023), HDiT's training
    density (Crowson et al. 2024, arXiv 2401.11605, Table 7), as k-diffusion's ``rand_cosine_interpolated``.
    """
    lmax, lmin = -2 * math.log(1e-3 / sd), -2 * math.log(1e3 / sd)

    def cosine(t, a, b):
        t0, t1 = math.atan(math.exp(-b / 2)), math.atan(math.exp(-a / 2))
        return -2 * math.log(math.tan(t0 + t * (t1 - t0)))

    def shifted(t, n):
        h = 2 * math.log(n / image_d)
        return cosine(t, lmin - h, lmax - h) + h

    logsnr = (1 - t) * shifted(t, 32) + t * shifted(t, image_d)
    return sd * math.exp(-logsnr / 2)


@pytest.mark.parametrize("size", [64, 512])
def test_cosine_interpolated_icdf_matches_the_paper_formula(size):
    density = SIGMA_DENSITY.build("cosine_interpolated", image_size=size, sigma_data=0.5)
    t = [0.05, 0.25, 0.5, 0.75, 0.95]
    got = density.icdf(torch.tensor(t, dtype=torch.float64)).tolist()
    assert got == pytest.approx([_paper_cosine_interpolated(v, size) for v in t], rel=1e-10)


def test_cosine_interpolated_needs_the_image_size():
    with pytest.raises(ValueError, match="needs the image size"):
        SIGMA_DENSITY.build("cosine_interpolated")
    with pytest.raises(ValueError, match="image_size must be"):
        SIGMA_DENSITY.build("cosine_interpolated", image_size=-3)
    with pytest.raises(ValueError, match="smaller than sigma_max"):
        SIGMA_DENSITY.build({"type": "cosine_interpolated", "sigma_min": 10.0, "sigma_max": 1.0}, image_size=32)


def test_log_normal_and_log_uniform_moments():
    ln = SIGMA_DENSITY.build("log_normal").sample(20000, generator=torch.Generator().manual_seed(0)).double().log()
    assert ln.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert ln.std().item() == pytest.approx(1.2, abs=0.02)
    lu = SIGMA_DENSITY.build({"type": "log_uniform", "sigma_min": 0.01, "sigma_max": 100.0})
    x = lu.sample(20000, generator=torch.Generator().manual_seed(0)).double().log()
    assert x.min().item() >= math.log(0.01) - 1e-5 and x.max().item() <= math.log(100) + 1e-5
    assert x.mean().item() == pytest.approx(0.0, abs=0.02)


# -- schedules ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["karras", "exponential", "polyexponential", "linear"])
@pytest.mark.parametrize("n", [1, 2, 10])
def test_schedule_shape_endpoints_and_order(name, n):
    sigmas = SCHEDULE.build({"type": name, "sigma_min": 0.01, "sigma_max": 50.0})(n)
    assert sigmas.shape == (n + 1,) and sigmas.dtype == torch.float32
    assert sigmas[0].item() == pytest.approx(50.0) and sigmas[-1].item() == 0.0
    if n > 1:
        assert sigmas[-2].item() == pytest.approx(0.01)
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_schedule_formulas():
    n, lo, hi = 6, 0.02, 80.0
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    karras = SCHEDULE.build({"type": "karras", "sigma_min": lo, "sigma_max": hi, "rho": 7.0})(n, dtype=torch.float64)
    expected = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
    torch.testing.assert_close(karras[:-1], expected)
    expo = SCHEDULE.build({"type": "exponential", "sigma_min": lo, "sigma_max": hi})(n, dtype=torch.float64)
    ratios = expo[1:-1] / expo[:-2]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (lo / hi) ** (1 / (n - 1))))
    poly = SCHEDULE.build({"type": "polyexponential", "sigma_min": lo, "sigma_max": hi})(n, dtype=torch.float64)
    torch.testing.assert_close(poly, expo)
    poly2 = SCHEDULE.build({"type": "polyexponential", "sigma_min": lo, "sigma_max": hi, "rho": 2.0})(n)
    assert not torch.allclose(poly2, expo.float())
    lin = SCHEDULE.build({"type": "linear", "sigma_min": lo, "sigma_max": hi})(n, dtype=torch.float64)
    diffs = lin[1:-1] - lin[:-2]
    torch.testing.assert_close(diffs, torch.full_like(diffs, (lo - hi) / (n - 1)))


def test_schedule_errors():
    with pytest.raises(ValueError, match="n_steps must be an int >= 1"):
        SCHEDULE.build("karras")(0)
    with pytest.raises(ValueError, match="smaller than sigma_max"):
        SCHEDULE.build({"type": "karras", "sigma_min": 5.0, "sigma_max": 1.0})
    with pytest.raises(ValueError):
        SCHEDULE.build({"type": "exponential", "sigma_min": 0.0})
