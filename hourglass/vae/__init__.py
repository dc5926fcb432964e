"""VAEs for latent diffusion: the ``vae`` family and its built-in ``autoencoder_kl``.

A recipe that names a VAE (``[vae]``) trains and samples its model on latents: the trainer encodes
each batch of images (:meth:`Autoencoder.encode`, without gradients: the VAE is frozen) and every
sampling path decodes what the model draws (:meth:`Autoencoder.decode`). Build one with
``VAE.build({"type": "autoencoder_kl", "path": "folder-or-owner/name"})``::

    latents = vae.encode(images)   # (B, 3, H, W) in [-1, 1] -> (B, 4, H/8, W/8), scaled
    images = vae.decode(latents)   # and back, clipped to [-1, 1]

``autoencoder_kl`` needs diffusers (``pip install "hourglass-diffusion[vae]"``), imported only when
a VAE is built.
"""

from hourglass.vae import autoencoder_kl
from hourglass.vae._base import Autoencoder, latent_mask
from hourglass.vae.autoencoder_kl import AutoencoderKLSpec, AutoencoderKLVAE

__all__ = ["Autoencoder", "AutoencoderKLSpec", "AutoencoderKLVAE", "autoencoder_kl", "latent_mask"]
