"""Sampling noise schedules: ``schedule(n_steps) -> sigmas (n_steps + 1,)``.

Each schedule gives ``n_steps`` strictly decreasing noise levels from ``sigma_max`` to ``sigma_min``
and appends a final 0 (the clean image), as k-diffusion's ``get_sigmas_*`` do. Values are computed
in float64 and returned in the requested dtype.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from hourglass.registry import SCHEDULE, Contract
from hourglass.spec import Spec

__all__ = [
    "Schedule",
    "ScheduleSpec",
    "ExponentialSchedule", "ExponentialScheduleSpec",
    "KarrasSchedule", "KarrasScheduleSpec",
    "LinearSchedule", "LinearScheduleSpec",
    "PolyExponentialSchedule", "PolyExponentialScheduleSpec",
]


class ScheduleSpec(Spec):
    """Base of schedule specs: the range every schedule spans."""

    sigma_min: float = Field(0.002, gt=0, description="last non-zero noise level")
    sigma_max: float = Field(80.0, gt=0, description="first noise level")

    @model_validator(mode="after")
    def _check_range(self) -> Any:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(
                f"sigma_min ({self.sigma_min}) must be smaller than sigma_max ({self.sigma_max}); swap them"
            )
        return self


class Schedule(Contract):
    """Contract and base of the ``schedule`` family: ``schedule(n_steps) -> (n_steps + 1,)`` sigmas from
    ``sigma_max`` down to ``sigma_min``, then 0; subclasses give the non-zero levels through :meth:`levels`."""

    Spec: type[ScheduleSpec]

    def __init__(self, spec: ScheduleSpec, **context: Any) -> None:
        self.spec = spec

    def levels(self, ramp: Tensor) -> Tensor:
        """Map ``ramp`` = linspace(0, 1, n) (float64) to decreasing sigmas ``sigma_max -> sigma_min``."""
        raise NotImplementedError

    def __call__(
        self, n_steps: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """The sampling schedule.

        Args:
            n_steps: number of sampler steps, ``>= 1``.
            device: the result's device.
            dtype: the result's dtype.

        Returns:
            ``(n_steps + 1,)``: ``sigma_max``, ..., ``sigma_min``, 0 (strictly decreasing).
        """
        if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
            raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
        ramp = torch.linspace(0, 1, n_steps, dtype=torch.float64)
        sigmas = self.levels(ramp)
        sigmas[0] = self.spec.sigma_max
        if n_steps > 1:
            sigmas[-1] = self.spec.sigma_min
        return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=device, dtype=dtype)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.spec.model_dump().items() if k != "type")
        return f"{type(self).__name__}({fields})"


SCHEDULE.set_contract(Schedule)


class KarrasScheduleSpec(ScheduleSpec):
    type: Literal["karras"] = "karras"
    rho: float = Field(7.0, gt=0, description="warp; larger spends more steps at low noise (EDM: 7)")


@SCHEDULE.register("karras")
class KarrasSchedule(Schedule):
    """Karras et al. (2022) Eq. 5: ``(max^(1/rho) + ramp (min^(1/rho) - max^(1/rho)))^rho``."""

    Spec = KarrasScheduleSpec

    def levels(self, ramp: Tensor) -> Tensor:
        rho = self.spec.rho
        lo, hi = self.spec.sigma_min ** (1 / rho), self.spec.sigma_max ** (1 / rho)
        return (hi + ramp * (lo - hi)) ** rho


class ExponentialScheduleSpec(ScheduleSpec):
    type: Literal["exponential"] = "exponential"


@SCHEDULE.register("exponential")
class ExponentialSchedule(Schedule):
    """Uniform steps in ``ln(sigma)`` (geometric sigmas)."""

    Spec = ExponentialScheduleSpec

    def levels(self, ramp: Tensor) -> Tensor:
        lo, hi = math.log(self.spec.sigma_min), math.log(self.spec.sigma_max)
        return torch.exp(hi + ramp * (lo - hi))


class PolyExponentialScheduleSpec(ScheduleSpec):
    type: Literal["polyexponential"] = "polyexponential"
    rho: float = Field(1.0, gt=0, description="polynomial warp of ln(sigma); 1 = exponential")


@SCHEDULE.register("polyexponential")
class PolyExponentialSchedule(Schedule):
    """A polynomial in ``ln(sigma)``: ``exp((1 - ramp)^rho (ln max - ln min) + ln min)``."""

    Spec = PolyExponentialScheduleSpec

    def levels(self, ramp: Tensor) -> Tensor:
        lo, hi = math.log(self.spec.sigma_min), math.log(self.spec.sigma_max)
        return torch.exp((1 - ramp) ** self.spec.rho * (hi - lo) + lo)


class LinearScheduleSpec(ScheduleSpec):
    type: Literal["linear"] = "linear"


@SCHEDULE.register("linear")
class LinearSchedule(Schedule):
    """Uniform steps in ``sigma`` from ``sigma_max`` to ``sigma_min``."""

    Spec = LinearScheduleSpec

    def levels(self, ramp: Tensor) -> Tensor:
        return self.spec.sigma_max + ramp * (self.spec.sigma_min - self.spec.sigma_max)
