"""``autoencoder_kl``: diffusers' ``AutoencoderKL`` (Stable Diffusion's VAE and its relatives).

diffusers is an optional dependency (``pip install "hourglass-diffusion[vae]"``): this module
imports it only when a VAE is built, so recipes that name one validate without it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from hourglass.registry import VAE
from hourglass.spec import Problem, Spec
from hourglass.vae._base import Autoencoder

__all__ = ["AutoencoderKLSpec", "AutoencoderKLVAE", "INSTALL_HINT", "DEFAULT_SCALING_FACTOR", "hub_offline"]

#: how to install the optional dependency (said by every message about it)
INSTALL_HINT = 'pip install "hourglass-diffusion[vae]"'
#: Stable Diffusion 1.x/2.x's factor: used when a config does not give one
DEFAULT_SCALING_FACTOR = 0.18215
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read now, not when huggingface_hub was imported)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cache_dir() -> str | None:
    """``HF_HUB_CACHE`` as set now (``None``: huggingface_hub's default)."""
    return os.environ.get("HF_HUB_CACHE") or None


class AutoencoderKLSpec(Spec):
    """What a recipe may set for ``autoencoder_kl`` (loading reads only ``path`` and its config)."""

    type: Literal["autoencoder_kl"] = "autoencoder_kl"
    path: str = Field(
        ..., min_length=1,
        description='a local folder written by AutoencoderKL.save_pretrained, or a Hub id "owner/name" (read from '
        "the Hugging Face cache, downloaded when online and missing)",
    )
    subfolder: str = Field("", description='folder inside path holding the VAE, e.g. "vae" of a pipeline repository')
    revision: str | None = Field(None, description="Hub branch, tag or commit (default: main); unused for a local folder")
    scaling_factor: float | None = Field(
        None, gt=0,
        description="latents = scaling_factor * (z - shift_factor); default: the config's scaling_factor, else 0.18215",
    )
    shift_factor: float | None = Field(
        None, description="subtracted before scaling (SD3 / Flux VAEs); default: the config's shift_factor, else 0",
    )
    latents: Literal["mean", "sample"] = Field(
        "mean",
        description="encode to the posterior's mean (deterministic: a latent dataset equals on-the-fly encoding) "
        "or to a sample of it",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="dtype of the VAE's weights and computation (latents and images are float32)"
    )
    latent_channels: int | None = Field(
        None, gt=0,
        description="its latent channels, declared so that validation checks model.in_channels without loading "
        "anything (checked against the config when loaded); default: read from the config",
    )
    downsample_factor: int | None = Field(
        None, gt=0,
        description="pixels per latent along a side, declared (checked against the config when loaded); default: "
        "read from the config (2^(blocks - 1), 8 for Stable Diffusion's VAE)",
    )


def _where(spec: AutoencoderKLSpec) -> str:
    return spec.path + (f" (subfolder {spec.subfolder})" if spec.subfolder else "")


def _import_diffusers() -> Any:
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:
        raise ImportError(f"the autoencoder_kl VAE needs diffusers, an optional dependency: {INSTALL_HINT} "
                          f"({exc})") from None
    return AutoencoderKL


@VAE.register("autoencoder_kl")
class AutoencoderKLVAE(Autoencoder):
    """diffusers' ``AutoencoderKL`` (Stable Diffusion's VAE), from a local folder or the Hugging Face cache.

    Encodes to ``scaling_factor * (z - shift_factor)`` with ``z`` the posterior's mean (or a sample
    of it, ``latents = "sample"``); decodes ``latents / scaling_factor + shift_factor``. The factors
    default to those of the model's config. ``HF_HUB_OFFLINE=1`` loads from the cache only
    (``HF_HUB_CACHE`` says where it is); a local folder never touches the network.
    """

    Spec = AutoencoderKLSpec
    requires = (f"diffusers ({INSTALL_HINT})",)

    def __init__(self, spec: AutoencoderKLSpec, **_: object) -> None:
        super().__init__()
        self.spec = spec
        self.model = self._load(spec)
        config = self.model.config
        self.image_channels = int(config.in_channels)
        self.latent_channels = int(config.latent_channels)
        self.downsample_factor = 2 ** (len(config.block_out_channels) - 1)
        for name, declared, found in (("latent_channels", spec.latent_channels, self.latent_channels),
                                      ("downsample_factor", spec.downsample_factor, self.downsample_factor)):
            if declared is not None and declared != found:
                raise ValueError(f"vae.{name} = {declared} is declared, but the AutoencoderKL at {_where(spec)} has "
                                 f"{found}; set vae.{name} = {found} or remove it")
        if int(config.out_channels) != self.image_channels:
            raise ValueError(f"the AutoencoderKL at {_where(spec)} encodes {self.image_channels}-channel images but "
                             f"decodes to {config.out_channels} channels; hourglass needs the same channels both ways")
        scaling = spec.scaling_factor if spec.scaling_factor is not None else getattr(config, "scaling_factor", None)
        shift = spec.shift_factor if spec.shift_factor is not None else getattr(config, "shift_factor", None)
        #: latents = scaling_factor * (z - shift_factor)
        self.scaling_factor = float(scaling if scaling is not None else DEFAULT_SCALING_FACTOR)
        self.shift_factor = float(shift if shift is not None else 0.0)
        self.weights_dtype = getattr(torch, spec.dtype)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _load(spec: AutoencoderKLSpec) -> Any:
        autoencoder_kl = _import_diffusers()
        local = Path(spec.path).expanduser()
        kwargs: dict[str, Any] = {"torch_dtype": getattr(torch, spec.dtype)}
        if importlib.util.find_spec("accelerate") is None:  # what diffusers falls back to, without its warning
            kwargs["low_cpu_mem_usage"] = False
        if spec.subfolder:
            kwargs["subfolder"] = spec.subfolder
        if local.is_dir():
            source, kwargs["local_files_only"] = str(local), True
        else:
            source = spec.path
            kwargs.update(revision=spec.revision, local_files_only=hub_offline(), cache_dir=_cache_dir())
        try:
            with warnings.catch_warnings():  # diffusers passes huggingface_hub an argument it has deprecated
                warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
                return autoencoder_kl.from_pretrained(source, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:  # missing files, a config of another class, bad weights
            reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            offline = " (HF_HUB_OFFLINE is set: only the cache was read)" if not local.is_dir() and hub_offline() else ""
            raise OSError(f"cannot load the AutoencoderKL at {_where(spec)}{offline}: {reason}") from None

    # -- what recipes ask before loading ------------------------------------------------------------
    @classmethod
    def latent_channels_of(cls, spec: AutoencoderKLSpec) -> int | None:
        """``spec.latent_channels`` (``None`` unless declared: the config says, once loaded)."""
        return spec.latent_channels

    @classmethod
    def downsample_factor_of(cls, spec: AutoencoderKLSpec) -> int | None:
        """``spec.downsample_factor`` (``None`` unless declared)."""
        return spec.downsample_factor

    @classmethod
    def availability_problems(cls, spec: AutoencoderKLSpec) -> list[Problem]:
        """diffusers must be installed; a local folder must hold ``config.json`` and weights; a Hub id must be
        in the cache when ``HF_HUB_OFFLINE`` is set (online, a missing one is downloaded when loaded)."""
        if importlib.util.find_spec("diffusers") is None:
            return [Problem("type", "autoencoder_kl needs diffusers, which is not installed", INSTALL_HINT)]
        local = Path(spec.path).expanduser()
        sub = f"{spec.subfolder.strip('/')}/" if spec.subfolder else ""
        if local.is_dir():
            folder = local / sub if sub else local
            if not (folder / "config.json").is_file():
                return [Problem("subfolder" if sub else "path", f"{folder} holds no config.json",
                                "point path (and subfolder) at the folder AutoencoderKL.save_pretrained wrote")]
            if not any((folder / name).is_file() for name in _WEIGHTS):
                return [Problem("path", f"{folder} holds no weights ({' or '.join(_WEIGHTS)})",
                                "point path at a complete save_pretrained folder")]
            return []
        if not _HUB_ID.match(spec.path):
            return [Problem("path", f"no folder {spec.path} here, and it is not a Hub id (owner/name)",
                            "give an existing folder, or a Hugging Face repository id")]
        if not hub_offline():
            return []
        from huggingface_hub import try_to_load_from_cache

        def cached(name: str) -> bool:
            found = try_to_load_from_cache(spec.path, sub + name, cache_dir=_cache_dir(), revision=spec.revision)
            return isinstance(found, str)

        where = _cache_dir() or "the default Hugging Face cache"
        if not cached("config.json") or not any(cached(name) for name in _WEIGHTS):
            return [Problem("path", f"{spec.path}{f' ({sub[:-1]})' if sub else ''} is not in {where}, and "
                            "HF_HUB_OFFLINE is set", "download it once with network access, or set HF_HUB_CACHE "
                            "to the cache that holds it")]
        return []

    # -- encoding and decoding ------------------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        """``latents = "sample"``: encode draws a posterior sample."""
        return self.spec.latents == "sample"

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, images: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``scaling_factor * (z - shift_factor)``, ``z`` the posterior's mean (or a sample, drawn from ``generator``)."""
        if images.ndim != 4 or images.shape[1] != self.image_channels:
            raise ValueError(f"the VAE encodes (B, {self.image_channels}, H, W) images, got shape {tuple(images.shape)}")
        self.latent_size(tuple(images.shape[-2:]))  # sides must be multiples of the factor
        with torch.no_grad():
            posterior = self.model.encode(images.to(self._device(), self.weights_dtype)).latent_dist
            z = posterior.mean if self.spec.latents == "mean" else posterior.sample(generator=generator)
            return (z.float() - self.shift_factor) * self.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """``decode(latents / scaling_factor + shift_factor)``, float32, clipped to ``[-1, 1]``."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"the VAE decodes (B, {self.latent_channels}, h, w) latents, got shape "
                             f"{tuple(latents.shape)}")
        with torch.no_grad():
            z = latents.float() / self.scaling_factor + self.shift_factor
            images = self.model.decode(z.to(self._device(), self.weights_dtype)).sample
            return images.float().clamp(-1.0, 1.0)
