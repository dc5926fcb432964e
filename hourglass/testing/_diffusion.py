"""Checks of the diffusion families (private): denoiser, weighting, sigma_density, schedule, sampler.

Each family gets one check named after it; its failure message says which rule broke.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from hourglass.diffusion._checks import schedule_floats
from hourglass.diffusion.noise import NoiseSampler
from hourglass.diffusion.weighting import c_out_squared
from hourglass.registry import SCHEDULE, Registry
from hourglass.testing._common import BATCH, fail

__all__ = ["check_denoiser", "check_weighting", "check_sigma_density", "check_schedule", "check_sampler"]

#: noise levels of the weighting check: 1e-3 .. 1e3, the range HDiT's training density spans
_SIGMAS = torch.logspace(-3, 3, 13)
#: sigma of the sigma -> 0 limit of the denoiser check, and how far D(x; sigma) may be from x there:
#: with a bounded backbone output, EDM's preconditioning is off by O(sigma) = 1e-4; 1e-3 leaves room for
#: other parameterisations that reach x at first order in sigma
_SMALL_SIGMA, _LIMIT_TOL = 1e-4, 1e-3
#: relative tolerance of the weighting's consistency checks (float32 arithmetic, a few operations)
_WEIGHT_RTOL = 1e-5
#: relative tolerance of a schedule's end points (float64 maths rounded once to float32)
_SCHEDULE_RTOL = 1e-6
_MU, _S0 = 0.3, 0.4  # the Gaussian toy of the sampler check: data ~ N(_MU, _S0^2) per pixel
_MOMENT_TOL = 0.05  # sample mean and std within this of the data's (250 x 16 values)


# -- denoiser ------------------------------------------------------------------------------------------
class _ToyBackbone(nn.Module):
    """A bounded backbone ``F(x, sigma) = tanh(conv1x1(x) + ln(sigma))``; it records the keywords it gets."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)
        self.keywords: set[str] = set()

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        self.keywords.update(cond)
        return torch.tanh(self.proj(x) + sigma.log().view(-1, 1, 1, 1).to(x.dtype))


def check_denoiser(registry: Registry, spec: BaseModel, context: dict[str, Any], seed: int) -> list[str]:
    """``D(x, sigma, **cond)`` keeps shape and dtype, passes ``cond`` on, is finite, tends to ``x`` as
    sigma -> 0; ``loss(x0, noise, sigma, weighting, **cond)`` is ``(B,)``, finite, non-negative, scales
    with the weighting and trains the backbone."""
    fam, name = registry.family, spec.type  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    backbone = _ToyBackbone(3)
    denoiser = registry.build(spec, **{"model": backbone, **context})
    x = torch.randn(BATCH, 3, 8, 8) * 0.5
    for value in (0.02, 1.0, 80.0):
        sigma = torch.full((BATCH,), value)
        out = denoiser(x + value * torch.randn_like(x), sigma, class_cond=torch.zeros(BATCH, dtype=torch.int64))
        if not isinstance(out, Tensor) or out.shape != x.shape or out.dtype != x.dtype:
            raise fail(fam, name, "denoiser", f"D(x, sigma={value}) returned {getattr(out, 'shape', type(out).__name__)}"
                       f"; expected a float32 tensor of shape {tuple(x.shape)}")
        if not bool(torch.isfinite(out).all()):
            raise fail(fam, name, "denoiser", f"D(x, sigma={value}) has NaN or inf entries")
    if "class_cond" not in backbone.keywords:
        raise fail(fam, name, "denoiser", "D(x, sigma, class_cond=...) did not pass class_cond on to the backbone")
    gap = (denoiser(x, torch.full((BATCH,), _SMALL_SIGMA)) - x).abs().max().item()
    if not gap <= _LIMIT_TOL:
        raise fail(fam, name, "denoiser", f"D(x, sigma={_SMALL_SIGMA}) is {gap:.3g} away from x; as sigma -> 0 the "
                   f"denoised estimate must tend to x (tolerance {_LIMIT_TOL})")
    loss_fn = getattr(denoiser, "loss", None)
    if not callable(loss_fn):
        raise fail(fam, name, "denoiser", "it has no loss(x0, noise, sigma, weighting, **cond) method (the trainer's)")
    noise, sigma = torch.randn_like(x), torch.tensor([0.1, 5.0])
    loss = loss_fn(x, noise, sigma, lambda s, sd: torch.ones_like(s))
    if not isinstance(loss, Tensor) or loss.shape != (BATCH,) or not bool(torch.isfinite(loss).all()):
        raise fail(fam, name, "denoiser", f"loss(...) returned {getattr(loss, 'shape', loss)!r}; expected finite "
                   f"per-sample losses of shape ({BATCH},)")
    if not bool((loss >= 0).all()):
        raise fail(fam, name, "denoiser", f"loss(...) returned negative losses {loss.tolist()}")
    doubled = loss_fn(x, noise, sigma, lambda s, sd: torch.full_like(s, 2.0))
    if not torch.allclose(doubled, 2 * loss, rtol=_WEIGHT_RTOL):
        raise fail(fam, name, "denoiser", "doubling the weighting did not double the loss; the loss is "
                   "weighting(sigma, sigma_data) times the per-sample error")
    loss.sum().backward()
    if backbone.proj.weight.grad is None or not bool(backbone.proj.weight.grad.abs().sum() > 0):
        raise fail(fam, name, "denoiser", "loss(...).backward() gave the backbone's parameters no gradient")
    return ["denoiser"]


# -- weighting -----------------------------------------------------------------------------------------
def check_weighting(registry: Registry, spec: BaseModel, context: dict[str, Any], seed: int) -> list[str]:
    """``w(sigma (B,), sigma_data) -> (B,)``: positive, finite, dtype kept, sample by sample, and equal to
    ``x0_weight * c_out^2`` when the weighting gives its x0-space form."""
    fam, name = registry.family, spec.type  # type: ignore[attr-defined]
    weighting = registry.build(spec, **context)
    for sigma_data in (0.5, 1.0):
        for dtype in (torch.float32, torch.float64):
            sigma = _SIGMAS.to(dtype)
            w = weighting(sigma, sigma_data)
            where = f"(sigma in [1e-3, 1e3], sigma_data {sigma_data}, {dtype})"
            if not isinstance(w, Tensor) or w.shape != sigma.shape or w.dtype != dtype:
                raise fail(fam, name, "weighting", f"returned {getattr(w, 'shape', type(w).__name__)} "
                           f"{getattr(w, 'dtype', '')}; expected {dtype} of shape {tuple(sigma.shape)} {where}")
            if not bool((torch.isfinite(w) & (w > 0)).all()):
                raise fail(fam, name, "weighting", f"weights must be finite and positive, got {w.tolist()} {where}")
        # the consistency checks run in float64 (the last dtype above): sigma and w are float64 here
        one_by_one = torch.cat([weighting(sigma[i : i + 1], sigma_data) for i in range(len(sigma))])
        if not torch.allclose(one_by_one, w, rtol=_WEIGHT_RTOL):
            raise fail(fam, name, "weighting", "a sample's weight depends on the rest of the batch")
        x0_weight = getattr(weighting, "x0_weight", None)
        if callable(x0_weight):
            expected = x0_weight(sigma, sigma_data) * c_out_squared(sigma, sigma_data)
            if not torch.allclose(w, expected, rtol=_WEIGHT_RTOL):
                raise fail(fam, name, "weighting", "the F-space weight is not x0_weight(sigma) * c_out(sigma)^2 "
                           "(see hourglass.diffusion.weighting)")
    return ["weighting"]


# -- sigma density -------------------------------------------------------------------------------------
def check_sigma_density(registry: Registry, spec: BaseModel, context: dict[str, Any], seed: int) -> list[str]:
    """``sample(n, generator, device)`` as the trainer calls it: ``(n,)`` positive finite float32 draws,
    the same under the same seed, different under another, and the requested dtype."""
    fam, name = registry.family, spec.type  # type: ignore[attr-defined]
    density = registry.build(spec, **{"sigma_data": 0.5, "image_size": (32, 32), **context})

    def draw(n: int, seed_: int, **kwargs: Any) -> Tensor:
        return density.sample(n, generator=torch.Generator().manual_seed(seed_), device="cpu", **kwargs)

    n = 64
    sigma = draw(n, seed)
    if not isinstance(sigma, Tensor) or sigma.shape != (n,) or sigma.dtype != torch.float32:
        raise fail(fam, name, "sigma_density", f"sample({n}) returned {getattr(sigma, 'shape', type(sigma).__name__)} "
                   f"{getattr(sigma, 'dtype', '')}; expected float32 of shape ({n},)")
    if not bool((torch.isfinite(sigma) & (sigma > 0)).all()):
        bad = sigma[~(torch.isfinite(sigma) & (sigma > 0))][:4].tolist()
        raise fail(fam, name, "sigma_density", f"draws must be positive and finite, got {bad}")
    if not torch.equal(draw(n, seed), sigma):
        raise fail(fam, name, "sigma_density", "two draws from generators with the same seed differ; draw from the "
                   "generator (a resumed run must see the same noise levels)")
    if torch.equal(draw(n, seed + 1), sigma):
        raise fail(fam, name, "sigma_density", "generators with different seeds gave the same draws")
    if draw(1, seed).shape != (1,) or draw(n, seed, dtype=torch.float64).dtype != torch.float64:
        raise fail(fam, name, "sigma_density", "sample(1) is not of shape (1,) or sample(n, dtype=float64) not float64")
    return ["sigma_density"]


# -- schedule ------------------------------------------------------------------------------------------
def check_schedule(registry: Registry, spec: Any, context: dict[str, Any], seed: int) -> list[str]:
    """``schedule(n) -> (n + 1,)``: what every sampler accepts (finite, strictly decreasing, 0 only last),
    ending in 0, from ``sigma_max`` to ``sigma_min`` when the spec has them, in the requested dtype."""
    fam, name = registry.family, spec.type
    schedule = registry.build(spec, **context)
    bounds = (getattr(spec, "sigma_min", None), getattr(spec, "sigma_max", None))
    for n in (1, 2, 10, 50):
        sigmas = schedule(n)
        if not isinstance(sigmas, Tensor) or sigmas.shape != (n + 1,) or sigmas.dtype != torch.float32:
            raise fail(fam, name, "schedule", f"schedule({n}) returned {getattr(sigmas, 'shape', type(sigmas).__name__)}"
                       f" {getattr(sigmas, 'dtype', '')}; expected float32 of shape ({n + 1},)")
        try:
            values = schedule_floats(sigmas)
        except ValueError as exc:
            raise fail(fam, name, "schedule", f"schedule({n}): {exc}") from None
        if values[-1] != 0.0:
            raise fail(fam, name, "schedule", f"schedule({n}) ends in {values[-1]:g}; it must end in 0 (the clean image)")
        lo, hi = bounds
        if lo is not None and hi is not None:
            ends = (values[0], hi), *([(values[-2], lo)] if n > 1 else [])
            if not all(math.isclose(a, b, rel_tol=_SCHEDULE_RTOL) for a, b in ends):
                raise fail(fam, name, "schedule", f"schedule({n}) runs from {values[0]:g} to {values[-2]:g}; expected "
                           f"sigma_max {hi:g} to sigma_min {lo:g}")
    if schedule(5, dtype=torch.float64).dtype != torch.float64:
        raise fail(fam, name, "schedule", "schedule(n, dtype=torch.float64) is not float64")
    return ["schedule"]


# -- sampler -------------------------------------------------------------------------------------------
class _GaussianToy:
    """The exact denoiser of data ~ N(_MU, _S0^2): ``D(x; sigma) = (S0^2 x + sigma^2 MU) / (S0^2 + sigma^2)``."""

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        s = sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return (_S0**2 * x + s**2 * _MU) / (_S0**2 + s**2)


def check_sampler(registry: Registry, spec: BaseModel, context: dict[str, Any], seed: int, steps: int) -> list[str]:
    """``steps`` Karras steps on the Gaussian toy with its exact denoiser (see :func:`hourglass.testing.check_component`)."""
    fam, name = registry.family, spec.type  # type: ignore[attr-defined]
    sampler = registry.build(spec, **context)
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 20.0})(steps)
    seeds = list(range(250))
    x = torch.randn(250, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * float(sigmas[0])
    seen: list[int] = []
    noise_calls: list[int] = []
    source = NoiseSampler(seeds)

    def noise(like: Tensor) -> Tensor:
        noise_calls.append(1)
        return source(like)

    out = sampler(_GaussianToy(), x, sigmas, noise=noise, callback=lambda info: seen.append(info["i"]))
    if not isinstance(out, Tensor) or out.shape != x.shape or out.dtype != x.dtype:
        raise fail(fam, name, "sampler", f"returned {getattr(out, 'shape', type(out).__name__)}, expected a "
                   f"{x.dtype} tensor of shape {tuple(x.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise fail(fam, name, "sampler", "the samples have NaN or inf entries")
    if sorted(set(seen)) != list(range(steps)) or seen != sorted(seen):
        raise fail(fam, name, "sampler", f"the callback saw steps {seen}; expected every step 0..{steps - 1} in "
                   "order (call run.report once per step)")
    if not bool(getattr(sampler, "stochastic", False)) and noise_calls:
        raise fail(fam, name, "sampler", "its `stochastic` property is False but it drew noise")
    mean, std = out.mean().item(), out.std().item()
    if not (math.isclose(mean, _MU, abs_tol=_MOMENT_TOL) and math.isclose(std, _S0, abs_tol=_MOMENT_TOL)):
        raise fail(fam, name, "sampler", f"{steps} steps on data N({_MU}, {_S0}^2) with the exact denoiser gave "
                   f"samples of mean {mean:.3f} and std {std:.3f}")
    if not torch.equal(out, sampler(_GaussianToy(), x, sigmas, noise=NoiseSampler(seeds))):
        raise fail(fam, name, "sampler", "the same start and noise seeds gave different samples")
    return ["sampler"]
