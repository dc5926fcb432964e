"""CUDA checks of the samplers: no host-device synchronisation inside the loop, per-seed noise.

Skipped (with the reason) where CUDA is absent.
"""

from __future__ import annotations

import pytest
import torch

from hourglass.diffusion import CFGDenoiser, KarrasDenoiser, KarrasDenoiserSpec, NoiseSampler, initial_noise, sample
from hourglass.registry import SAMPLER, SCHEDULE

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

MU, S0 = 0.3, 0.4


class ToyBackbone(torch.nn.Module):
    """The backbone F whose preconditioned D is the exact denoiser of N(MU, S0^2) data (class-aware)."""

    def forward(self, x_in, sigma, class_cond=None):
        s = sigma.view(-1, 1, 1, 1)
        sd = 0.5
        x = x_in * (s**2 + sd**2).sqrt()
        mu = MU + 0.01 * class_cond.view(-1, 1, 1, 1).to(x.dtype) if class_cond is not None else MU
        d = (S0**2 * x + s**2 * mu) / (S0**2 + s**2)
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        return (d - c_skip * x) / c_out


@pytest.mark.parametrize("name", SAMPLER.names())
def test_sampling_loop_never_synchronises(name):
    device = torch.device("cuda")
    seeds = [0, 1, 2, 3]
    denoiser = CFGDenoiser(KarrasDenoiser(KarrasDenoiserSpec(), ToyBackbone()), 1.5, uncond_class=10)
    sigmas = SCHEDULE.build("karras")(12)  # on the CPU: read once without a device sync
    x = initial_noise(seeds, (3, 8, 8), device=device) * float(sigmas[0])
    labels = torch.arange(4, device=device)
    options = {"s_churn": 5.0} if name in ("euler", "heun", "dpm_2") else {}
    noise = NoiseSampler(seeds)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = sample(name, denoiser, x, sigmas, noise=noise, extra_args={"class_cond": labels}, **options)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and bool(torch.isfinite(out).all())
    assert abs(out.mean().item() - MU) < 0.3


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_cuda_noise_is_batch_size_invariant(name):
    device = torch.device("cuda")
    den = KarrasDenoiser(KarrasDenoiserSpec(), ToyBackbone())
    sigmas = SCHEDULE.build("karras")(10)
    seeds = [5, 6, 7]
    x = initial_noise(seeds, (3, 8, 8), device=device) * float(sigmas[0])
    batch = sample(name, den, x, sigmas, noise=NoiseSampler(seeds))
    for i, seed in enumerate(seeds):
        xi = initial_noise([seed], (3, 8, 8), device=device) * float(sigmas[0])
        single = sample(name, den, xi, sigmas, noise=NoiseSampler([seed]))
        torch.testing.assert_close(batch[i:i + 1], single, rtol=1e-5, atol=1e-5)


def test_cpu_generators_give_the_cpu_numbers_on_cuda():
    on_gpu = initial_noise([3, 4], (2, 4, 4), device="cuda", generator_device="cpu")
    torch.testing.assert_close(on_gpu.cpu(), initial_noise([3, 4], (2, 4, 4)))
