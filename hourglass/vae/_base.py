"""The contract of the ``vae`` family: an autoencoder between images and a diffusion model's latents."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from hourglass.registry import VAE, Contract
from hourglass.spec import Problem

__all__ = ["Autoencoder", "latent_mask"]


class Autoencoder(Contract, nn.Module):
    """Contract of the ``vae`` family: a frozen autoencoder whose latents a diffusion model learns.

    Built as ``cls(spec)`` (no context: everything is in the spec or the files it names), it loads
    its weights, freezes them (no parameter requires a gradient, and it stays in eval mode whatever
    ``train()`` is called with) and exposes, as instance attributes:

    * ``image_channels``: channels of the images it encodes (3 for RGB);
    * ``latent_channels``: channels of its latents (what the model's ``in_channels`` must be);
    * ``downsample_factor``: ``f``, so that an ``H x W`` image has an ``H/f x W/f`` latent grid;
    * ``stochastic``: whether :meth:`encode` draws noise (a posterior sample) from its ``generator``.

    :meth:`encode` maps ``(B, image_channels, H, W)`` images in ``[-1, 1]`` to ``(B,
    latent_channels, H/f, W/f)`` float32 latents, already normalised (multiplied by the scaling
    factor) so that the diffusion model sees roughly unit-variance data; :meth:`decode` is its
    inverse, to float32 images clipped to ``[-1, 1]``. Both run without gradients.

    Declarations asked before anything is loaded (recipe validation must not read weights):
    :meth:`latent_channels_of`, :meth:`downsample_factor_of`, :meth:`image_channels_of` (``None``
    when only the files tell; the trainer and the pipeline check the built VAE by the same rules)
    and :meth:`availability_problems` (run by ``hourglass validate`` and before training, never by
    spec validation, so a checkpoint's recipe loads on a machine without the VAE's files).
    """

    #: distributions it needs beyond hourglass's own dependencies (shown by ``hourglass show``)
    requires: tuple[str, ...] = ()

    image_channels: int
    latent_channels: int
    downsample_factor: int

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """``{"requires": [...]}`` when it needs optional distributions, else ``{}``."""
        return {"requires": list(cls.requires)} if cls.requires else {}

    @classmethod
    def latent_channels_of(cls, spec: Any) -> int | None:
        """Latent channels of the VAE ``spec`` names, or ``None`` if known only once it is loaded."""
        return None

    @classmethod
    def downsample_factor_of(cls, spec: Any) -> int | None:
        """Its downsampling factor ``f``, or ``None`` if known only once it is loaded."""
        return None

    @classmethod
    def image_channels_of(cls, spec: Any) -> int | None:
        """Channels of the images it encodes, or ``None`` if known only once it is loaded."""
        return None

    @classmethod
    def availability_problems(cls, spec: Any) -> list[Problem]:
        """What keeps the VAE of ``spec`` from being loaded here (a missing folder, a missing package, ...).

        Cheap (no weights are read). Paths are relative to the VAE spec (``"path"``); the recipe
        layer prefixes ``vae``.

        Returns:
            The problems found; ``[]`` (the default) when it can be loaded.
        """
        return []

    @property
    def stochastic(self) -> bool:
        """Whether :meth:`encode` draws noise (from its ``generator``); ``False`` unless overridden."""
        return False

    def train(self, mode: bool = True) -> Autoencoder:
        """Stays in eval mode: the VAE is frozen (``mode`` is ignored)."""
        return super().train(False)

    def encode(self, images: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``(B, image_channels, H, W)`` in ``[-1, 1]`` -> ``(B, latent_channels, H/f, W/f)`` float32 latents.

        Args:
            images: on any device (moved to the VAE's); ``H`` and ``W`` multiples of ``f``.
            generator: the random source of a VAE that samples its posterior (ignored otherwise).
        """
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:
        """``(B, latent_channels, h, w)`` latents -> ``(B, image_channels, h f, w f)`` float32 images in ``[-1, 1]``."""
        raise NotImplementedError

    def latent_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The latent grid of ``(H, W)`` images (``ValueError`` when a side is not a multiple of ``f``)."""
        f = self.downsample_factor
        h, w = int(image_size[0]), int(image_size[1])
        if h % f or w % f:
            raise ValueError(f"{h}x{w} images do not divide into the VAE's {f}x{f} pixels per latent; "
                             f"use sides that are multiples of {f}")
        return h // f, w // f

    def image_size(self, latent_size: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of the images a ``(h, w)`` latent grid decodes to."""
        return int(latent_size[0]) * self.downsample_factor, int(latent_size[1]) * self.downsample_factor

    def extra_repr(self) -> str:
        return (f"image_channels={self.image_channels}, latent_channels={self.latent_channels}, "
                f"downsample_factor={self.downsample_factor}")


VAE.set_contract(Autoencoder)


def latent_mask(mask: Tensor, factor: int) -> Tensor:
    """An inpainting mask (1 = generate) at image size, on the ``factor``-times coarser latent grid.

    Each latent cell is generated as much as the most-generated pixel it covers (max pooling), so
    every pixel to be generated lies in a generated cell: the mask grows to whole ``factor x
    factor`` cells.

    Args:
        mask: ``(B, 1, H, W)`` in ``[0, 1]``, ``H`` and ``W`` multiples of ``factor``.
        factor: the VAE's downsampling factor.

    Returns:
        ``(B, 1, H / factor, W / factor)``.
    """
    if factor == 1:
        return mask
    return torch.nn.functional.max_pool2d(mask, kernel_size=factor, stride=factor)
