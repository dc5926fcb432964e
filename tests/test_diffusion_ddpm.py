"""The DDPM (discrete-time VP) denoisers against an independent implementation of k-diffusion's wrapper maths,
the official DiT/U-ViT conventions, the recipe rules around them, and sampling/training with them."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from hourglass import create_model
from hourglass.diffusion import CFGDenoiser, inpaint_images, sample
from hourglass.diffusion.ddpm import DDPMSchedule, alphas_cumprod, beta_schedule
from hourglass.recipe import RecipeError, load_recipe, loads_recipe
from hourglass.registry import DENOISER, SAMPLER, SCHEDULE, SIGMA_DENSITY
from tests._tiny import SMALL_RECIPE
from tests.conftest import unzero_

ROOT = Path(__file__).resolve().parents[1]


# -- an independent implementation of k-diffusion's discrete-time wrappers (external.py maths) ---------
def ref_alphas_cumprod(name: str, n: int = 1000) -> np.ndarray:
    """``abar`` from the schedules' published definitions (DDPM/ADM linear, SD scaled linear, IDDPM cosine)."""
    if name == "linear":
        betas = np.linspace(1e-4 * 1000 / n, 0.02 * 1000 / n, n, dtype=np.float64)
    elif name == "scaled_linear":
        betas = np.linspace(0.00085**0.5, 0.012**0.5, n, dtype=np.float64) ** 2
    else:
        f = [math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(n + 1)]
        betas = np.array([min(1 - f[i + 1] / f[i], 0.999) for i in range(n)])
    return np.cumprod(1 - betas)


class RefDiscreteDDPM:
    """k-diffusion's ``DiscreteSchedule`` + ``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser`` maths."""

    def __init__(self, model, abar: np.ndarray, quantize: bool = False, v: bool = False) -> None:
        self.model, self.quantize, self.v = model, quantize, v
        self.sigmas = torch.from_numpy(((1 - abar) / abar) ** 0.5)
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.double().log()
        dists = log_sigma - self.log_sigmas[:, None]
        if self.quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape).double()
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        low, high = self.log_sigmas[low_idx], self.log_sigmas[low_idx + 1]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * (low_idx + 1)).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double()
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        s = sigma.view(-1, 1, 1, 1).to(x.dtype)
        c_in = 1 / (s**2 + 1) ** 0.5
        out = self.model(x * c_in, self.sigma_to_t(sigma).to(x.dtype), **cond)
        if self.v:
            return out * (-s / (s**2 + 1) ** 0.5) + x / (s**2 + 1)
        return x + out * -s


class ToyNet(nn.Module):
    """A bounded toy ``net(x_t, t)`` that takes DDPM timesteps (its spec says so) and depends on ``t``."""

    def __init__(self, channels: int = 3, out_channels: int | None = None) -> None:
        super().__init__()
        self.spec = SimpleNamespace(time_input="timestep")
        self.proj = nn.Conv2d(channels, out_channels or channels, 1)
        self.seen_t: list[torch.Tensor] = []

    def forward(self, x, t, **cond):
        self.seen_t.append(t.detach().clone())
        return torch.tanh(self.proj(x) + (t.view(-1, 1, 1, 1) / 500.0).to(x.dtype))


def euler(denoiser, x, sigmas):
    """k-diffusion's ``sample_euler`` without churn."""
    for i in range(len(sigmas) - 1):
        s = torch.full((x.shape[0],), float(sigmas[i]), dtype=x.dtype)
        d = (x - denoiser(x, s)) / float(sigmas[i])
        x = x + d * float(sigmas[i + 1] - sigmas[i])
    return x


# -- schedules and the sigma <-> t maps ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_beta_schedules_follow_their_definitions(name):
    ours = alphas_cumprod(beta_schedule(name, 1000)).numpy()
    np.testing.assert_allclose(ours, ref_alphas_cumprod(name), rtol=1e-12)
    assert beta_schedule("linear", 4000)[-1] == pytest.approx(0.02 / 4)  # ADM's linear scales with N


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("quantize", [False, True])
def test_sigma_to_t_and_back_match_k_diffusion(name, quantize):
    ref = RefDiscreteDDPM(None, ref_alphas_cumprod(name), quantize=quantize)
    denoiser = DENOISER.build({"type": "ddpm", "schedule": name, "quantize": quantize}, model=ToyNet())
    g = torch.Generator().manual_seed(0)
    sigma = torch.exp(torch.empty(500, dtype=torch.float64).uniform_(-6, 11, generator=g))  # beyond both ends too
    sigma = torch.cat([sigma, ref.sigmas[[0, 1, 500, 998, 999]]])
    torch.testing.assert_close(denoiser.sigma_to_t(sigma), ref.sigma_to_t(sigma), atol=1e-9, rtol=0)
    t = torch.linspace(0, 999, 777, dtype=torch.float64)
    torch.testing.assert_close(denoiser.t_to_sigma(t), ref.t_to_sigma(t), rtol=1e-12, atol=0)
    assert denoiser.sigma_min == pytest.approx(float(ref.sigmas[0])) and denoiser.sigma_max == pytest.approx(
        float(ref.sigmas[-1]))
    if not quantize:  # a round trip on the grid's interior
        torch.testing.assert_close(denoiser.sigma_to_t(denoiser.t_to_sigma(t)), t, atol=1e-8, rtol=0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("quantize", [False, True])
def test_denoised_output_matches_k_diffusion(prediction, quantize):
    net = ToyNet()
    ours = DENOISER.build({"type": "ddpm", "prediction": prediction, "quantize": quantize}, model=net)
    ref = RefDiscreteDDPM(net, ref_alphas_cumprod("linear"), quantize=quantize, v=prediction == "v")
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64) * 3
    net.double()
    sigma = torch.tensor([0.01, 0.37, 12.0, 150.0], dtype=torch.float64)
    torch.testing.assert_close(ours(x, sigma), ref(x, sigma), atol=1e-12, rtol=0)


def test_euler_trajectory_matches_k_diffusion():
    net = ToyNet()
    ours = DENOISER.build({"type": "ddpm"}, model=net)
    ref = RefDiscreteDDPM(net, ref_alphas_cumprod("linear"))
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": ours.sigma_min, "sigma_max": ours.sigma_max})(12)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * float(sigmas[0])
    with torch.no_grad():
        got = sample("euler", ours, x, sigmas)
        expected = euler(ref, x, sigmas)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert max(float(t.max()) for t in net.seen_t) > 990  # the net saw DDPM timesteps, up to ~999


# -- the official conventions -------------------------------------------------------------------------------
def test_dit_x0_prediction_is_the_denoised_output():
    """DiT's ``_predict_xstart_from_eps``: ``sqrt(1/abar) x_t - sqrt(1/abar - 1) eps`` at its timestep ``t``."""
    net = ToyNet().double()
    denoiser = DENOISER.build({"type": "ddpm"}, model=net)
    abar = torch.from_numpy(ref_alphas_cumprod("linear"))
    t = torch.tensor([0, 250, 999])
    x0, noise = torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.randn(3, 3, 8, 8, dtype=torch.float64)
    a = abar[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise  # DiT's q_sample
    eps = net(x_t, t.double())
    expected = (1 / a).sqrt() * x_t - (1 / a - 1).sqrt() * eps
    sigma = ((1 - abar[t]) / abar[t]).sqrt()
    torch.testing.assert_close(denoiser(x_t / a.sqrt(), sigma), expected, atol=1e-10, rtol=0)
    assert torch.equal(net.seen_t[-1], t.double())  # DiT's own t, 0 included


def test_uvit_discrete_models_see_n_from_1():
    """U-ViT-H (train_ldm_discrete.py): n in 1..1000 with abar_n = prod_{i<=n}(1 - beta_i), scaled-linear betas."""
    net = ToyNet()
    denoiser = DENOISER.build({"type": "ddpm", "schedule": "scaled_linear", "t_offset": 1}, model=net)
    abar = torch.from_numpy(ref_alphas_cumprod("scaled_linear"))
    n = torch.tensor([1, 2, 500, 1000])
    sigma = ((1 - abar[n - 1]) / abar[n - 1]).sqrt()
    torch.testing.assert_close(denoiser.model_time(sigma), n.double(), atol=1e-8, rtol=0)


def test_uvit_continuous_models_follow_the_vp_sde():
    """U-ViT's sde.VPSDE (beta 0.1..20): the net sees 999 s; D is its x0_pred at s."""
    net = ToyNet().double()
    denoiser = DENOISER.build({"type": "ddpm", "schedule": "continuous_linear"}, model=net)
    s = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    integral = 0.1 * s + (20 - 0.1) * s**2 / 2
    cum_alpha, nsr = torch.exp(-integral), torch.expm1(integral)
    sigma = nsr.sqrt()
    torch.testing.assert_close(denoiser.model_time(sigma), 999 * s, atol=1e-9, rtol=0)
    x_t = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    a = cum_alpha.view(-1, 1, 1, 1)
    eps = net(x_t, 999 * s)
    x0_pred = a.rsqrt() * x_t - nsr.sqrt().view(-1, 1, 1, 1) * eps  # ScoreModel.x0_pred
    torch.testing.assert_close(denoiser(x_t / a.sqrt(), sigma), x0_pred, atol=1e-10, rtol=0)
    assert denoiser.sigma_max == pytest.approx(math.sqrt(math.expm1(10.05)))
    assert denoiser.sigma_min == pytest.approx(float(DDPMSchedule("continuous_linear")._sigma_of_s(
        torch.tensor(1e-3, dtype=torch.float64))))


def test_learned_sigma_channels_are_dropped_and_too_few_channels_refused():
    net = ToyNet(3, 6)
    denoiser = DENOISER.build({"type": "ddpm"}, model=net)
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 20.0])
    eps = net(x / (sigma.view(-1, 1, 1, 1) ** 2 + 1).sqrt(), denoiser.model_time(sigma))[:, :3]
    torch.testing.assert_close(denoiser(x, sigma), x - sigma.view(-1, 1, 1, 1) * eps)
    noise = torch.randn_like(x)
    loss = denoiser.loss(x, noise, sigma, "snr")
    x_s = x + sigma.view(-1, 1, 1, 1) * noise
    eps = net(x_s / (sigma.view(-1, 1, 1, 1) ** 2 + 1).sqrt(), denoiser.model_time(sigma))[:, :3]
    torch.testing.assert_close(loss, (eps - noise).pow(2).flatten(1).mean(1))  # L_simple on the first 3 channels
    with pytest.raises(ValueError, match="returned 2 channels for a 3-channel image"):
        DENOISER.build({"type": "ddpm"}, model=ToyNet(3, 2))(x, sigma)


def test_v_loss_with_edm_weighting_at_sigma_data_1_is_the_plain_v_mse():
    net = ToyNet()
    denoiser = DENOISER.build({"type": "ddpm", "prediction": "v"}, model=net)
    x0, noise, sigma = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8), torch.tensor([0.1, 1.0, 30.0])
    s = sigma.view(-1, 1, 1, 1)
    abar = 1 / (1 + s**2)
    v = abar.sqrt() * noise - (1 - abar).sqrt() * x0  # the v target of v-prediction
    v_hat = net((x0 + s * noise) * abar.sqrt(), denoiser.model_time(sigma))
    torch.testing.assert_close(denoiser.loss(x0, noise, sigma, "edm"), (v_hat - v).pow(2).flatten(1).mean(1),
                               atol=1e-5, rtol=1e-5)


def test_timestep_density_draws_every_step_uniformly():
    denoiser = DENOISER.build({"type": "ddpm", "timesteps": 50}, model=ToyNet())
    density = SIGMA_DENSITY.build("ddpm_timesteps", denoiser=denoiser)
    sigma = density.sample(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = denoiser.sigma_to_t(sigma)
    torch.testing.assert_close(t, t.round(), atol=1e-9, rtol=0)
    assert torch.bincount(t.round().long(), minlength=50).tolist() == [20] * 50  # stratified: exactly uniform
    cont = DENOISER.build({"type": "ddpm", "schedule": "continuous_linear"}, model=ToyNet())
    s = cont.sigma_to_t(SIGMA_DENSITY.build("ddpm_timesteps", denoiser=cont).sample(
        400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)) / 999
    assert torch.histc(s.float(), bins=4, min=0, max=1).tolist() == [100.0] * 4  # s ~ U(0, 1)
    with pytest.raises(ValueError, match="draws the timesteps of a ddpm denoiser"):
        SIGMA_DENSITY.build("ddpm_timesteps", denoiser=DENOISER.build("karras", model=lambda x, s, **c: x))


def test_spec_rules():
    for bad, match in [({"schedule": "continuous_linear", "quantize": True}, "needs a discrete schedule"),
                       ({"schedule": "cosine", "beta_end": 0.02}, "cosine schedule has no beta_start"),
                       ({"beta_end": 1.5}, r"betas lie in \(0, 1\)"),
                       ({"timesteps": 10}, "use more than 20 steps or set beta_end")]:
        with pytest.raises(ValueError, match=match):
            DENOISER.validate({"type": "ddpm", **bad})


# -- the backbone's time input and the recipe rules ---------------------------------------------------------
def test_the_input_check_follows_the_time_input():
    timestep = create_model("dit_test", mapping={"type": "dit", "time_input": "timestep"})
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 10])
    assert timestep(x, torch.tensor([0.0, 999.0]), class_cond=y).shape == (2, 3, 16, 16)  # t = 0 is DiT's
    with pytest.raises(ValueError, match="DDPM timesteps"):
        timestep(x, torch.tensor([-1.0, 5.0]), class_cond=y)
    with pytest.raises(ValueError, match="finite and > 0"):
        create_model("dit_test")(x, torch.tensor([0.0, 1.0]), class_cond=y)
    uvit = create_model("uvit_test", time_input="timestep")
    assert uvit(x, torch.tensor([0.0, 1.0]), class_cond=y).shape == (2, 3, 16, 16)


def test_time_input_changes_only_what_is_embedded():
    """The same weights: t = ln(sigma)/4 under 'timestep' equals sigma under 'log_sigma'."""
    torch.manual_seed(0)
    a = unzero_(create_model("dit_test")).eval()
    b = create_model("dit_test", mapping={"type": "dit", "time_input": "timestep"}).eval()
    b.load_state_dict(a.state_dict())
    x, y, sigma = torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.tensor([1.3, 7.0])  # ln(sigma) / 4 >= 0
    torch.testing.assert_close(a(x, sigma, class_cond=y), b(x, torch.log(sigma) / 4, class_cond=y))


def test_karras_denoiser_refuses_a_timestep_model():
    model = create_model("dit_test", mapping={"type": "dit", "time_input": "timestep"})
    with pytest.raises(ValueError, match="takes DDPM timesteps"):
        DENOISER.build("karras", model=model)


def test_recipe_rules_between_model_denoiser_and_density():
    ddpm = [("diffusion.denoiser", {"type": "ddpm"})]
    assert loads_recipe(SMALL_RECIPE, ddpm)  # a noise-level model (HDiT) under the ddpm denoiser is fine
    with pytest.raises(RecipeError) as info:
        loads_recipe(SMALL_RECIPE, [("diffusion.sigma_density", "ddpm_timesteps")])
    assert [p.path for p in info.value.problems] == ["diffusion.sigma_density.type"]
    assert loads_recipe(SMALL_RECIPE, [*ddpm, ("diffusion.sigma_density", "ddpm_timesteps")])
    recipe = load_recipe(ROOT / "recipes" / "dit_quickstart_ddpm.toml")
    assert recipe.model.mapping.time_input == "timestep" and recipe.model.out_channels == 6
    with pytest.raises(RecipeError) as info:
        load_recipe(ROOT / "recipes" / "dit_quickstart_ddpm.toml", ["diffusion.denoiser=karras"])
    paths = {p.path: p.text for p in info.value.problems}
    assert "takes DDPM timesteps" in paths["diffusion.denoiser.type"]
    assert "reads exactly one output channel per image channel" in paths["model.out_channels"]
    assert "has none" in paths["diffusion.sigma_density.type"]


# -- sampling, guidance, inpainting and training with it -------------------------------------------------------
@pytest.fixture(scope="module")
def dit_ddpm():
    torch.manual_seed(0)
    model = create_model("dit_test", out_channels=6, mapping={"type": "dit", "time_input": "timestep"}).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return DENOISER.build({"type": "ddpm"}, model=model)


@pytest.mark.parametrize("name", sorted(SAMPLER.names()))
def test_every_sampler_runs_on_a_ddpm_model_with_guidance(dit_ddpm, name):
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": dit_ddpm.sigma_min, "sigma_max": dit_ddpm.sigma_max})(4)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])
    guided = CFGDenoiser(dit_ddpm, 2.0, uncond_class=10)
    out = sample(name, guided, x, sigmas, extra_args={"class_cond": torch.tensor([1, 3])})
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_cfg_on_a_ddpm_model_combines_the_two_denoised_outputs(dit_ddpm):
    x, sigma, y = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 3.0]), torch.tensor([1, 3])
    with torch.no_grad():
        cond, uncond = dit_ddpm(x, sigma, class_cond=y), dit_ddpm(x, sigma, class_cond=torch.tensor([10, 10]))
        guided = CFGDenoiser(dit_ddpm, 1.5, uncond_class=10)(x, sigma, class_cond=y)
    torch.testing.assert_close(guided, uncond + 1.5 * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_inpainting_a_ddpm_model_keeps_the_known_region(dit_ddpm):
    known = torch.rand(2, 3, 16, 16) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": dit_ddpm.sigma_min, "sigma_max": dit_ddpm.sigma_max})(4)
    out = inpaint_images("dpmpp_2m", dit_ddpm, known, mask, sigmas, seeds=[0, 1],
                         extra_args={"class_cond": torch.tensor([1, 2])})
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out * (1 - mask), known * (1 - mask))
    assert not torch.allclose(out * mask, known * mask)


def test_the_ddpm_recipe_trains_and_samples_on_cpu(tmp_path):
    from hourglass.train import train

    recipe = load_recipe(ROOT / "recipes" / "dit_quickstart_ddpm.toml", [
        "model.depth=2", "model.width=32", "model.attention.d_head=16", "data.batch_size=4", "train.steps=3",
        "train.log_every=1", "train.warmup_steps=0", "train.checkpoint_every=3", "train.sample_every=0",
        "sample.steps=3", "sample.n=4", "sample.batch_size=4",
    ])
    result = train(recipe, tmp_path / "run", progress=False, report=lambda m: None)
    assert result.step == 3 and result.loss is not None and 0 < result.loss < 10
    assert result.checkpoint is not None and result.grid is not None and result.grid.stat().st_size > 0
    import hourglass

    pipe = hourglass.load(tmp_path / "run", device="cpu")
    images = pipe.sample(2, steps=3, classes=[0, "none"])
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
