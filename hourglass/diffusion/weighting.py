"""Loss weightings over noise levels (HDiT, Crowson et al. 2024, arXiv 2401.11605: Sec. 3.1 and App. C).

**Convention.** ``weighting(sigma, sigma_data)`` returns the weight applied to the *F-space* loss
that :meth:`KarrasDenoiser.loss <hourglass.diffusion.denoiser.KarrasDenoiser.loss>` computes,
``mean((F(c_in x_s; sigma) - (x0 - c_skip x_s) / c_out)^2)``, exactly as k-diffusion's ``Denoiser``
multiplies its ``c_weight``. Because ``D - x0 = c_out (F - target)``, the x0-space (denoised-image)
MSE equals ``c_out^2`` times the F-space MSE, so an x0-space weight ``lambda(sigma)`` becomes the
F-space weight ``lambda(sigma) * c_out(sigma)^2`` with ``c_out^2 = (sigma * sigma_data)^2 /
(sigma^2 + sigma_data^2)``. Every weighting also exposes :meth:`x0_weight` (its x0-space form), and
the tests check ``w_F == x0_weight * c_out^2`` for each.

| name | F-space weight (returned) | x0-space weight | k-diffusion name |
|---|---|---|---|
| ``edm`` | ``1`` | ``(s^2 + sd^2) / (s sd)^2`` | ``karras`` |
| ``soft_min_snr`` | ``(s sd)^2 / (s^2 + sd^2)^2`` | ``1 / (s^2 + sd^2)`` | ``soft-min-snr`` |
| ``snr`` | ``sd^2 / (s^2 + sd^2)`` | ``1 / s^2`` (SNR; plain eps loss) | ``snr`` |
| ``min_snr`` | ``min(1/s^2, gamma) c_out^2`` | ``min(1/s^2, gamma)`` (Hang et al. 2023) | -- |
| ``uniform`` | ``(s sd)^2 / (s^2 + sd^2)`` | ``1`` (plain x0 MSE) | -- |

(``s`` = sigma, ``sd`` = sigma_data; SNR = ``1/sigma^2`` for the variance-exploding process.)
Soft-Min-SNR is the harmonic soft minimum of SNR and ``gamma``: ``1 / (1/SNR + 1/gamma)`` with
``gamma = 1/sigma_data^2`` (= 4 at sigma_data 0.5), HDiT's weighting (HDiT paper, App. C, Eq. 5, gamma = 4).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from hourglass.registry import WEIGHTING, Contract
from hourglass.spec import Spec

__all__ = [
    "Weighting",
    "EDMWeighting", "EDMWeightingSpec",
    "MinSNRWeighting", "MinSNRWeightingSpec",
    "SNRWeighting", "SNRWeightingSpec",
    "SoftMinSNRWeighting", "SoftMinSNRWeightingSpec",
    "UniformWeighting", "UniformWeightingSpec",
    "c_out_squared",
]


def c_out_squared(sigma: Tensor, sigma_data: float) -> Tensor:
    """``c_out^2 = (sigma sigma_data)^2 / (sigma^2 + sigma_data^2)``: x0-space MSE / F-space MSE.

    Args:
        sigma: ``(B,)`` noise levels.
        sigma_data: the data standard deviation.

    Returns:
        ``(B,)``.
    """
    return (sigma * sigma_data) ** 2 / (sigma**2 + sigma_data**2)


class Weighting(Contract):
    """Contract and base of the ``weighting`` family: ``__call__`` gives the F-space weight, :meth:`x0_weight`
    the x0-space one (``w_F = w_x0 * c_out^2``)."""

    Spec: type[Spec]

    def __init__(self, spec: Spec, **context: object) -> None:
        self.spec = spec

    def __call__(self, sigma: Tensor, sigma_data: float) -> Tensor:
        """F-space loss weight ``w(sigma)``, shape ``(B,)`` like ``sigma``."""
        raise NotImplementedError

    def x0_weight(self, sigma: Tensor, sigma_data: float) -> Tensor:
        """The same weighting expressed on the x0-space (denoised-image) MSE, shape ``(B,)``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.spec.model_dump().items() if k != "type")
        return f"{type(self).__name__}({fields})"


WEIGHTING.set_contract(Weighting)


class EDMWeightingSpec(Spec):
    type: Literal["edm"] = "edm"


@WEIGHTING.register("edm")
class EDMWeighting(Weighting):
    """EDM (Karras et al. 2022) weighting: 1 in F-space, ``(s^2+sd^2)/(s sd)^2`` in x0-space."""

    Spec = EDMWeightingSpec

    def __call__(self, sigma: Tensor, sigma_data: float) -> Tensor:
        return torch.ones_like(sigma)

    def x0_weight(self, sigma: Tensor, sigma_data: float) -> Tensor:
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


class SoftMinSNRWeightingSpec(Spec):
    type: Literal["soft_min_snr"] = "soft_min_snr"
    gamma: float | None = Field(
        None, gt=0, description="SNR cap; None = 1 / sigma_data^2 (4 at sigma_data 0.5: HDiT paper, App. C)"
    )


@WEIGHTING.register("soft_min_snr")
class SoftMinSNRWeighting(Weighting):
    """Soft-Min-SNR (HDiT paper, App. C, Eq. 5): ``(s sd)^2 / (s^2 + sd^2)^2`` in F-space.

    In x0-space it is ``1 / (s^2 + 1/gamma)``, a soft minimum of the SNR ``1/s^2`` and ``gamma``.
    With the default ``gamma = 1/sd^2`` both forms equal the paper's; another ``gamma`` gives the
    F-space weight ``c_out^2 / (s^2 + 1/gamma)``.
    """

    Spec = SoftMinSNRWeightingSpec

    def _inv_gamma(self, sigma_data: float) -> float:
        return sigma_data**2 if self.spec.gamma is None else 1.0 / self.spec.gamma

    def __call__(self, sigma: Tensor, sigma_data: float) -> Tensor:
        if self.spec.gamma is None:
            return (sigma * sigma_data) ** 2 / (sigma**2 + sigma_data**2) ** 2
        return c_out_squared(sigma, sigma_data) / (sigma**2 + self._inv_gamma(sigma_data))

    def x0_weight(self, sigma: Tensor, sigma_data: float) -> Tensor:
        return 1.0 / (sigma**2 + self._inv_gamma(sigma_data))


class MinSNRWeightingSpec(Spec):
    type: Literal["min_snr"] = "min_snr"
    gamma: float = Field(5.0, gt=0, description="SNR cap (Hang et al. 2023 use 5)")


@WEIGHTING.register("min_snr")
class MinSNRWeighting(Weighting):
    """Min-SNR-gamma (Hang et al. 2023): x0-space ``min(1/s^2, gamma)``, F-space times ``c_out^2``."""

    Spec = MinSNRWeightingSpec

    def __call__(self, sigma: Tensor, sigma_data: float) -> Tensor:
        return self.x0_weight(sigma, sigma_data) * c_out_squared(sigma, sigma_data)

    def x0_weight(self, sigma: Tensor, sigma_data: float) -> Tensor:
        return torch.clamp(sigma**-2, max=self.spec.gamma)


class SNRWeightingSpec(Spec):
    type: Literal["snr"] = "snr"


@WEIGHTING.register("snr")
class SNRWeighting(Weighting):
    """SNR weighting: x0-space ``1/s^2`` (the plain epsilon loss), F-space ``sd^2/(s^2+sd^2)``."""

    Spec = SNRWeightingSpec

    def __call__(self, sigma: Tensor, sigma_data: float) -> Tensor:
        return sigma_data**2 / (sigma**2 + sigma_data**2)

    def x0_weight(self, sigma: Tensor, sigma_data: float) -> Tensor:
        return sigma**-2


class UniformWeightingSpec(Spec):
    type: Literal["uniform"] = "uniform"


@WEIGHTING.register("uniform")
class UniformWeighting(Weighting):
    """Uniform x0-space weighting (plain MSE on the denoised image): F-space ``c_out^2``."""

    Spec = UniformWeightingSpec

    def __call__(self, sigma: Tensor, sigma_data: float) -> Tensor:
        return c_out_squared(sigma, sigma_data)

    def x0_weight(self, sigma: Tensor, sigma_data: float) -> Tensor:
        return torch.ones_like(sigma)
