"""The diffusion recipe: preconditioning, loss weightings, training noise densities, sampling schedules,
samplers, classifier-free guidance, image-to-image and inpainting.

HDiT's choices (Crowson et al. 2024, arXiv 2401.11605; Sec. 3.1, Sec. 5.1, App. C and Table 7) are the
defaults: EDM preconditioning (Karras et al. 2022), Soft-Min-SNR weighting, the cosine-interpolated
noise density of simple diffusion (Hoogeboom et al. 2023) and 50 steps of DPM-Solver++(3M) SDE.

Importing this package registers its components (``DENOISER``, ``WEIGHTING``, ``SIGMA_DENSITY``,
``SCHEDULE``, ``SAMPLER``). The functional entry point is :func:`sample`::

    from hourglass.diffusion import sample, initial_noise, NoiseSampler
    from hourglass.registry import SCHEDULE
    sigmas = SCHEDULE.build("karras")(50)
    x = initial_noise(seeds, (3, 64, 64)) * sigmas[0]
    x0 = sample("dpmpp_3m_sde", denoiser, x, sigmas, eta=1.0, noise=NoiseSampler(seeds))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from hourglass.diffusion import denoiser, guidance, inpaint, noise, samplers, schedules, sigma_density, weighting
from hourglass.diffusion.denoiser import KarrasDenoiser, KarrasDenoiserSpec
from hourglass.diffusion.guidance import CFGDenoiser
from hourglass.diffusion.inpaint import InpaintDenoiser, image_to_image, truncate_sigmas
from hourglass.diffusion.inpaint import inpaint as inpaint_images
from hourglass.diffusion.noise import NoiseSampler, initial_noise
from hourglass.diffusion.samplers import Sampler, SamplerSpec
from hourglass.registry import SAMPLER

__all__ = [
    "denoiser", "guidance", "inpaint", "noise", "samplers", "schedules", "sigma_density", "weighting",
    "KarrasDenoiser", "KarrasDenoiserSpec", "CFGDenoiser", "InpaintDenoiser",
    "NoiseSampler", "initial_noise", "Sampler", "SamplerSpec",
    "image_to_image", "inpaint_images", "truncate_sigmas", "sample", "SAMPLE_CALL_OPTIONS",
]

#: options of :func:`sample` that go to the call rather than to the sampler's spec
SAMPLE_CALL_OPTIONS = ("noise", "callback", "disable_progress", "extra_args")


def sample(name: str, denoiser: Any, x: Tensor, sigmas: Tensor | Sequence[float], **options: Any) -> Tensor:
    """Run the sampler registered as ``name``.

    Args:
        name: a registered sampler (``SAMPLER.names()``), e.g. ``"dpmpp_3m_sde"``.
        denoiser: ``D(x, sigma, **cond) -> (B, C, H, W)``.
        x: ``(B, C, H, W)`` starting point at noise level ``sigmas[0]``.
        sigmas: ``(n_steps + 1,)`` decreasing schedule ending in 0.
        **options: the sampler's spec fields (validated by its ``Spec``, e.g. ``eta``, ``s_noise``)
            and the call options ``noise``, ``callback``, ``disable_progress``, ``extra_args``.

    Returns:
        ``(B, C, H, W)`` samples.

    Raises:
        TypeError: an option that is neither a spec field nor a call option; the message lists the
            valid ones.
    """
    cls = SAMPLER.get(name)
    fields = [f for f in cls.Spec.model_fields if f != "type"]
    unknown = sorted(set(options) - set(fields) - set(SAMPLE_CALL_OPTIONS))
    if unknown:
        valid = ", ".join(fields) if fields else "(none)"
        raise TypeError(
            f"sampler {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"its options are: {valid}; every sampler also takes: {', '.join(SAMPLE_CALL_OPTIONS)}"
        )
    spec = cls.Spec(**{k: v for k, v in options.items() if k in fields})
    call = {k: v for k, v in options.items() if k in SAMPLE_CALL_OPTIONS}
    return cls(spec)(denoiser, x, sigmas, **call)
