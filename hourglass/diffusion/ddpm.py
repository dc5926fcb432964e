"""Variance-preserving DDPM denoisers: noise (eps) and v prediction over DDPM beta schedules.

The official DiT (Peebles & Xie 2023) and U-ViT (Bao et al. 2023) checkpoints are DDPM models: a
network ``net(x_t, t)`` trained on ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` to predict
``eps`` (or, with v-prediction, ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0``). Every sampler here
works on the variance-exploding form ``x = x0 + sigma eps`` (Karras et al. 2022). The two are one
process: dividing ``x_t`` by ``sqrt(abar_t)`` gives ``x = x0 + sigma eps`` with

``sigma_t = sqrt((1 - abar_t) / abar_t)``, and back: ``x_t = c_in x`` with ``c_in = 1 / sqrt(1 + sigma^2)``.

So, as k-diffusion's ``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser`` (``external.py``) do:

* eps: ``D(x; sigma) = x - sigma * eps_hat(c_in x, t(sigma))``;
* v: ``D(x; sigma) = c_skip x + c_out v_hat(c_in x, t(sigma))`` with ``c_skip = 1 / (1 + sigma^2)``,
  ``c_out = -sigma / sqrt(1 + sigma^2)``;

where ``t(sigma)`` maps a noise level to the model's timestep like k-diffusion's ``DiscreteSchedule``:
``log sigma`` is interpolated linearly between the schedule's steps (``sigma_to_t``; ``t_to_sigma``
the other way), or, with ``quantize = true``, rounded to the nearest step. Any sampler, classifier-free
guidance and inpainting then run on these models unchanged.

**Schedules** (``schedule``, ``timesteps = N`` steps, 1000 by default; ``beta_start``/``beta_end``
override the defaults):

| schedule | betas | used by |
|---|---|---|
| ``linear`` | ``linspace(beta_start, beta_end, N)``, default ``0.1 / N .. 20 / N`` (``1e-4 .. 0.02`` at 1000) | DDPM, ADM, DiT |
| ``scaled_linear`` | ``linspace(sqrt(beta_start), sqrt(beta_end), N)^2``, default ``0.00085 .. 0.012`` | Stable Diffusion, U-ViT-H |
| ``cosine`` | ``min(1 - abar(i+1)/abar(i), 0.999)``, ``abar(s) = cos((s/N + 0.008) / 1.008 * pi/2)^2`` | improved DDPM |
| ``continuous_linear`` | continuous time ``s`` in ``[0, 1]``: ``abar(s) = exp(-(b0 s + (b1 - b0) s^2 / 2))``, ``b0, b1`` = ``beta_start, beta_end`` (default ``0.1, 20``) | U-ViT's VP-SDE models (Song et al. 2021) |

``abar_k = prod_{i <= k} (1 - beta_i)``, ``k = 0 .. N-1``. **Timesteps**: the model receives
``t + t_offset`` where ``t`` in ``[0, N - 1]`` is the step index (DiT: ``t_offset = 0``, its
``t`` in ``0..999``; U-ViT's discrete models count from 1: ``t_offset = 1``). For
``continuous_linear`` the model receives ``(N - 1) s`` (U-ViT feeds ``999 s``). The model must take
timesteps (``time_input = "timestep"`` in its spec, see :func:`hourglass.models.base.time_input_of`);
a model that takes noise levels gets ``sigma`` instead.

**Learned sigma.** A backbone with more output channels than the image has (DiT's 8 = 4 eps + 4
variance channels) is fine: only the first ``C`` output channels are read, by sampling and by the loss.
The loss is the noise-prediction MSE ``mean((eps_hat - eps)^2)`` over those ``C`` channels (DDPM's
``L_simple``, with ``weighting = "snr"``); DiT's variational-bound term that trains the variance
channels (``L_vlb`` of its hybrid loss) is **not implemented**, so training leaves those channels as they
are, and sampling never uses them (the samplers here are not DDPM's ancestral sampler with a learned
variance).

**Training densities.** :class:`DDPMTimestepDensity` (``sigma_density = "ddpm_timesteps"``) draws the
timestep uniformly over the denoiser's steps (DDPM's training distribution; stratified over the batch)
and returns its sigma.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from hourglass.diffusion._checks import check_image, check_sigma
from hourglass.diffusion.denoiser import Denoiser, WeightingLike, append_dims
from hourglass.diffusion.sigma_density import SigmaDensity
from hourglass.registry import DENOISER, SIGMA_DENSITY, WEIGHTING
from hourglass.spec import Spec

__all__ = [
    "SCHEDULES", "beta_schedule", "alphas_cumprod", "DDPMSchedule",
    "DDPMDenoiser", "DDPMDenoiserSpec", "DDPMTimestepDensity", "DDPMTimestepDensitySpec",
]

ScheduleName = Literal["linear", "scaled_linear", "cosine", "continuous_linear"]
#: the beta schedules and their default ``(beta_start, beta_end)`` (None: the schedule has none)
SCHEDULES: dict[str, tuple[float, float] | None] = {
    "linear": None,  # 0.1 / N, 20 / N: scales with N as ADM's and DiT's "linear" does
    "scaled_linear": (0.00085, 0.012),
    "cosine": None,
    "continuous_linear": (0.1, 20.0),
}


def _linear_defaults(n: int) -> tuple[float, float]:
    return 0.1 / n, 20.0 / n


def beta_schedule(name: str, n: int = 1000, beta_start: float | None = None, beta_end: float | None = None) -> Tensor:
    """The ``n`` betas of a discrete DDPM schedule, float64.

    Args:
        name: ``"linear"``, ``"scaled_linear"`` or ``"cosine"`` (see the module docstring).
        n: number of steps.
        beta_start, beta_end: first and last beta (linear schedules; default: the schedule's).
    Returns:
        ``(n,)`` float64 betas in ``(0, 1)``.
    """
    if name == "linear":
        lo, hi = _linear_defaults(n)
        return torch.linspace(beta_start or lo, beta_end or hi, n, dtype=torch.float64)
    if name == "scaled_linear":
        lo, hi = SCHEDULES["scaled_linear"]  # type: ignore[misc]
        lo, hi = beta_start or lo, beta_end or hi
        return torch.linspace(lo**0.5, hi**0.5, n, dtype=torch.float64) ** 2
    if name == "cosine":
        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=torch.float64)
    raise ValueError(f"unknown discrete beta schedule {name!r}; use linear, scaled_linear or cosine")


def alphas_cumprod(betas: Tensor) -> Tensor:
    """``abar_k = prod_{i <= k} (1 - beta_i)``, same shape and dtype as ``betas``."""
    return torch.cumprod(1 - betas, dim=0)


class DDPMSchedule:
    """The map between noise levels and model timesteps of a DDPM schedule (k-diffusion's ``DiscreteSchedule``).

    Tables are float64 on the CPU and copied (float64; float32 where a device lacks it) to the device
    of the first tensor they meet; nothing synchronises with the host.

    Args:
        schedule: a schedule name (see :data:`SCHEDULES`).
        timesteps: number of steps ``N``.
        beta_start, beta_end: override the schedule's defaults.
    """

    def __init__(self, schedule: str, timesteps: int = 1000, beta_start: float | None = None,
                 beta_end: float | None = None) -> None:
        self.schedule = schedule
        self.timesteps = int(timesteps)
        self.continuous = schedule == "continuous_linear"
        if self.continuous:
            b0, b1 = SCHEDULES["continuous_linear"]  # type: ignore[misc]
            self.b0, self.b1 = float(beta_start or b0), float(beta_end or b1)
            # N levels at s = 1/N, 2/N, ..., 1 (the range U-ViT's DPM-Solver samples over)
            self.sigmas = self._sigma_of_s(torch.arange(1, self.timesteps + 1, dtype=torch.float64) / self.timesteps)
        else:
            abar = alphas_cumprod(beta_schedule(schedule, self.timesteps, beta_start, beta_end))
            self.sigmas = ((1 - abar) / abar) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self._cache: dict[tuple[str, Any], Tensor] = {}

    # -- tables ------------------------------------------------------------------------------------
    def _log_sigmas_on(self, device: torch.device) -> Tensor:
        key = (device.type, device.index)
        table = self._cache.get(key)
        if table is None:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            table = self._cache[key] = self.log_sigmas.to(device=device, dtype=dtype)
        return table

    @property
    def sigma_min(self) -> float:
        """The smallest noise level: step 0 (``continuous_linear``: ``s = 1 / N``)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """The largest noise level: step ``N - 1`` (``continuous_linear``: ``s = 1``)."""
        return float(self.sigmas[-1])

    # -- continuous time -----------------------------------------------------------------------------
    def _sigma_of_s(self, s: Tensor) -> Tensor:
        """``sigma(s) = sqrt(exp(b0 s + (b1 - b0) s^2 / 2) - 1)`` of the continuous linear VP SDE."""
        return torch.expm1(self.b0 * s + (self.b1 - self.b0) * s**2 / 2).sqrt()

    def _s_of_sigma(self, sigma: Tensor) -> Tensor:
        """The inverse of :meth:`_sigma_of_s`: the root of ``(b1 - b0)/2 s^2 + b0 s - ln(1 + sigma^2) = 0``."""
        a = self.b1 - self.b0
        if a == 0:
            return torch.log1p(sigma**2) / self.b0
        return (torch.sqrt(self.b0**2 + 2 * a * torch.log1p(sigma**2)) - self.b0) / a

    # -- the maps -----------------------------------------------------------------------------------
    def sigma_to_t(self, sigma: Tensor, quantize: bool = False) -> Tensor:
        """Timestep ``t`` in ``[0, N - 1]`` of noise levels (shape kept, float64 where the device has it).

        Discrete schedules interpolate ``log sigma`` linearly between steps (clamped to the table's
        ends), or take the nearest step in ``log sigma`` with ``quantize``; ``continuous_linear``
        inverts ``sigma(s)`` exactly and returns ``(N - 1) s`` with ``s`` clamped to ``[0, 1]``.
        """
        if self.continuous:
            if quantize:
                raise ValueError("quantize needs a discrete schedule; continuous_linear has no steps to round to")
            s = self._s_of_sigma(sigma.to(torch.float32 if sigma.device.type == "mps" else torch.float64))
            return s.clamp(0, 1) * (self.timesteps - 1)
        table = self._log_sigmas_on(sigma.device)
        log_sigma = sigma.to(table.dtype).log().reshape(-1)
        if quantize:
            idx = (log_sigma[None, :] - table[:, None]).abs().argmin(dim=0)
            return idx.to(table.dtype).view(sigma.shape)
        # searchsorted(table, log_sigma, right=True) written as a count, which torch.onnx exports
        low = ((table[:, None] <= log_sigma[None, :]).sum(dim=0) - 1).clamp(0, table.shape[0] - 2)
        lo, hi = table[low], table[low + 1]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * (low + 1)).view(sigma.shape)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Noise levels of timesteps ``t`` in ``[0, N - 1]`` (interpolated in ``log sigma`` between steps)."""
        if self.continuous:
            t = t.to(torch.float64 if t.device.type != "mps" else torch.float32)
            return self._sigma_of_s(t.clamp(0, self.timesteps - 1) / (self.timesteps - 1))
        table = self._log_sigmas_on(t.device)
        t = t.to(table.dtype).clamp(0, table.shape[0] - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t - low
        return ((1 - w) * table[low] + w * table[high]).exp()

    def get_sigmas(self, n: int | None = None) -> Tensor:
        """The schedule's own noise levels, high to low, then 0 (k-diffusion's ``get_sigmas``).

        Args:
            n: number of levels (``t`` evenly spaced from ``N - 1`` down to 0; ``continuous_linear``: ``s``
                from 1 down to ``1 / N``); None: every step.
        """
        if n is None:
            return torch.cat([self.sigmas.flip(0), self.sigmas.new_zeros(1)])
        if self.continuous:
            sigmas = self._sigma_of_s(torch.linspace(1, 1 / self.timesteps, n, dtype=torch.float64))
        else:
            sigmas = self.t_to_sigma(torch.linspace(self.timesteps - 1, 0, n, dtype=torch.float64))
        return torch.cat([sigmas, sigmas.new_zeros(1)])


class DDPMDenoiserSpec(Spec):
    """``diffusion.denoiser = {type = "ddpm", ...}``: a discrete-time VP (DDPM) model's preconditioning."""

    type: Literal["ddpm"] = "ddpm"
    prediction: Literal["eps", "v"] = Field(
        "eps", description="what the network predicts: the noise (eps; DiT, U-ViT) or v (sqrt(abar) eps - "
        "sqrt(1 - abar) x0)"
    )
    schedule: ScheduleName = Field(
        "linear", description="beta schedule: linear (DDPM/DiT), scaled_linear (Stable Diffusion, U-ViT-H), "
        "cosine (improved DDPM) or continuous_linear (U-ViT's continuous-time VP SDE)"
    )
    timesteps: int = Field(1000, ge=2, description="number of discrete steps N")
    beta_start: float | None = Field(
        None, gt=0, description="first beta (continuous_linear: beta(0)); None = the schedule's default "
        "(linear 0.1/N, scaled_linear 0.00085, continuous_linear 0.1)"
    )
    beta_end: float | None = Field(
        None, gt=0, description="last beta (continuous_linear: beta(1)); None = the schedule's default "
        "(linear 20/N, scaled_linear 0.012, continuous_linear 20)"
    )
    t_offset: float = Field(
        0.0, ge=0, description="added to the step index t in [0, N-1] given to the network: 0 for DiT (t in 0..999), "
        "1 for U-ViT's discrete-time models (n in 1..1000)"
    )
    quantize: bool = Field(False, description="round the timestep to the nearest step (discrete schedules only)")
    sigma_data: float = Field(
        1.0, gt=0, description="data standard deviation the weighting and the training density are built with "
        "(the VP maths do not use it)"
    )

    @model_validator(mode="after")
    def _check(self) -> DDPMDenoiserSpec:
        if self.schedule == "continuous_linear":
            if self.quantize:
                raise ValueError("quantize = true needs a discrete schedule; continuous_linear has no steps")
            b0, b1 = SCHEDULES["continuous_linear"]  # type: ignore[misc]
            if (self.beta_end or b1) < (self.beta_start or b0):
                raise ValueError(f"beta_end ({self.beta_end or b1}) must be at least beta_start ({self.beta_start or b0})")
        elif self.schedule != "cosine":
            for name in ("beta_start", "beta_end"):
                value = getattr(self, name)
                if value is not None and not value < 1:
                    raise ValueError(f"{name} = {value}: a discrete schedule's betas lie in (0, 1)")
            if self.schedule == "linear" and self.beta_end is None and not 20.0 / self.timesteps < 1:
                raise ValueError(f"the linear schedule's default beta_end 20 / timesteps is {20.0 / self.timesteps:g} at "
                                 f"{self.timesteps} steps; betas lie in (0, 1): use more than 20 steps or set beta_end")
        elif self.beta_start is not None or self.beta_end is not None:
            raise ValueError("the cosine schedule has no beta_start / beta_end; remove them")
        return self


def _model_time_input(model: Any) -> str:
    from hourglass.models.base import time_input_of

    return time_input_of(model)


@DENOISER.register("ddpm")
class DDPMDenoiser(Denoiser):
    """Discrete-time VP (DDPM) preconditioning around a noise- or v-predicting backbone (see the module docstring).

    Args:
        spec: the denoiser spec.
        model: the backbone ``model(x_t, t, **cond)``; it receives timesteps when its spec's time input is
            ``"timestep"`` (official DiT/U-ViT checkpoints), else the noise level ``sigma``.

    Attributes:
        schedule: the :class:`DDPMSchedule` (``sigma_to_t``, ``t_to_sigma``, ``sigma_min``, ``sigma_max``).
    """

    Spec = DDPMDenoiserSpec
    time_inputs: ClassVar[tuple[str, ...]] = ("log_sigma", "timestep")
    drops_extra_channels: ClassVar[bool] = True
    has_timesteps: ClassVar[bool] = True

    def __init__(self, spec: DDPMDenoiserSpec, model: nn.Module | Any, **context: Any) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be a callable backbone model(x, t, **cond), got {type(model).__name__}")
        self.spec = spec
        self.sigma_data = spec.sigma_data
        self.inner_model = model
        self.schedule = DDPMSchedule(spec.schedule, spec.timesteps, spec.beta_start, spec.beta_end)
        self.takes_timesteps = _model_time_input(model) == "timestep"

    # -- the schedule ---------------------------------------------------------------------------------
    @property
    def sigma_min(self) -> float:
        """The schedule's smallest noise level (a sampling schedule's natural ``sigma_min``)."""
        return self.schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        """The schedule's largest noise level (a sampling schedule's natural ``sigma_max``)."""
        return self.schedule.sigma_max

    def sigma_to_t(self, sigma: Tensor, quantize: bool | None = None) -> Tensor:
        """Step index ``t`` in ``[0, N - 1]`` of ``sigma`` (without ``t_offset``); see :class:`DDPMSchedule`."""
        return self.schedule.sigma_to_t(sigma, self.spec.quantize if quantize is None else quantize)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Noise level of step index ``t`` in ``[0, N - 1]``."""
        return self.schedule.t_to_sigma(t)

    def model_time(self, sigma: Tensor) -> Tensor:
        """What the backbone receives at ``sigma``: ``t(sigma) + t_offset`` (or, for a backbone that takes
        noise levels, ``sigma``, quantized to the nearest step with ``quantize``), in ``sigma``'s dtype."""
        if self.takes_timesteps:
            return (self.sigma_to_t(sigma) + self.spec.t_offset).to(sigma.dtype)
        if self.spec.quantize:
            return self.t_to_sigma(self.sigma_to_t(sigma)).to(sigma.dtype)
        return sigma

    # -- the preconditioning --------------------------------------------------------------------------
    def get_scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in)`` at ``sigma (B,)``: eps ``(1, -sigma, 1/sqrt(1+sigma^2))``; v ``(1/(1+sigma^2),
        -sigma/sqrt(1+sigma^2), 1/sqrt(1+sigma^2))``."""
        c_in = 1 / (sigma**2 + 1) ** 0.5
        if self.spec.prediction == "eps":
            return torch.ones_like(sigma), -sigma, c_in
        return 1 / (sigma**2 + 1), -sigma * c_in, c_in

    def _prepare(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        check_image(x)
        if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            sigma = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=dtype)
        sigma = check_sigma(sigma, x.shape[0]).expand(x.shape[0])
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.get_scalings(sigma))
        return sigma, c_skip, c_out, c_in

    def _predict(self, x_in: Tensor, sigma: Tensor, channels: int, cond: dict[str, Any]) -> Tensor:
        """The backbone's prediction: its first ``channels`` output channels (learned-sigma channels dropped)."""
        out = self.inner_model(x_in, self.model_time(sigma), **cond)
        if out.shape[1] < channels:
            raise ValueError(f"the backbone returned {out.shape[1]} channels for a {channels}-channel image; it must "
                             f"return at least {channels} (the prediction; more are ignored, e.g. DiT's learned sigma)")
        return out[:, :channels] if out.shape[1] > channels else out

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        """The denoised estimate: eps ``x - sigma eps_hat``, v ``c_skip x + c_out v_hat``.

        Args:
            x: ``(B, C, H, W)`` noisy images (variance-exploding form ``x0 + sigma eps``).
            sigma: ``(B,)`` noise levels (or one value), positive and finite.
            **cond: passed to the backbone (``class_cond``, ...).
        Returns:
            ``(B, C, H, W)``.
        """
        sigma, c_skip, c_out, c_in = self._prepare(x, sigma)
        pred = self._predict(c_in * x, sigma, x.shape[1], cond)
        return c_skip * x + c_out * pred

    def loss(self, x0: Tensor, noise: Tensor, sigma: Tensor, weighting: WeightingLike = "snr", **cond: Any) -> Tensor:
        """Per-sample loss: the MSE of the prediction (``eps`` or ``v``) over the image's ``C`` channels.

        ``w(sigma) * mean_{C,H,W}((pred(c_in x_s, t(sigma)) - target)^2)`` with ``x_s = x0 + sigma noise``
        and target ``noise`` (eps) or ``(x0 - c_skip x_s) / c_out`` (v). A weighting from the ``WEIGHTING``
        registry (a name, spec or object) is applied through its x0-space form: ``w = x0_weight(sigma) *
        c_out^2`` (``c_out^2 = sigma^2`` for eps), so ``"snr"`` gives DDPM's plain eps-MSE ``L_simple``
        and, for v-prediction, ``"edm"`` with ``sigma_data = 1`` the plain v-MSE. A plain callable
        ``(sigma, sigma_data) -> (B,)`` weights the prediction MSE directly. Output channels beyond
        ``C`` (DiT's learned variance) get no loss: DiT's ``L_vlb`` term is not implemented.

        Args:
            x0: ``(B, C, H, W)`` clean images.
            noise: ``(B, C, H, W)`` standard normal noise.
            sigma: ``(B,)`` noise levels.
            weighting: see above; default ``"snr"`` (``L_simple`` for eps).
            **cond: passed to the backbone.
        Returns:
            ``(B,)``.
        """
        check_image(x0, what="x0")
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}; "
                             "draw it with torch.randn_like(x0)")
        sigma, c_skip, c_out, c_in = self._prepare(x0, sigma)
        x_s = x0 + noise * append_dims(sigma, x0.ndim)
        pred = self._predict(c_in * x_s, sigma, x0.shape[1], cond)
        target = noise if self.spec.prediction == "eps" else (x0 - c_skip * x_s) / c_out
        mse = (pred - target).pow(2).flatten(1).mean(1)
        return mse * self._weight(weighting, sigma)

    def _weight(self, weighting: WeightingLike, sigma: Tensor) -> Tensor:
        if isinstance(weighting, (str, dict, BaseModel)):
            weighting = WEIGHTING.build(weighting)
        x0_weight = getattr(weighting, "x0_weight", None)
        if callable(x0_weight):
            c_out_sq = sigma**2 if self.spec.prediction == "eps" else sigma**2 / (sigma**2 + 1)
            return x0_weight(sigma, self.sigma_data) * c_out_sq
        if callable(weighting):
            return weighting(sigma, self.sigma_data)
        raise TypeError(f"weighting must be a name ({', '.join(WEIGHTING.names())}), a spec or a callable "
                        f"(sigma, sigma_data) -> (B,), got {type(weighting).__name__}")

    def extra_repr(self) -> str:
        s = self.spec
        return (f"prediction={s.prediction}, schedule={s.schedule}, timesteps={s.timesteps}, t_offset={s.t_offset}, "
                f"quantize={s.quantize}, model_takes={'timesteps' if self.takes_timesteps else 'sigma'}")


# -- training noise levels ---------------------------------------------------------------------------
class DDPMTimestepDensitySpec(Spec):
    type: Literal["ddpm_timesteps"] = "ddpm_timesteps"


@SIGMA_DENSITY.register("ddpm_timesteps")
class DDPMTimestepDensity(SigmaDensity):
    """DDPM's training distribution: a timestep uniform over the ``ddpm`` denoiser's steps, as its sigma.

    ``u`` (stratified over the batch) gives the step ``floor(u N)`` of a discrete schedule, or
    ``s = u`` in ``(0, 1)`` of ``continuous_linear`` (U-ViT's ``t ~ U(0, 1)``). Context at build:
    ``denoiser``, the recipe's ``ddpm`` denoiser (the trainer passes it); without one, the default
    ``ddpm`` schedule (linear, 1000 steps) is used.
    """

    Spec = DDPMTimestepDensitySpec
    draws_timesteps: ClassVar[bool] = True

    def __init__(self, spec: DDPMTimestepDensitySpec, *, denoiser: Any = None, **context: Any) -> None:
        super().__init__(spec)
        if denoiser is None:
            schedule = DDPMSchedule("linear")
        else:
            schedule = getattr(denoiser, "schedule", None)
            if not isinstance(schedule, DDPMSchedule):
                raise ValueError(f"the ddpm_timesteps density draws the timesteps of a ddpm denoiser; the recipe's "
                                 f"denoiser ({type(denoiser).__name__}) has none: set diffusion.denoiser.type = "
                                 "\"ddpm\" or choose another sigma_density")
        self.schedule = schedule

    def icdf(self, u: Tensor) -> Tensor:
        n = self.schedule.timesteps
        if self.schedule.continuous:
            return self.schedule.t_to_sigma(u.double() * (n - 1)).to(u.dtype)
        step = (u.double() * n).floor().clamp(0, n - 1)
        return self.schedule.t_to_sigma(step).to(u.dtype)
