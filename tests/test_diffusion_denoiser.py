"""Preconditioning (EDM, Karras et al. 2022, Table 1), the training loss and the loss weightings."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from hourglass.diffusion import KarrasDenoiser, KarrasDenoiserSpec
from hourglass.diffusion.weighting import c_out_squared
from hourglass.registry import DENOISER, WEIGHTING

SD = 0.5
SIGMAS = torch.tensor([1e-3, 0.05, 0.3, 0.5, 1.0, 3.0, 20.0, 1e3], dtype=torch.float64)


class RecordingBackbone(torch.nn.Module):
    """F(x, sigma) = a * x + b, recording what it was called with."""

    def __init__(self, a: float = 0.7, b: float = -0.2) -> None:
        super().__init__()
        self.a, self.b, self.calls = a, b, []

    def forward(self, x, sigma, **cond):
        self.calls.append((x.clone(), sigma.clone(), cond))
        return self.a * x + self.b


def test_scalings_match_the_paper_formulas():
    den = DENOISER.build("karras", model=RecordingBackbone())
    c_skip, c_out, c_in = den.get_scalings(SIGMAS)
    for s, cs, co, ci in zip(SIGMAS.tolist(), c_skip.tolist(), c_out.tolist(), c_in.tolist(), strict=True):
        assert cs == pytest.approx(SD**2 / (s**2 + SD**2), rel=1e-12)
        assert co == pytest.approx(s * SD / math.sqrt(s**2 + SD**2), rel=1e-12)
        assert ci == pytest.approx(1 / math.sqrt(s**2 + SD**2), rel=1e-12)


def test_scalings_give_unit_variance_input_and_target():
    """With x0 ~ N(0, sigma_data^2): Var(c_in x_s) = 1 and Var((x0 - c_skip x_s) / c_out) = 1."""
    den = KarrasDenoiser(KarrasDenoiserSpec(), RecordingBackbone())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(200_000, generator=g, dtype=torch.float64) * SD
    n = torch.randn(200_000, generator=g, dtype=torch.float64)
    for s in (0.01, 0.5, 4.0, 80.0):
        c_skip, c_out, c_in = den.get_scalings(torch.tensor(s, dtype=torch.float64))
        x_s = x0 + s * n
        assert (c_in * x_s).var().item() == pytest.approx(1.0, abs=0.02)
        assert ((x0 - c_skip * x_s) / c_out).var().item() == pytest.approx(1.0, abs=0.02)


def test_small_sigma_is_identity_for_any_backbone():
    wild = lambda x, sigma, **c: 1e3 * torch.randn_like(x)  # noqa: E731
    den = DENOISER.build({"type": "karras"}, model=wild)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    out = den(x, torch.full((3,), 1e-9, dtype=torch.float64))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_forward_preconditions_the_backbone_call():
    backbone = RecordingBackbone()
    den = KarrasDenoiser(KarrasDenoiserSpec(sigma_data=0.7), backbone)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.3, 5.0], dtype=torch.float64)
    out = den(x, sigma, class_cond=torch.tensor([1, 2]))
    sd = 0.7
    s = sigma.view(-1, 1, 1, 1)
    c_in = 1 / (s**2 + sd**2).sqrt()
    expected = sd**2 / (s**2 + sd**2) * x + s * sd / (s**2 + sd**2).sqrt() * (0.7 * c_in * x - 0.2)
    torch.testing.assert_close(out, expected)
    x_seen, sigma_seen, cond_seen = backbone.calls[-1]
    torch.testing.assert_close(x_seen, c_in * x)
    torch.testing.assert_close(sigma_seen, sigma)  # the backbone gets sigma itself, not c_noise
    assert torch.equal(cond_seen["class_cond"], torch.tensor([1, 2]))


def test_scalar_sigma_broadcasts_to_the_batch():
    backbone = RecordingBackbone()
    den = KarrasDenoiser(KarrasDenoiserSpec(), backbone)
    x = torch.randn(4, 1, 2, 2)
    out = den(x, torch.tensor(0.8))
    torch.testing.assert_close(out, den(x, torch.full((4,), 0.8)))
    torch.testing.assert_close(den(x, 0.8), out)
    assert backbone.calls[0][1].shape == (4,)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigma_values_are_named(bad):
    den = KarrasDenoiser(KarrasDenoiserSpec(), RecordingBackbone())
    with pytest.raises(ValueError, match=r"positive and finite.*\[1\]="):
        den(torch.randn(2, 1, 2, 2), torch.tensor([1.0, bad]))


def test_bad_sigma_shape_is_refused():
    den = KarrasDenoiser(KarrasDenoiserSpec(), RecordingBackbone())
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(2,\)"):
        den(torch.randn(2, 1, 2, 2), torch.ones(3))
    with pytest.raises(ValueError, match="noise must have the shape of x0"):
        den.loss(torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 3), torch.ones(2))


def test_loss_matches_the_written_out_formula():
    backbone = RecordingBackbone(a=0.3, b=0.1)
    den = KarrasDenoiser(KarrasDenoiserSpec(), backbone)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64) * SD
    noise = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.2, 1.0, 7.0, 90.0], dtype=torch.float64)
    s = sigma.view(-1, 1, 1, 1)
    x_s = x0 + noise * s
    c_skip, c_out, c_in = SD**2 / (s**2 + SD**2), s * SD / (s**2 + SD**2).sqrt(), 1 / (s**2 + SD**2).sqrt()
    f = 0.3 * (c_in * x_s) + 0.1
    mse = ((f - (x0 - c_skip * x_s) / c_out) ** 2).mean(dim=(1, 2, 3))
    soft_min_snr = (sigma * SD) ** 2 / (sigma**2 + SD**2) ** 2
    torch.testing.assert_close(den.loss(x0, noise, sigma), mse * soft_min_snr)  # default: the paper's
    torch.testing.assert_close(den.loss(x0, noise, sigma, "edm"), mse)
    custom = den.loss(x0, noise, sigma, lambda sig, sd: sig * 0 + 2.0)
    torch.testing.assert_close(custom, 2 * mse)


def test_loss_is_zero_for_the_perfect_backbone():
    x0 = torch.randn(3, 2, 4, 4, dtype=torch.float64)

    def oracle(x_in, sigma, **c):  # returns exactly the F-space target
        s = sigma.view(-1, 1, 1, 1)
        x_s = x_in * (s**2 + SD**2).sqrt()
        return (x0 - SD**2 / (s**2 + SD**2) * x_s) / (s * SD / (s**2 + SD**2).sqrt())

    den = KarrasDenoiser(KarrasDenoiserSpec(), oracle)
    loss = den.loss(x0, torch.randn_like(x0), torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64), "edm")
    assert loss.abs().max().item() < 1e-20
    torch.testing.assert_close(den(x0 + 0.5 * torch.ones_like(x0), torch.full((3,), 0.5, dtype=torch.float64)), x0)


@pytest.mark.parametrize("name", ["edm", "soft_min_snr", "snr", "min_snr", "uniform"])
def test_weighted_loss_equals_x0_space_weighting(name):
    """loss(weighting) == x0_weight * mean((D(x_s) - x0)^2): the F-space convention is consistent."""
    backbone = RecordingBackbone(a=-0.4, b=0.3)
    den = KarrasDenoiser(KarrasDenoiserSpec(), backbone)
    x0 = torch.randn(len(SIGMAS), 3, 4, 4, dtype=torch.float64) * SD
    noise = torch.randn_like(x0)
    weighting = WEIGHTING.build(name)
    loss = den.loss(x0, noise, SIGMAS, weighting)
    x_s = x0 + noise * SIGMAS.view(-1, 1, 1, 1)
    x0_mse = ((den(x_s, SIGMAS) - x0) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(loss, weighting.x0_weight(SIGMAS, SD) * x0_mse, rtol=1e-9, atol=0)


def _formulas(name):
    s, sd = SIGMAS, SD
    return {
        "edm": (torch.ones_like(s), (s**2 + sd**2) / (s * sd) ** 2),
        "soft_min_snr": ((s * sd) ** 2 / (s**2 + sd**2) ** 2, 1 / (s**2 + 1 / 4.0)),  # gamma = 1/sd^2 = 4
        "snr": (sd**2 / (s**2 + sd**2), 1 / s**2),
        "min_snr": (torch.minimum(1 / s**2, torch.tensor(5.0)) * (s * sd) ** 2 / (s**2 + sd**2),
                    torch.minimum(1 / s**2, torch.tensor(5.0))),
        "uniform": ((s * sd) ** 2 / (s**2 + sd**2), torch.ones_like(s)),
    }[name]


@pytest.mark.parametrize("name", ["edm", "soft_min_snr", "snr", "min_snr", "uniform"])
def test_weighting_values_match_formulas(name):
    w = WEIGHTING.build(name)
    f_space, x0_space = _formulas(name)
    torch.testing.assert_close(w(SIGMAS, SD), f_space, rtol=1e-12, atol=0)
    torch.testing.assert_close(w.x0_weight(SIGMAS, SD), x0_space, rtol=1e-12, atol=0)
    torch.testing.assert_close(w(SIGMAS, SD), w.x0_weight(SIGMAS, SD) * c_out_squared(SIGMAS, SD), rtol=1e-12, atol=0)
    assert w(SIGMAS, SD).shape == SIGMAS.shape


def test_k_diffusion_weighting_conventions():
    """k-diffusion's Denoiser: 'karras' -> ones, 'soft-min-snr' and 'snr' as written in layers.py."""
    s = SIGMAS
    torch.testing.assert_close(WEIGHTING.build("edm")(s, SD), torch.ones_like(s))
    torch.testing.assert_close(WEIGHTING.build("soft_min_snr")(s, SD), (s * SD) ** 2 / (s**2 + SD**2) ** 2)
    torch.testing.assert_close(WEIGHTING.build("snr")(s, SD), SD**2 / (s**2 + SD**2))


def test_soft_min_snr_gamma_and_min_snr_gamma():
    w = WEIGHTING.build({"type": "soft_min_snr", "gamma": 4.0})
    torch.testing.assert_close(w(SIGMAS, SD), WEIGHTING.build("soft_min_snr")(SIGMAS, SD), rtol=1e-12, atol=0)
    w2 = WEIGHTING.build({"type": "min_snr", "gamma": 2.0})
    assert w2.x0_weight(torch.tensor([0.1]), SD).item() == pytest.approx(2.0)
    assert w2.x0_weight(torch.tensor([2.0]), SD).item() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        WEIGHTING.build({"type": "min_snr", "gamma": -1.0})


def test_denoiser_spec_is_frozen_and_strict():
    spec = KarrasDenoiserSpec(sigma_data=1.0)
    with pytest.raises(ValidationError, match="frozen"):
        spec.sigma_data = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        KarrasDenoiserSpec(sigma_data=0.5, sigma_min=0.1)
    with pytest.raises(ValueError):
        KarrasDenoiserSpec(sigma_data=0.0)


@pytest.mark.parametrize("preset", ["hdit_test", "dit_test"])
def test_preconditioned_backbone_trains_and_samples(preset):
    """Integration with the library's backbones: loss, backward and a guided 3-step sample."""
    from hourglass import create_model
    from hourglass.diffusion import CFGDenoiser, sample
    from hourglass.registry import SCHEDULE, SIGMA_DENSITY

    model = create_model(preset)
    spec = model.spec
    den = DENOISER.build("karras", model=model)
    size = spec.input_size if isinstance(spec.input_size, int) else spec.input_size[0]
    x0 = torch.randn(2, spec.in_channels, size, size) * 0.5
    sigma = SIGMA_DENSITY.build("cosine_interpolated", image_size=size).sample(2)
    cond = {"class_cond": torch.tensor([0, 1])} if spec.num_classes else {}
    loss = den.loss(x0, torch.randn_like(x0), sigma, **cond)
    assert loss.shape == (2,) and bool(torch.isfinite(loss).all())
    loss.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    guided = CFGDenoiser(den, 2.0, uncond_class=spec.num_classes) if spec.num_classes else den
    sigmas = SCHEDULE.build("karras")(3)
    out = sample("dpmpp_3m_sde", guided, torch.randn_like(x0) * sigmas[0], sigmas, extra_args=cond)
    assert out.shape == x0.shape and bool(torch.isfinite(out).all())
