"""Image conditioning by channel concatenation, with noise augmentation of the condition.

For super-resolution and paired image-to-image, the backbone sees the noisy image and the
condition image side by side: ``F(cat([c_in x, z]); sigma)`` where ``z`` is the condition resized
to the model's resolution and noised, ``z = resize(c) + sigma_c n``. Only the noisy input ``x`` is
scaled by the denoiser's ``c_in``; the condition enters as it is (:class:`ImageConditioned` sits
*inside* the denoiser, between the preconditioning and the backbone).

The noise level ``sigma_c`` of the condition is the *conditioning augmentation* of Cascaded
Diffusion Models (Ho et al. 2021, arXiv 2106.15282, Sec. 3.2) and Imagen (Saharia et al. 2022,
App. B.3): drawn per sample at training (here uniformly in ``train_noise``), fixed at sampling
(``sample_noise``), and given to the model, whose mapping network embeds it as the last entry of
``mapping_cond`` (:func:`level_feature`). So a recipe with image conditioning declares
``model.in_channels = C + image_channels`` and ``model.mapping_cond_dim = D + 1`` (``D`` the data's
own vector width); validation checks both and names the values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from hourglass.spec import Spec

__all__ = [
    "ConditioningSection",
    "ImageConditioned",
    "condition_image",
    "conditioned",
    "fixed_levels",
    "resize_image",
    "level_feature",
    "sample_noise",
    "sampling_conditions",
    "train_levels",
]

#: entries of ``mapping_cond`` the condition's noise level takes (:func:`level_feature`)
LEVEL_DIM = 1


class ConditioningSection(Spec):
    """``[conditioning]``: an image condition concatenated to the model's input channels.

    The model takes ``model.in_channels = data channels + image_channels`` and embeds the
    condition's noise level as one more ``mapping_cond`` entry (``model.mapping_cond_dim`` = the
    data's vector width + 1); its ``out_channels`` are the data's channels.
    """

    image_channels: int = Field(0, ge=0, description="channels of the dataset's cond_image (0: no image condition)")
    resize: Literal["bicubic", "bilinear", "nearest"] = Field(
        "bicubic", description="how the condition is resized to the model's resolution (upsampled for super-resolution)"
    )
    train_noise: tuple[float, float] = Field(
        (0.0, 0.5),
        description="range of the condition's noise level, drawn uniformly per sample at training "
        "(conditioning augmentation, Ho et al. 2021)",
    )
    sample_noise: float = Field(0.02, ge=0, description="the fixed noise level of the condition when sampling")

    @model_validator(mode="after")
    def _ordered(self) -> ConditioningSection:
        lo, hi = self.train_noise
        if not 0 <= lo <= hi:
            raise ValueError(f"train_noise must be a range (low, high) with 0 <= low <= high, got ({lo}, {hi})")
        return self

    @property
    def mapping_extra(self) -> int:
        """Entries this section adds to the model's ``mapping_cond`` (the condition's noise level)."""
        return LEVEL_DIM if self.image_channels else 0


def level_feature(levels: Tensor) -> Tensor:
    """The condition's noise level as the mapping network sees it: ``ln(sigma_c + 0.01) / 4``.

    Args:
        levels: ``(B,)`` noise levels ``sigma_c >= 0``.

    Returns:
        ``(B, 1)`` float32.
    """
    return (levels.float() + 0.01).log()[:, None] / 4


def resize_image(image: Tensor, size: Sequence[int], mode: str = "bicubic") -> Tensor:
    """``(B, C, h, w)`` -> ``(B, C, H, W)``: ``mode`` interpolation, antialiased where it shrinks either side.

    The one resize of conditions: super-resolution inputs (down), condition images (up) and the
    bicubic baseline they are scored against.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrinks = image.shape[-2] > size[0] or image.shape[-1] > size[1]
    extra = {} if mode == "nearest" else {"align_corners": False, "antialias": shrinks}
    return F.interpolate(image, size=tuple(size), mode=mode, **extra)


def condition_image(
    image: Tensor, size: Sequence[int], levels: Tensor, noise: Tensor | None = None, mode: str = "bicubic"
) -> Tensor:
    """Resize a condition to ``size`` and add noise of the given levels: ``resize(c) + sigma_c n``.

    Args:
        image: ``(B, C', h, w)`` condition images in [-1, 1].
        size: the model's ``(H, W)``.
        levels: ``(B,)`` noise levels.
        noise: ``(B, C', H, W)`` standard normal noise (None: no noise, for levels that are all 0).

    Returns:
        ``(B, C', H, W)`` float32.
    """
    image = resize_image(image.float(), size, mode)
    if noise is not None:
        image = image + levels.float().view(-1, 1, 1, 1) * noise
    return image


def train_levels(n: int, spec: ConditioningSection, generator: torch.Generator, device: Any) -> Tensor:
    """``(n,)`` noise levels drawn uniformly in ``spec.train_noise``."""
    lo, hi = spec.train_noise
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def sample_noise(seeds: Sequence[int], shape: Sequence[int], device: Any) -> Tensor:
    """Per-image condition noise ``(len(seeds), *shape)``: image ``i`` draws from seed ``seeds[i]`` (offset so
    it differs from the image's initial noise), so it does not depend on the batch it is drawn in."""
    gens = [torch.Generator().manual_seed((int(s) * 1_000_003 + 0x5EED) % (1 << 63)) for s in seeds]
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in gens]).to(device)


class ImageConditioned(nn.Module):
    """A backbone that takes a condition image concatenated to its input, and the condition's noise level.

    Called by a denoiser as ``F(c_in x, sigma, cond_image=z, cond_noise=sigma_c, **cond)``: the
    backbone receives ``cat([c_in x, z], dim=1)`` (the condition unscaled) and
    ``mapping_cond = cat([mapping_cond, level_feature(sigma_c)], dim=1)``. Wrap the backbone once
    with :func:`conditioned`; the wrapped module is ``.module`` (so
    :func:`~hourglass.models.base.time_input_of` sees through it).

    Args:
        module: the backbone, with ``in_channels = C + C'`` and a ``mapping_cond`` one wider.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(
        self,
        x: Tensor,
        sigma: Tensor,
        *,
        cond_image: Tensor | None = None,
        cond_noise: Tensor | None = None,
        mapping_cond: Tensor | None = None,
        **cond: Any,
    ) -> Tensor:
        """``x (B, C, H, W)`` (already scaled by ``c_in``), ``sigma (B,)``, ``cond_image (B, C', H, W)``,
        ``cond_noise (B,)`` -> the backbone's output ``(B, C_out, H, W)``."""
        if cond_image is None or cond_noise is None:
            raise ValueError(
                "this model is image-conditioned: pass cond_image (B, C', H, W) and cond_noise (B,) "
                "(from the dataset's cond_image, or Pipeline.sample(cond_image=...))"
            )
        if cond_image.shape[0] != x.shape[0] or cond_image.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"cond_image must be {x.shape[0]} images at the model's {x.shape[-2]}x{x.shape[-1]}, got "
                f"{tuple(cond_image.shape)}; resize it with hourglass.diffusion.conditioning.condition_image"
            )
        feature = level_feature(cond_noise.expand(x.shape[0])).to(x.dtype)
        mapping = feature if mapping_cond is None else torch.cat([mapping_cond.to(x.dtype), feature], dim=1)
        return self.module(torch.cat([x, cond_image.to(x.dtype)], dim=1), sigma, mapping_cond=mapping, **cond)


def conditioned(model: Any, spec: ConditioningSection | None) -> Any:
    """``model`` wrapped in :class:`ImageConditioned` when ``spec`` has an image condition, else ``model``."""
    return ImageConditioned(model) if spec is not None and spec.image_channels else model


def fixed_levels(n: int, spec: ConditioningSection, device: Any) -> Tensor:
    """``(n,)`` copies of ``spec.sample_noise`` (the sampling level)."""
    return torch.full((n,), float(spec.sample_noise), device=device)


def sampling_conditions(
    cond: dict[str, Tensor] | None,
    rows: slice,
    seeds: Sequence[int],
    size: Sequence[int],
    spec: ConditioningSection | None,
    device: Any,
) -> dict[str, Tensor]:
    """The denoiser's keyword arguments for images ``rows`` of a sampling request.

    ``mapping_cond`` rows pass as they are; a ``cond_image`` is resized to ``size`` and noised at
    the fixed level ``spec.sample_noise``, once per image (with noise from the image's seed, so it
    does not depend on the batch), and stays the same over all sampler steps.

    Args:
        cond: per-image conditions: ``"mapping_cond": (n, D)``, ``"cond_image": (n, C', h, w)`` (None: none).
        rows: the images of this batch.
        seeds: their seeds (one per row).
        size: the model's ``(H, W)``.
        spec: the recipe's ``[conditioning]`` (needed with a ``cond_image``).

    Returns:
        ``{"mapping_cond": (b, D)}`` and/or ``{"cond_image": (b, C', H, W), "cond_noise": (b,)}``.

    Raises:
        ValueError: a ``cond_image`` for a model without ``[conditioning]`` image channels.
    """
    out: dict[str, Tensor] = {}
    if not cond:
        return out
    if cond.get("mapping_cond") is not None:
        out["mapping_cond"] = cond["mapping_cond"][rows].to(device, torch.float32)
    if cond.get("cond_image") is not None:
        if spec is None or not spec.image_channels:
            raise ValueError("a cond_image was given, but this model has no [conditioning] image_channels; drop it")
        image = cond["cond_image"][rows].to(device)
        levels = fixed_levels(len(seeds), spec, device)
        noise = sample_noise(seeds, (image.shape[1], *size), device) if spec.sample_noise > 0 else None
        out["cond_image"] = condition_image(image, size, levels, noise, spec.resize)
        out["cond_noise"] = levels
    return out
