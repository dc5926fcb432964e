"""DiT's conditioning (Peebles & Xie 2023): timestep MLP plus class table, registered as MAPPING ``"dit"``.

``c = t_emb + y_emb`` with ``t_emb = Linear(SiLU(Linear(sinusoidal_256(t))))`` and
``y_emb = Embedding(num_classes + 1, d)`` (the last row is the "no class" of classifier-free
guidance).

**Time input.** What the embedding reads is the spec's ``time_input``:

* ``"log_sigma"`` (default): the backbone receives the noise level ``sigma > 0`` and, like EDM
  (Karras et al. 2022), embeds the continuous ``c_noise = ln(sigma) / 4``: the choice for the
  Karras denoiser (HDiT's training recipe);
* ``"timestep"``: the backbone receives a DDPM timestep ``t >= 0`` (DiT's ``t`` in ``[0, 1000)``,
  U-ViT's ``n`` in ``[1, 1000]``) and embeds it as is, as the official DiT and U-ViT code do. The
  discrete-time VP denoiser (:class:`hourglass.diffusion.ddpm.DDPMDenoiser`) passes it; this is
  what checkpoints converted from the official code need.

Either is multiplied by ``time_scale`` (1 by default) before the sinusoidal embedding
(:func:`timestep_embedding`), which also makes U-ViT's time token.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from hourglass.debug import should_check_values
from hourglass.nn._init import tag_lr_group, zero_init
from hourglass.nn.mapping import AUG_COND_DIM, ConditioningMapping, FourierFeatures
from hourglass.registry import MAPPING
from hourglass.spec import Spec

__all__ = [
    "TimeInput", "TIME_INPUTS", "timestep_embedding", "c_noise_of", "embedded_time", "augmentation_applied",
    "DiTEmbedder", "DiTEmbedderSpec",
]

#: what a backbone's second argument is: a noise level (embedded as ln(sigma)/4) or a DDPM timestep
TimeInput = Literal["log_sigma", "timestep"]
TIME_INPUTS: tuple[str, ...] = ("log_sigma", "timestep")


def c_noise_of(sigma: Tensor) -> Tensor:
    """EDM's noise conditioning ``c_noise = ln(sigma) / 4`` (Karras et al. 2022, Table 1): ``(B,) -> (B,)``."""
    return torch.log(sigma) / 4


def embedded_time(time: Tensor, time_input: str, time_scale: float = 1.0) -> Tensor:
    """The value the sinusoidal embedding reads: ``time_scale * ln(sigma) / 4`` or ``time_scale * t``.

    Args:
        time: ``(B,)`` the backbone's second argument: noise levels (``time_input = "log_sigma"``)
            or DDPM timesteps (``"timestep"``).
        time_input: ``"log_sigma"`` or ``"timestep"``.
        time_scale: a factor on the result.
    Returns:
        ``(B,)``.
    """
    if time_input == "log_sigma":
        value = c_noise_of(time)
    elif time_input == "timestep":
        value = time
    else:
        raise ValueError(f"time_input must be one of {', '.join(TIME_INPUTS)}, got {time_input!r}")
    return value if time_scale == 1.0 else time_scale * value


def augmentation_applied(aug_cond: Tensor) -> bool:
    """Whether ``aug_cond (B, 9)`` describes any applied augmentation (all zeros: none).

    Models without an augmentation embedding accept the all-zero ``aug_cond`` a trainer passes when
    augmentation is off, and refuse a non-zero one (the augmentation would leak into samples). The
    values are read only where :func:`hourglass.debug.should_check_values` allows (else ``False``).
    """
    if not should_check_values(aug_cond):
        return False
    return bool(aug_cond.any())


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[cos(t f_i), sin(t f_i)]`` with ``f_i = max_period^(-i / (dim/2))``.

    The GLIDE / ADM / DiT / U-ViT convention: cosines first, ``dim/2`` geometric frequencies
    from 1 down to ``1 / max_period``; an odd ``dim`` gets one trailing zero channel.

    Args:
        t: ``(B,)`` timesteps (any real values).
        dim: channels of the embedding.
        max_period: the longest period (sets the lowest frequency).
    Returns:
        ``(B, dim)`` in float32 (or float64 if ``t`` is float64).
    """
    half = dim // 2
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    exponent = torch.arange(half, dtype=dtype, device=t.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat((torch.cos(args), torch.sin(args)), dim=-1)
    if dim % 2:
        emb = torch.cat((emb, emb.new_zeros(emb.shape[0], 1)), dim=-1)
    return emb


class DiTEmbedderSpec(Spec):
    """What a recipe may set of DiT's timestep + class embedder (``mapping = {type = "dit", ...}``)."""

    type: Literal["dit"] = "dit"
    width: int = Field(
        256, gt=0, description="conditioning width d; a DiT model sets its own width when this is not given"
    )
    frequency_dim: int = Field(256, gt=0, description="channels of the sinusoidal timestep embedding")
    max_period: float = Field(10000.0, gt=1, description="longest period of the sinusoidal embedding")
    time_input: TimeInput = Field(
        "log_sigma", description="what the model's second argument is: 'log_sigma' (a noise level sigma > 0, "
        "embedded as ln(sigma)/4: the Karras denoiser) or 'timestep' (a DDPM timestep t >= 0, embedded as is: "
        "official DiT checkpoints, with the ddpm denoiser)"
    )
    time_scale: float = Field(
        1.0, gt=0, description="the embedded value is time_scale * ln(sigma)/4, or time_scale * t for time_input "
        "'timestep' (1: EDM's c_noise, or DiT's t)"
    )
    augment: bool = Field(
        False, description="embed aug_cond (Karras augmentation): Linear(Fourier(aug_cond)), zero-initialised; "
        "false: aug_cond is ignored"
    )


@MAPPING.register("dit")
class DiTEmbedder(ConditioningMapping, nn.Module):
    """DiT's timestep + class conditioning ``c = t_emb + y_emb (+ aug + extra)`` (Peebles & Xie 2023).

    ``t_emb = Linear(d -> d)(SiLU(Linear(frequency_dim -> d)(timestep_embedding(time_scale * tau))))``
    with ``tau = c_noise = ln(sigma) / 4`` (EDM's continuous noise conditioning; ``time_input =
    "log_sigma"``) or ``tau = t``, DiT's DDPM timestep (``time_input = "timestep"``);
    ``y_emb = Embedding(num_classes + 1, d)`` (row ``num_classes`` = no class, for CFG).
    Optional extras: an augmentation embedding (``augment``; otherwise ``aug_cond`` is ignored) and
    ``Linear(mapping_cond)``. ``width`` defaults to 256; a DiT sets it to its own width unless the
    recipe gives one.
    Initialisation as DiT: the MLP weights and the class table ``N(0, 0.02^2)``, biases zero.
    Everything trains in the ``"mapping"`` optimiser group.

    Context:
        num_classes: real classes (0: unconditional, no table).
        mapping_cond_dim: width of the extra conditioning vector (0: none).
    """

    Spec = DiTEmbedderSpec
    width_follows_model = True

    @classmethod
    def embeds_aug(cls, spec: DiTEmbedderSpec) -> bool:
        """With ``augment = true`` only."""
        return bool(spec.augment)

    def __init__(self, spec: DiTEmbedderSpec | None = None, *, num_classes: int = 0, mapping_cond_dim: int = 0):
        super().__init__()
        self.spec = spec = spec or DiTEmbedderSpec()
        d = self.width = spec.width
        self.num_classes = num_classes
        self.mapping_cond_dim = mapping_cond_dim
        self.time_mlp = nn.Sequential(nn.Linear(spec.frequency_dim, d), nn.SiLU(), nn.Linear(d, d))
        for layer in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        self.class_emb = nn.Embedding(num_classes + 1, d) if num_classes else None
        if self.class_emb is not None:
            nn.init.normal_(self.class_emb.weight, std=0.02)
        self.aug_emb = self.aug_proj = None
        if spec.augment:
            self.aug_emb = FourierFeatures(AUG_COND_DIM, spec.frequency_dim)
            self.aug_proj = zero_init(nn.Linear(spec.frequency_dim, d, bias=False))
        self.cond_proj = nn.Linear(mapping_cond_dim, d, bias=False) if mapping_cond_dim else None
        tag_lr_group(self, "mapping")

    def forward(
        self,
        sigma: Tensor,
        class_cond: Tensor | None = None,
        aug_cond: Tensor | None = None,
        mapping_cond: Tensor | None = None,
    ) -> Tensor:
        """Conditioning vector ``c``.

        Args:
            sigma: ``(B,)`` noise levels (> 0), or DDPM timesteps (>= 0) when ``time_input = "timestep"``.
            class_cond: ``(B,)`` int64 in ``[0, num_classes]``; required when ``num_classes > 0``.
            aug_cond: ``(B, 9)`` augmentation description (zeros if None); ignored without ``augment``
                (:class:`~hourglass.models.dit.DiT` refuses a non-zero one then).
            mapping_cond: ``(B, mapping_cond_dim)``.
        Returns:
            ``(B, width)``.
        Raises:
            ValueError: for conditioning this embedder was not built to take.
        """
        dtype = self.time_mlp[0].weight.dtype
        t = embedded_time(sigma, self.spec.time_input, self.spec.time_scale)
        c = self.time_mlp(timestep_embedding(t, self.spec.frequency_dim, self.spec.max_period).to(dtype))
        if self.class_emb is not None:
            if class_cond is None:
                raise ValueError(f"mapping 'dit' has {self.num_classes} classes: pass class_cond (B,)")
            c = c + self.class_emb(class_cond)
        elif class_cond is not None:
            raise ValueError("class_cond was given but the mapping is unconditional (num_classes = 0)")
        if self.aug_emb is not None:
            if aug_cond is None:  # "no augmentation", as HDiT's mapping reads it
                aug_cond = sigma.new_zeros((sigma.shape[0], AUG_COND_DIM))
            c = c + self.aug_proj(self.aug_emb(aug_cond.to(dtype)))
        if self.cond_proj is not None:
            if mapping_cond is None:
                raise ValueError(f"mapping 'dit' takes mapping_cond of width {self.mapping_cond_dim}: pass it")
            c = c + self.cond_proj(mapping_cond.to(dtype))
        return c

    def extra_repr(self) -> str:
        return (
            f"width={self.width}, num_classes={self.num_classes}, time_input={self.spec.time_input}, "
            f"augment={self.spec.augment}, "
            f"mapping_cond_dim={self.mapping_cond_dim}"
        )
