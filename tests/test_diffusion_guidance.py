"""Classifier-free guidance, SDEdit image-to-image and replacement-method inpainting."""

from __future__ import annotations

import math

import pytest
import torch

from hourglass.diffusion import (
    CFGDenoiser,
    InpaintDenoiser,
    NoiseSampler,
    image_to_image,
    initial_noise,
    inpaint_images,
    sample,
    truncate_sigmas,
)
from hourglass.registry import SCHEDULE

MU, S0 = 0.3, 0.4
UNCOND = 10


class ClassToy:
    """D = x * 0.5 + class_cond (+ aug_cond[:, 0]); records every call."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, x, sigma, class_cond=None, aug_cond=None, flag=None):
        self.calls.append({"batch": x.shape[0], "class_cond": class_cond, "aug_cond": aug_cond, "flag": flag,
                           "sigma": sigma})
        out = 0.5 * x + class_cond.view(-1, 1, 1, 1).to(x.dtype)
        if aug_cond is not None:
            out = out + aug_cond[:, :1, None, None]
        return out


def test_scale_one_is_the_conditional_denoiser_in_one_call():
    toy = ClassToy()
    x, sigma, labels = torch.randn(3, 2, 4, 4), torch.full((3,), 2.0), torch.tensor([1, 2, 3])
    out = CFGDenoiser(toy, 1.0, UNCOND)(x, sigma, class_cond=labels)
    torch.testing.assert_close(out, 0.5 * x + labels.view(-1, 1, 1, 1).float())
    assert len(toy.calls) == 1 and toy.calls[0]["batch"] == 3


def test_guidance_combines_cond_and_uncond_in_one_doubled_forward():
    toy = ClassToy()
    x, sigma, labels = torch.randn(3, 2, 4, 4), torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1, 2, 3])
    aug = torch.randn(3, 9)
    out = CFGDenoiser(toy, 2.5, UNCOND)(x, sigma, class_cond=labels, aug_cond=aug, flag="keep")
    cond = 0.5 * x + labels.view(-1, 1, 1, 1).float() + aug[:, :1, None, None]
    uncond = 0.5 * x + UNCOND + aug[:, :1, None, None]
    torch.testing.assert_close(out, uncond + 2.5 * (cond - uncond))
    assert len(toy.calls) == 1
    call = toy.calls[0]
    assert call["batch"] == 6 and call["flag"] == "keep"
    assert call["class_cond"].tolist() == [1, 2, 3, UNCOND, UNCOND, UNCOND]
    torch.testing.assert_close(call["aug_cond"], torch.cat([aug, aug]))
    torch.testing.assert_close(call["sigma"], torch.cat([sigma, sigma]))


def test_guidance_interval_guides_only_inside():
    toy = ClassToy()
    cfg = CFGDenoiser(toy, 3.0, UNCOND, interval=(0.5, 2.0))
    x, labels = torch.randn(3, 1, 2, 2), torch.tensor([1, 2, 3])
    cond = 0.5 * x + labels.view(-1, 1, 1, 1).float()
    uncond = 0.5 * x + UNCOND
    out = cfg(x, torch.tensor([0.1, 1.0, 5.0]), class_cond=labels)
    expected = torch.stack([cond[0], (uncond + 3.0 * (cond - uncond))[1], cond[2]])
    torch.testing.assert_close(out, expected)
    toy.calls.clear()
    out = cfg(x, torch.full((3,), 9.0), class_cond=labels)  # outside everywhere: a single conditional call
    torch.testing.assert_close(out, cond)
    assert [c["batch"] for c in toy.calls] == [3]


def test_guidance_argument_errors():
    with pytest.raises(ValueError, match="finite"):
        CFGDenoiser(ClassToy(), float("nan"), UNCOND)
    with pytest.raises(ValueError, match="uncond_class"):
        CFGDenoiser(ClassToy(), 2.0, -1)
    with pytest.raises(ValueError, match="sigma_lo <= sigma_hi"):
        CFGDenoiser(ClassToy(), 2.0, UNCOND, interval=(3.0, 1.0))
    with pytest.raises(ValueError, match="class_cond or mapping_cond is required"):
        CFGDenoiser(ClassToy(), 2.0, UNCOND)(torch.randn(1, 1, 2, 2), torch.ones(1))


def test_guided_sampling_runs_through_a_sampler():
    toy = ClassToy()
    cfg = CFGDenoiser(toy, 2.0, UNCOND)
    sigmas = SCHEDULE.build("karras")(4)
    out = sample("dpmpp_2m", cfg, torch.randn(2, 1, 2, 2) * sigmas[0], sigmas,
                 extra_args={"class_cond": torch.tensor([1, 2])})
    assert out.shape == (2, 1, 2, 2) and all(c["batch"] == 4 for c in toy.calls)


# -- image-to-image and inpainting ----------------------------------------------------------------
def gaussian_toy(x, sigma, **cond):
    s = sigma.view(-1, 1, 1, 1).to(x.dtype)
    return (S0**2 * x + s**2 * MU) / (S0**2 + s**2)


def test_truncate_sigmas():
    sigmas = SCHEDULE.build("karras")(10)
    assert torch.equal(truncate_sigmas(sigmas, strength=1.0), sigmas)
    half = truncate_sigmas(sigmas, strength=0.5)
    assert torch.equal(half, sigmas[5:]) and half.dtype == sigmas.dtype
    assert len(truncate_sigmas(sigmas, strength=0.01)) == 2
    by_level = truncate_sigmas(sigmas, sigma_start=3.0)
    assert by_level[0].item() == 3.0 and bool((by_level[1:] < 3.0).all())
    assert torch.equal(by_level[1:], sigmas[sigmas < 3.0])
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        truncate_sigmas(sigmas, strength=0.0)
    with pytest.raises(ValueError, match="exactly one"):
        truncate_sigmas(sigmas)


def test_image_to_image_follows_the_ode_from_the_noised_image():
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 20.0})(80)
    x_init = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    eps = torch.randn_like(x_init)
    out = image_to_image("heun", gaussian_toy, x_init, sigmas.double(), strength=0.5, init_noise=eps)
    sigma_start = float(truncate_sigmas(sigmas.double(), strength=0.5)[0])
    exact = MU + (x_init + sigma_start * eps - MU) * S0 / math.sqrt(S0**2 + sigma_start**2)
    torch.testing.assert_close(out, exact, atol=2e-3, rtol=0)
    # a small strength barely changes the image; seeds make it batch-size invariant
    gentle = image_to_image("euler", gaussian_toy, x_init, sigmas.double(), strength=0.05, seeds=[1, 2, 3, 4])
    assert (gentle - x_init).abs().max().item() < 0.1
    one = image_to_image("euler", gaussian_toy, x_init[2:3], sigmas.double(), strength=0.05, seeds=[3])
    torch.testing.assert_close(one, gentle[2:3])


def _mask(batch=2, size=6):
    mask = torch.zeros(batch, 1, size, size)
    mask[..., size // 2:, :] = 1.0  # generate the bottom half
    return mask


@pytest.mark.parametrize("name,options", [("euler", {}), ("lms", {}), ("dpmpp_3m_sde", {}), ("heun", {"s_churn": 5.0})])
@pytest.mark.parametrize("jumps", [0, 2])
def test_inpainting_keeps_the_known_region(name, options, jumps):
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 20.0})(8)
    x_known = torch.rand(2, 3, 6, 6) * 2 - 1
    mask = _mask()
    sampler = {"type": name, **options}
    out = inpaint_images(sampler, gaussian_toy, x_known, mask, sigmas, jumps=jumps, seeds=[0, 1])
    keep = (mask == 0).expand_as(out)
    assert torch.equal(out[keep], x_known[keep])
    assert (out[~keep] - x_known[~keep]).abs().max().item() > 0.05  # the hole is generated
    assert bool(torch.isfinite(out).all())


def test_inpainted_region_matches_plain_sampling_for_a_pixelwise_model():
    """The toy denoiser acts per pixel, so the generated region equals an unmasked run with the same noise."""
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 20.0})(12)
    x_known = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    eps = torch.randn_like(x_known)
    mask = _mask().double()
    out = inpaint_images("dpmpp_2m", gaussian_toy, x_known, mask, sigmas, init_noise=eps)
    plain = sample("dpmpp_2m", gaussian_toy, eps * float(sigmas[0]), sigmas)
    gen = (mask == 1).expand_as(out)
    torch.testing.assert_close(out[gen], plain[gen], rtol=0, atol=1e-5)


def test_inpaint_denoiser_replaces_the_known_region_of_input_and_output():
    seen = []

    def model(x, sigma, **cond):
        seen.append(x.clone())
        return torch.full_like(x, 7.0)

    x_known, eps, mask = torch.rand(2, 1, 6, 6), torch.randn(2, 1, 6, 6), _mask()
    wrapped = InpaintDenoiser(model, x_known, mask, eps)
    x = torch.randn(2, 1, 6, 6)
    out = wrapped(x, torch.full((2,), 3.0))
    expected_in = torch.where(mask.bool(), x, x_known + 3.0 * eps)
    torch.testing.assert_close(seen[0], expected_in)
    torch.testing.assert_close(out, torch.where(mask.bool(), torch.full_like(x, 7.0), x_known))
    with pytest.raises(ValueError, match="does not broadcast"):
        InpaintDenoiser(model, x_known, torch.ones(3, 1, 6, 6), eps)
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        InpaintDenoiser(model, x_known, mask * 2, eps)


def test_repaint_resampling_redoes_each_segment():
    calls = []

    def counting(x, sigma, **cond):
        calls.append(1)
        return gaussian_toy(x, sigma)

    sigmas = SCHEDULE.build("karras")(6)
    x_known = torch.rand(1, 1, 4, 4)
    inpaint_images("euler", counting, x_known, _mask(1, 4), sigmas, jumps=0)
    base = len(calls)
    calls.clear()
    steps_seen = []
    inpaint_images("euler", counting, x_known, _mask(1, 4), sigmas, jumps=2, jump_length=2,
                   callback=lambda info: steps_seen.append(info["i"]))
    assert base == 6 and len(calls) == 3 * base
    assert sorted(set(steps_seen)) == list(range(6))
    with pytest.raises(ValueError, match="jumps must be an int >= 0"):
        inpaint_images("euler", counting, x_known, _mask(1, 4), sigmas, jumps=-1)


def test_inpainting_is_batch_size_invariant_with_seeds():
    sigmas = SCHEDULE.build("karras")(6)
    x_known = torch.rand(3, 1, 4, 4)
    mask = _mask(3, 4)
    both = inpaint_images("dpmpp_3m_sde", gaussian_toy, x_known, mask, sigmas, seeds=[4, 5, 6], jumps=1)
    single = inpaint_images("dpmpp_3m_sde", gaussian_toy, x_known[1:2], mask[1:2], sigmas, seeds=[5], jumps=1)
    torch.testing.assert_close(both[1:2], single, rtol=0, atol=1e-6)
    assert not torch.allclose(both[0], both[1])
    # reproducible noise helpers used under the hood
    assert torch.equal(initial_noise([5], (1, 4, 4)), initial_noise([5], (1, 4, 4)))
    assert NoiseSampler([5]).seeds == [5]


def test_repaint_resampling_keeps_the_data_distribution():
    """Re-noising from sigma_{i+1} back to sigma_i keeps the marginals, so moments stay right."""
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 20.0})(60)
    x_known = torch.zeros(250, 1, 4, 4)
    mask = torch.ones(1, 1, 4, 4)  # everything generated: 4000 i.i.d. pixels
    out = inpaint_images("heun", gaussian_toy, x_known, mask, sigmas, jumps=2, seeds=list(range(250)))
    assert out.mean().item() == pytest.approx(MU, abs=0.03)
    assert out.std().item() == pytest.approx(S0, abs=0.02)
