"""Training noise-level densities (HDiT, Crowson et al. 2024, arXiv 2401.11605: Sec. 3.1 and Table 7).

Every density maps uniform numbers ``u`` in ``(0, 1)`` to noise levels through its inverse CDF
(:meth:`icdf`). :meth:`sample` draws ``u`` **stratified** over the batch, ``u_i = (i + U_i) / n``
with ``U_i ~ U[0, 1)``, in a random order, so every batch covers the whole noise range (one draw per
stratum of width ``1/n``), which lowers the variance of the loss estimate.

HDiT trains with the **cosine-interpolated** density of simple diffusion (Hoogeboom et al. 2023):
the log-SNR of a cosine schedule, shifted for a noise resolution ``n`` at image size ``D`` by
``h = 2 ln(n / D)``, interpolated from ``n = 32`` at ``t = 0`` to ``n = D`` at ``t = 1``; its median
sigma is 0.50 at 32 px, 1.41 at 256 px and 2.81 at 1024 px. The HDiT paper names the density
("interpolated cosine", sigma in [1e-3, 1e3], sigma_data 0.5: Table 7); the formulas and the defaults
``noise_d_low = 32``, ``noise_d_high = D`` are those of the authors' k-diffusion
(``rand_cosine_interpolated``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from hourglass.registry import SIGMA_DENSITY, Contract
from hourglass.spec import Spec

__all__ = [
    "SigmaDensity",
    "CosineInterpolatedDensity", "CosineInterpolatedDensitySpec",
    "LogNormalDensity", "LogNormalDensitySpec",
    "LogUniformDensity", "LogUniformDensitySpec",
    "stratified_uniform",
]

# keep u off 0 and 1 so inverse CDFs stay finite
_U_EPS = 1e-7


def stratified_uniform(
    n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``n`` stratified uniform numbers in a random order: one in each ``[i/n, (i+1)/n)``.

    Args:
        n: how many (the batch size), ``>= 1``.
        generator: optional generator for reproducible draws (its device is used for the draws).
        device: where the result lives.
        dtype: the result's dtype.

    Returns:
        ``(n,)``.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int (the number of sigmas to draw), got {n!r}")
    gen_device = generator.device if generator is not None else (device or "cpu")
    offsets = torch.arange(n, device=gen_device, dtype=torch.float64)
    jitter = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64)
    order = torch.randperm(n, generator=generator, device=gen_device)
    u = ((offsets + jitter) / n)[order]
    return u.to(device=device if device is not None else gen_device, dtype=dtype)


class SigmaDensity(Contract):
    """Contract and base of the ``sigma_density`` family: ``icdf(u) -> sigma``; :meth:`sample` feeds it
    stratified ``u``. Built with context ``sigma_data``, ``image_size`` and (by the trainer) ``denoiser``."""

    Spec: type[Spec]
    #: whether it draws the timesteps of the recipe's denoiser (which must then have them:
    #: :attr:`hourglass.diffusion.denoiser.Denoiser.has_timesteps`)
    draws_timesteps: ClassVar[bool] = False

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """``draws_timesteps``."""
        return {"draws_timesteps": cls.draws_timesteps}

    def __init__(self, spec: Spec, **context: Any) -> None:
        self.spec = spec

    def icdf(self, u: Tensor) -> Tensor:
        """Inverse CDF: ``u`` in ``(0, 1)`` (any shape) -> sigma of the same shape (same dtype)."""
        raise NotImplementedError

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``n`` noise levels, stratified over the batch.

        Args:
            n: batch size.
            generator: optional ``torch.Generator`` for reproducibility.
            device: the result's device.
            dtype: the result's dtype (computed in float64 first).

        Returns:
            ``(n,)`` positive noise levels.
        """
        u = stratified_uniform(n, generator=generator, device=device).clamp(_U_EPS, 1 - _U_EPS)
        return self.icdf(u).to(dtype)

    def median(self) -> float:
        """The median noise level, ``icdf(0.5)``."""
        return float(self.icdf(torch.tensor(0.5, dtype=torch.float64)))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.spec.model_dump().items() if k != "type")
        return f"{type(self).__name__}({fields})"


SIGMA_DENSITY.set_contract(SigmaDensity)


class _RangeSpec(Spec):
    """Adds the check ``sigma_min < sigma_max`` to a spec that has both fields."""

    @model_validator(mode="after")
    def _check_range(self) -> Any:
        if self.sigma_min >= self.sigma_max:  # type: ignore[attr-defined]
            raise ValueError(
                f"sigma_min ({self.sigma_min}) must be smaller than sigma_max ({self.sigma_max}); "  # type: ignore[attr-defined]
                "swap them"
            )
        return self


# -- cosine-interpolated (simple diffusion; HDiT) -------------------------------------------------
def logsnr_cosine(t: Tensor, logsnr_min: float, logsnr_max: float) -> Tensor:
    """Cosine-schedule log-SNR, ``logsnr_max`` at ``t = 0`` down to ``logsnr_min`` at ``t = 1``.

    ``-2 ln tan(t0 + t (t1 - t0))`` with ``t0 = atan(exp(-logsnr_max/2))``,
    ``t1 = atan(exp(-logsnr_min/2))``. Shapes: ``t`` any, result like ``t``.
    """
    t0 = math.atan(math.exp(-0.5 * logsnr_max))
    t1 = math.atan(math.exp(-0.5 * logsnr_min))
    return -2 * torch.log(torch.tan(t0 + t * (t1 - t0)))


def logsnr_cosine_shifted(t: Tensor, image_d: float, noise_d: float, logsnr_min: float, logsnr_max: float) -> Tensor:
    """The cosine log-SNR shifted for noise resolution ``noise_d`` at image size ``image_d``.

    ``logsnr(t; lmin - h, lmax - h) + h`` with ``h = 2 ln(noise_d / image_d)``.
    """
    shift = 2 * math.log(noise_d / image_d)
    return logsnr_cosine(t, logsnr_min - shift, logsnr_max - shift) + shift


class CosineInterpolatedDensitySpec(_RangeSpec):
    type: Literal["cosine_interpolated"] = "cosine_interpolated"
    sigma_min: float = Field(1e-3, gt=0, description="lowest noise level (sets logsnr_max)")
    sigma_max: float = Field(1e3, gt=0, description="highest noise level (sets logsnr_min)")
    noise_d_low: float = Field(32.0, gt=0, description="noise resolution at t = 0")
    noise_d_high: float | None = Field(
        None, gt=0, description="noise resolution at t = 1; None = the image size (k-diffusion's default)"
    )


def _image_side(image_size: Any) -> float:
    if isinstance(image_size, (int, float)) and not isinstance(image_size, bool) and image_size > 0:
        return float(image_size)
    if isinstance(image_size, Sequence) and len(image_size) == 2 and all(
        isinstance(v, (int, float)) and v > 0 for v in image_size
    ):
        return math.sqrt(float(image_size[0]) * float(image_size[1]))
    raise ValueError(
        f"image_size must be a positive number or (height, width), got {image_size!r}; "
        "pass the training resolution, e.g. SIGMA_DENSITY.build('cosine_interpolated', image_size=256)"
    )


@SIGMA_DENSITY.register("cosine_interpolated")
class CosineInterpolatedDensity(SigmaDensity):
    """Cosine-interpolated noise density (simple diffusion; HDiT's training density, HDiT paper Table 7).

    Context at build: ``sigma_data`` (default 0.5) and ``image_size`` (the image side ``D``; a
    ``(height, width)`` pair uses the geometric mean of the two sides). ``image_size`` is required
    unless the spec sets ``noise_d_high``; it is always the reference size of the shift.
    """

    Spec = CosineInterpolatedDensitySpec

    def __init__(
        self, spec: CosineInterpolatedDensitySpec, *, sigma_data: float = 0.5, image_size: Any = None, **context: Any
    ) -> None:
        super().__init__(spec)
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data!r}")
        if image_size is None:
            raise ValueError(
                "the cosine_interpolated density needs the image size: build it with "
                "SIGMA_DENSITY.build(spec, image_size=..., sigma_data=...)"
            )
        self.sigma_data = float(sigma_data)
        self.image_d = _image_side(image_size)
        self.noise_d_low = float(spec.noise_d_low)
        self.noise_d_high = float(spec.noise_d_high) if spec.noise_d_high is not None else self.image_d
        self.logsnr_max = -2 * math.log(spec.sigma_min / self.sigma_data)
        self.logsnr_min = -2 * math.log(spec.sigma_max / self.sigma_data)

    def logsnr(self, t: Tensor) -> Tensor:
        """``(1 - t) logsnr_low(t) + t logsnr_high(t)``; ``t`` any shape, result like ``t``."""
        args = (self.logsnr_min, self.logsnr_max)
        low = logsnr_cosine_shifted(t, self.image_d, self.noise_d_low, *args)
        high = logsnr_cosine_shifted(t, self.image_d, self.noise_d_high, *args)
        return torch.lerp(low, high, t)

    def icdf(self, u: Tensor) -> Tensor:
        return self.sigma_data * torch.exp(-0.5 * self.logsnr(u))


# -- log-normal (EDM) -----------------------------------------------------------------------------
class LogNormalDensitySpec(Spec):
    type: Literal["log_normal"] = "log_normal"
    mean: float = Field(-1.2, description="mean of ln(sigma) (EDM: -1.2)")
    std: float = Field(1.2, gt=0, description="standard deviation of ln(sigma) (EDM: 1.2)")


@SIGMA_DENSITY.register("log_normal")
class LogNormalDensity(SigmaDensity):
    """EDM's log-normal density: ``ln(sigma) ~ N(mean, std^2)`` (Karras et al. 2022)."""

    Spec = LogNormalDensitySpec

    def icdf(self, u: Tensor) -> Tensor:
        return torch.exp(self.spec.mean + self.spec.std * torch.special.ndtri(u))


# -- log-uniform ----------------------------------------------------------------------------------
class LogUniformDensitySpec(_RangeSpec):
    type: Literal["log_uniform"] = "log_uniform"
    sigma_min: float = Field(0.002, gt=0, description="lowest noise level")
    sigma_max: float = Field(80.0, gt=0, description="highest noise level")


@SIGMA_DENSITY.register("log_uniform")
class LogUniformDensity(SigmaDensity):
    """``ln(sigma)`` uniform on ``[ln sigma_min, ln sigma_max]``."""

    Spec = LogUniformDensitySpec

    def icdf(self, u: Tensor) -> Tensor:
        lo, hi = math.log(self.spec.sigma_min), math.log(self.spec.sigma_max)
        return torch.exp(lo + u * (hi - lo))
