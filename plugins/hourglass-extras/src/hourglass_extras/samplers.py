"""DPM-Solver++(2S) with ancestral noise (Lu et al. 2022, "DPM-Solver++", Algorithm 1; k-diffusion's
``sample_dpmpp_2s_ancestral``).

In ``t = -ln(sigma)`` the probability-flow ODE for the data prediction ``D`` has the exact
solution ``x(t') = (sigma'/sigma) x(t) + sigma' * integral_t^t' e^tau D dtau``. The single-step
second-order solver evaluates ``D`` at the start and at an intermediate ``s = t + r h``
(``h = t' - t``) and combines them::

    x_s   = (sigma_s / sigma) x - expm1(-r h) D(x; sigma)
    D_r   = (1 - 1/(2r)) D(x; sigma) + 1/(2r) D(x_s; sigma_s)
    x'    = (sigma' / sigma) x - expm1(-h) D_r

Ancestral sampling splits each step ``sigma -> sigma_next`` into an ODE step to ``sigma_down``
followed by fresh noise of std ``sigma_up`` (``sigma_down^2 + sigma_up^2 = sigma_next^2``);
``eta = 0`` gives the deterministic DPM-Solver++(2S). The step into ``sigma = 0`` is an Euler step
(it returns the denoised estimate), as in k-diffusion.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

from hourglass.plugin import Field, Sampler, SamplerRun, SamplerSpec, get_ancestral_step

__all__ = ["DPMPP2SAncestralSampler", "DPMPP2SAncestralSamplerSpec"]


class DPMPP2SAncestralSamplerSpec(SamplerSpec):
    """Options of the ``dpmpp_2s_ancestral`` sampler."""

    type: Literal["dpmpp_2s_ancestral"] = "dpmpp_2s_ancestral"
    eta: float = Field(1.0, ge=0, description="ancestral noise amount; 0 = the deterministic DPM-Solver++(2S)")
    s_noise: float = Field(1.0, ge=0, description="scale of the added noise")
    r: float = Field(
        0.5, gt=0, le=1,
        description="position of the intermediate evaluation in log-sigma, as a fraction of the step "
        "(0.5: the midpoint, k-diffusion's choice)",
    )


class DPMPP2SAncestralSampler(Sampler):
    """DPM-Solver++(2S) ancestral: second-order single-step steps in log-sigma plus ancestral noise.

    Two denoiser evaluations per step (one for the final step into ``sigma = 0``); with
    ``eta = 0`` a second-order ODE solver.
    """

    Spec = DPMPP2SAncestralSamplerSpec
    spec: DPMPP2SAncestralSamplerSpec

    @property
    def stochastic(self) -> bool:
        """Whether this configuration draws noise (``eta > 0`` and ``s_noise > 0``)."""
        return self.spec.eta > 0 and self.spec.s_noise > 0

    def solve(self, run: SamplerRun, x: Tensor, sigmas: list[float]) -> Tensor:
        """Integrate ``x (B, C, H, W)`` along the Python-float schedule ``sigmas``."""
        eta, s_noise, r = self.spec.eta, self.spec.s_noise, self.spec.r
        weight_2 = 1 / (2 * r)  # weight of the intermediate evaluation in D_r
        for i in run.steps():
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            denoised = run.model(x, sigma)
            run.report(x, i, sigma, sigma, denoised)
            sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
            if sigma_down == 0:
                x = denoised  # the Euler step x + (x - D)/sigma * (0 - sigma)
            else:
                h = math.log(sigma / sigma_down)
                sigma_s = sigma * math.exp(-r * h)
                x_s = (sigma_s / sigma) * x - math.expm1(-r * h) * denoised
                denoised_s = run.model(x_s, sigma_s)
                denoised_r = (1 - weight_2) * denoised + weight_2 * denoised_s
                x = (sigma_down / sigma) * x - math.expm1(-h) * denoised_r
            if sigma_next > 0 and sigma_up > 0 and s_noise > 0:
                x = x + run.noise(x) * (s_noise * sigma_up)
        return x
