"""EDM preconditioning (Karras et al. 2022, Table 1) as used by HDiT.

HDiT (Crowson et al. 2024, arXiv 2401.11605) adopts it in Sec. 3.1 and Sec. 5.1 (sigma_data 0.5: Table 7).

``D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; sigma)`` with

- ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``
- ``c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``
- ``c_in   = 1 / sqrt(sigma^2 + sigma_data^2)``

The backbone ``F`` receives ``sigma`` itself and computes ``c_noise = ln(sigma) / 4`` inside
(EDM, Table 1; HDiT paper, App. E.3). Training minimises
``w(sigma) * mean((F - (x0 - c_skip x_s) / c_out)^2)`` with ``x_s = x0 + sigma * noise``, ``w`` an
F-space weighting (see :mod:`hourglass.diffusion.weighting`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from hourglass.diffusion._checks import check_image, check_sigma
from hourglass.registry import DENOISER, WEIGHTING, Contract
from hourglass.spec import Spec

__all__ = ["Denoiser", "KarrasDenoiser", "KarrasDenoiserSpec", "append_dims"]

WeightingLike = str | dict | BaseModel | Callable[[Tensor, float], Tensor]


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims: ``(B,) -> (B, 1, ..., 1)`` with ``ndim`` dims in total."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a {v.ndim}-d tensor to {ndim} dims")
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


class Denoiser(Contract, nn.Module):
    """Contract of the ``denoiser`` family: the preconditioning around a backbone.

    Built as ``cls(spec, model=backbone)``; :meth:`forward` is the denoised estimate that samplers
    call, :meth:`loss` the per-sample training loss the trainer minimises, and :attr:`sigma_data`
    the data scale the trainer's sigma density is built with.

    Declared facts (class attributes, checked by the recipe's cross-section rules):
    :attr:`time_inputs`, :attr:`drops_extra_channels`, :attr:`has_timesteps`.

    Attributes:
        inner_model: the backbone ``F(x, sigma, **cond)``.
        sigma_data: standard deviation of the (normalised) data.
    """

    inner_model: Any
    sigma_data: float
    #: the backbone time inputs it can drive (see :func:`hourglass.models.base.time_input_of`):
    #: ``"log_sigma"`` (it passes noise levels) and/or ``"timestep"`` (it passes DDPM timesteps)
    time_inputs: ClassVar[tuple[str, ...]] = ("log_sigma",)
    #: whether it reads only the image's ``C`` channels of a backbone that returns more (DiT's learned sigma)
    drops_extra_channels: ClassVar[bool] = False
    #: whether it has discrete timesteps (``schedule``, ``sigma_to_t``, ``t_to_sigma``) a density can draw from
    has_timesteps: ClassVar[bool] = False

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """``time_inputs``, ``drops_extra_channels`` and ``has_timesteps``."""
        return {"time_inputs": list(cls.time_inputs), "drops_extra_channels": cls.drops_extra_channels,
                "has_timesteps": cls.has_timesteps}

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        """``x (B, C, H, W)``, ``sigma (B,)`` -> the denoised estimate ``(B, C, H, W)``."""
        raise NotImplementedError

    def loss(self, x0: Tensor, noise: Tensor, sigma: Tensor, weighting: WeightingLike = "soft_min_snr",
             **cond: Any) -> Tensor:
        """``x0, noise (B, C, H, W)``, ``sigma (B,)`` -> per-sample losses ``(B,)``."""
        raise NotImplementedError


DENOISER.set_contract(Denoiser)


class KarrasDenoiserSpec(Spec):
    type: Literal["karras"] = "karras"
    sigma_data: float = Field(0.5, gt=0, description="standard deviation of the (normalised) data")


@DENOISER.register("karras")
class KarrasDenoiser(Denoiser):
    """Karras et al. (2022) preconditioned denoiser around a backbone ``F`` (EDM, Table 1).

    Args:
        spec: the denoiser spec (``sigma_data``).
        model: the backbone, called as ``model(x, sigma, **cond) -> F`` with ``x (B, C, H, W)`` already
            scaled by ``c_in`` and ``sigma (B,)`` the raw noise level.
    """

    Spec = KarrasDenoiserSpec

    def __init__(self, spec: KarrasDenoiserSpec, model: nn.Module | Callable[..., Tensor], **context: Any) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be a callable backbone model(x, sigma, **cond), got {type(model).__name__}")
        from hourglass.models.base import time_input_of

        if time_input_of(model) not in self.time_inputs:
            raise ValueError(
                "this backbone takes DDPM timesteps (time_input = 'timestep'), but the karras denoiser passes noise "
                "levels: use the ddpm denoiser (diffusion.denoiser = {type = \"ddpm\", ...}) or time_input = "
                "'log_sigma'"
            )
        self.spec = spec
        self.sigma_data = spec.sigma_data
        self.inner_model = model

    def get_scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The preconditioning coefficients at ``sigma``.

        Args:
            sigma: ``(B,)`` noise levels.

        Returns:
            ``(c_skip, c_out, c_in)``, each ``(B,)``.
        """
        sigma_data = self.sigma_data
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
        c_in = 1 / (sigma**2 + sigma_data**2) ** 0.5
        return c_skip, c_out, c_in

    def _scalings_for(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        check_image(x)
        if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            sigma = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=dtype)
        sigma = check_sigma(sigma, x.shape[0])
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.get_scalings(sigma))
        return sigma.expand(x.shape[0]), c_skip, c_out, c_in

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        """The denoised estimate ``D(x; sigma) = c_skip x + c_out F(c_in x; sigma)``.

        Args:
            x: ``(B, C, H, W)`` noisy images.
            sigma: ``(B,)`` noise levels (or one value: a 0-d / ``(1,)`` tensor or a float), positive
                and finite.
            **cond: passed to the backbone (``class_cond``, ``aug_cond``, ``mapping_cond``).

        Returns:
            ``(B, C, H, W)``: the estimate of the clean image.
        """
        sigma, c_skip, c_out, c_in = self._scalings_for(x, sigma)
        return c_skip * x + c_out * self.inner_model(c_in * x, sigma, **cond)

    def loss(
        self,
        x0: Tensor,
        noise: Tensor,
        sigma: Tensor,
        weighting: WeightingLike = "soft_min_snr",
        **cond: Any,
    ) -> Tensor:
        """Per-sample weighted training loss (HDiT paper, Sec. 3.1, Eq. 1, written in F-space).

        ``w(sigma) * mean_{C,H,W}((F(c_in x_s; sigma) - (x0 - c_skip x_s) / c_out)^2)`` with
        ``x_s = x0 + noise * sigma``. The weighting is in F-space (k-diffusion's convention): ``edm``
        is 1 here, ``soft_min_snr`` is ``(sigma sigma_data)^2 / (sigma^2 + sigma_data^2)^2``; see
        :mod:`hourglass.diffusion.weighting` for the x0-space equivalents.

        Args:
            x0: ``(B, C, H, W)`` clean images.
            noise: ``(B, C, H, W)`` standard normal noise.
            sigma: ``(B,)`` noise levels, positive and finite.
            weighting: a weighting name / spec / dict (built through ``WEIGHTING``) or any callable
                ``(sigma, sigma_data) -> (B,)`` giving F-space weights. Default: Soft-Min-SNR.
            **cond: passed to the backbone.

        Returns:
            ``(B,)`` per-sample losses (take ``.mean()`` for the batch loss).
        """
        check_image(x0, what="x0")
        if noise.shape != x0.shape:
            raise ValueError(
                f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}; "
                "draw it with torch.randn_like(x0)"
            )
        sigma, c_skip, c_out, c_in = self._scalings_for(x0, sigma)
        weight_fn = self._resolve_weighting(weighting)
        x_s = x0 + noise * append_dims(sigma, x0.ndim)
        model_output = self.inner_model(c_in * x_s, sigma, **cond)
        target = (x0 - c_skip * x_s) / c_out
        mse = (model_output - target).pow(2).flatten(1).mean(1)
        return mse * weight_fn(sigma, self.sigma_data)

    @staticmethod
    def _resolve_weighting(weighting: WeightingLike) -> Callable[[Tensor, float], Tensor]:
        if isinstance(weighting, (str, dict, BaseModel)):
            return WEIGHTING.build(weighting)
        if callable(weighting):
            return weighting
        raise TypeError(
            f"weighting must be a name ({', '.join(WEIGHTING.names())}), a spec or a callable "
            f"(sigma, sigma_data) -> (B,), got {type(weighting).__name__}"
        )

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data}"
