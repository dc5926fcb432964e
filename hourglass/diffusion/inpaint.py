"""Image-to-image (SDEdit) and inpainting, usable with every sampler.

- **SDEdit** (Meng et al. 2022): noise the input image to ``sigma_start`` and run the sampler on
  the part of the schedule at or below it; ``strength`` in ``(0, 1]`` picks how much of the
  schedule is kept (1 = the whole schedule, i.e. an unconditional sample started from the image).
- **Inpainting, replacement method**: :class:`InpaintDenoiser` wraps the denoiser so that at
  every evaluation the known region of its input is replaced by the known image noised to the
  current sigma (``x_known + sigma * eps`` with the run's fixed noise ``eps``) and the known
  region of its output is the known image; every sampler therefore steps the known region along
  ``x_known + sigma * eps`` and fills the rest consistently. After the last step the known region
  is set to the known image exactly. Optional **RePaint-style resampling** (Lugmayr et al. 2022):
  after each segment of ``jump_length`` steps the result is re-noised back to the segment's start
  and the segment is sampled again, ``jumps`` extra times.

Masks: ``mask`` is 1 where pixels are **generated** and 0 where the known image is **kept**
(values in between blend); it broadcasts against ``(B, C, H, W)``, e.g. ``(B, 1, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from hourglass.diffusion._checks import check_image, schedule_floats
from hourglass.diffusion._sampler_base import Callback, NoiseFn
from hourglass.diffusion.denoiser import append_dims
from hourglass.diffusion.noise import NoiseSampler, initial_noise
from hourglass.registry import SAMPLER

__all__ = ["InpaintDenoiser", "image_to_image", "inpaint", "truncate_sigmas"]


def truncate_sigmas(
    sigmas: Tensor | Sequence[float], *, strength: float | None = None, sigma_start: float | None = None
) -> Tensor:
    """Keep the tail of a schedule for SDEdit.

    Args:
        sigmas: ``(n + 1,)`` a sampling schedule (decreasing, optional final 0).
        strength: in ``(0, 1]``: keep the last ``max(1, round(strength * n))`` steps.
        sigma_start: or: start at this noise level, followed by the entries below it.

    Returns:
        ``(m + 1,)`` the truncated schedule (dtype and device of ``sigmas`` when it is a tensor).
    """
    if (strength is None) == (sigma_start is None):
        raise ValueError("give exactly one of strength (in (0, 1]) or sigma_start (> 0)")
    values = schedule_floats(sigmas)
    n = len(values) - 1
    if strength is not None:
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1] (1 = the whole schedule), got {strength!r}")
        keep = max(1, round(strength * n))
        out = values[n - keep:]
    else:
        if not isinstance(sigma_start, (int, float)) or not math.isfinite(sigma_start) or sigma_start <= 0:
            raise ValueError(f"sigma_start must be a positive finite noise level, got {sigma_start!r}")
        out = [float(sigma_start)] + [v for v in values if v < sigma_start]
        if len(out) < 2:
            raise ValueError(f"sigma_start={sigma_start} leaves no step: the schedule has no level below it")
    like = sigmas if isinstance(sigmas, Tensor) else None
    return torch.tensor(
        out, dtype=like.dtype if like is not None else torch.float64, device=like.device if like is not None else None
    )


def _resolve_sampler(sampler: Any) -> Any:
    if isinstance(sampler, (str, dict, BaseModel)):
        return SAMPLER.build(sampler)
    if callable(sampler):
        return sampler
    raise TypeError(
        f"sampler must be a name ({', '.join(SAMPLER.names())}), a spec or a sampler instance, "
        f"got {type(sampler).__name__}"
    )


def _start_noise(
    x: Tensor, seeds: Sequence[int] | None, init_noise: Tensor | None, noise: NoiseFn | None
) -> tuple[Tensor, NoiseFn]:
    """The fixed starting noise ``eps (B, C, H, W)`` and the noise source for the sampler."""
    if init_noise is not None:
        if init_noise.shape != x.shape:
            raise ValueError(f"init_noise must have shape {tuple(x.shape)}, got {tuple(init_noise.shape)}")
        eps = init_noise.to(x)
    elif seeds is not None:
        if len(seeds) != x.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {x.shape[0]}; give one seed per sample")
        eps = initial_noise(seeds, x.shape[1:], device=x.device, dtype=x.dtype)
    else:
        eps = torch.randn_like(x)
    if noise is None:
        noise = NoiseSampler(seeds) if seeds is not None else torch.randn_like
    return eps, noise


def _check_mask(mask: Tensor, x: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor broadcastable to {tuple(x.shape)}, got {type(mask).__name__}")
    try:
        shape = torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the images {tuple(x.shape)}; "
            "use (B, 1, H, W) or (1, 1, H, W)"
        )
    mask = mask.to(device=x.device, dtype=x.dtype)
    if bool(((mask < 0) | (mask > 1)).any()):
        raise ValueError("mask values must lie in [0, 1] (1 = generate, 0 = keep the known image)")
    return mask


class InpaintDenoiser(nn.Module):
    """Replacement-method inpainting as a denoiser wrapper.

    Args:
        denoiser: ``D(x, sigma, **cond)``.
        x_known: ``(B, C, H, W)`` the known image.
        mask: broadcastable to ``(B, C, H, W)``; 1 = generate, 0 = keep.
        noise: ``(B, C, H, W)`` the fixed standard normal noise of the known region.
    """

    def __init__(self, denoiser: Any, x_known: Tensor, mask: Tensor, noise: Tensor) -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable D(x, sigma, **cond), got {type(denoiser).__name__}")
        check_image(x_known, what="x_known")
        if noise.shape != x_known.shape:
            raise ValueError(f"noise must have the shape of x_known {tuple(x_known.shape)}, got {tuple(noise.shape)}")
        self.denoiser = denoiser
        self.x_known = x_known
        self.mask = _check_mask(mask, x_known)
        self.noise = noise

    def known_at(self, sigma: Tensor | float) -> Tensor:
        """The known image noised to ``sigma`` (``(B,)`` or a float): ``x_known + sigma * noise``."""
        if isinstance(sigma, Tensor):
            sigma = append_dims(sigma.reshape(-1), self.x_known.ndim)
        return self.x_known + sigma * self.noise

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        """Denoise ``x`` with the known region of input and output replaced. Shapes ``(B, C, H, W)``."""
        x_in = torch.lerp(self.known_at(sigma).to(x.dtype), x, self.mask)
        denoised = self.denoiser(x_in, sigma, **cond)
        return torch.lerp(self.x_known.to(denoised.dtype), denoised, self.mask)


def image_to_image(
    sampler: Any,
    denoiser: Any,
    x_init: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    strength: float = 0.75,
    seeds: Sequence[int] | None = None,
    init_noise: Tensor | None = None,
    noise: NoiseFn | None = None,
    callback: Callback | None = None,
    disable_progress: bool = True,
    extra_args: dict[str, Any] | None = None,
) -> Tensor:
    """SDEdit: noise ``x_init`` to ``sigma_start`` and sample from there.

    Args:
        sampler: a sampler name, spec or instance.
        denoiser: ``D(x, sigma, **cond)``.
        x_init: ``(B, C, H, W)`` the starting images.
        sigmas: the full schedule; :func:`truncate_sigmas` keeps its last ``strength`` part.
        strength: in ``(0, 1]``; larger changes the image more.
        seeds: one per sample, for batch-size-invariant noise (starting noise and sampler noise).
        init_noise: ``(B, C, H, W)`` explicit standard normal starting noise (overrides seeds).
        noise: the sampler's noise source (default: ``NoiseSampler(seeds)`` or ``torch.randn_like``).
        callback, disable_progress, extra_args: passed to the sampler.

    Returns:
        ``(B, C, H, W)``.
    """
    check_image(x_init, what="x_init")
    run_sampler = _resolve_sampler(sampler)
    values = schedule_floats(truncate_sigmas(sigmas, strength=strength))
    eps, noise_fn = _start_noise(x_init, seeds, init_noise, noise)
    x = x_init + values[0] * eps
    return run_sampler(
        denoiser, x, values, noise=noise_fn, callback=callback, disable_progress=disable_progress,
        extra_args=extra_args,
    )


def inpaint(
    sampler: Any,
    denoiser: Any,
    x_known: Tensor,
    mask: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    strength: float = 1.0,
    jumps: int = 0,
    jump_length: int = 1,
    seeds: Sequence[int] | None = None,
    init_noise: Tensor | None = None,
    noise: NoiseFn | None = None,
    callback: Callback | None = None,
    disable_progress: bool = True,
    extra_args: dict[str, Any] | None = None,
) -> Tensor:
    """Fill the masked region of ``x_known`` (replacement method, optional RePaint resampling).

    Args:
        sampler: a sampler name, spec or instance.
        denoiser: ``D(x, sigma, **cond)``.
        x_known: ``(B, C, H, W)`` the known images (any values where ``mask`` is 1).
        mask: broadcastable to ``(B, C, H, W)``; 1 = generate, 0 = keep.
        sigmas: the schedule.
        strength: 1 starts the masked region from pure noise; below 1 it starts from ``x_known``
            noised to the truncated schedule's first level (SDEdit inside the mask).
        jumps: RePaint resampling: how many extra times each segment is re-noised and redone.
        jump_length: steps per resampled segment.
        seeds: one per sample, for batch-size-invariant noise.
        init_noise: ``(B, C, H, W)`` explicit standard normal noise (overrides seeds).
        noise: the sampler's (and re-noising) noise source.
        callback: as for the sampler, with ``i`` counted over the whole schedule.
        disable_progress, extra_args: passed to the sampler.

    Returns:
        ``(B, C, H, W)``, equal to the known image where ``mask`` is 0 (at a final sigma of 0).
    """
    check_image(x_known, what="x_known")
    for name, v, low in (("jumps", jumps, 0), ("jump_length", jump_length, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    run_sampler = _resolve_sampler(sampler)
    values = schedule_floats(sigmas if strength == 1 else truncate_sigmas(sigmas, strength=strength))
    eps, noise_fn = _start_noise(x_known, seeds, init_noise, noise)
    wrapped = InpaintDenoiser(denoiser, x_known, mask, eps)
    start = x_known if strength < 1 else torch.zeros_like(x_known)
    x = torch.lerp(wrapped.known_at(values[0]), start + values[0] * eps, wrapped.mask)
    kwargs = {"noise": noise_fn, "disable_progress": disable_progress, "extra_args": extra_args}
    if jumps == 0:
        x = run_sampler(wrapped, x, values, callback=callback, **kwargs)
    else:
        n = len(values) - 1
        for first in range(0, n, jump_length):
            segment = values[first:min(first + jump_length, n) + 1]
            shifted = _offset_callback(callback, first)
            for repeat in range(jumps + 1):
                x = run_sampler(wrapped, x, segment, callback=shifted, **kwargs)
                if repeat < jumps:  # RePaint: diffuse back to the segment's start and redo it
                    x = x + noise_fn(x) * math.sqrt(segment[0] ** 2 - segment[-1] ** 2)
            x = torch.lerp(wrapped.known_at(segment[-1]).to(x.dtype), x, wrapped.mask)
    return torch.lerp(wrapped.known_at(values[-1]).to(x.dtype), x, wrapped.mask)


def _offset_callback(callback: Callback | None, offset: int) -> Callback | None:
    if callback is None:
        return None
    return lambda info: callback({**info, "i": info["i"] + offset})
