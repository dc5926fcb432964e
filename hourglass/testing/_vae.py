"""Checks of the ``vae`` family (private): a VAE loaded from its spec, encoding and decoding a small batch."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor

from hourglass.registry import Registry
from hourglass.testing._common import BATCH, fail

__all__ = ["LATENT_GRID", "check_vae"]

#: the latent grid of the images the check encodes: ``(4 f) x (4 f)`` pixels
LATENT_GRID = 4
#: how far a batched result may differ from the same item encoded (decoded) alone, relative to its scale
_BATCH_TOL = 1e-4


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _tensor_problem(out: Any, shape: tuple[int, ...]) -> str | None:
    if not isinstance(out, Tensor):
        return f"returned {type(out).__name__}, not a tensor"
    if tuple(out.shape) != shape or out.dtype != torch.float32:
        return f"returned {out.dtype} {tuple(out.shape)}; expected float32 {shape}"
    if not bool(torch.isfinite(out).all()):
        return "returned NaN or inf values"
    if out.requires_grad:
        return "returned a tensor that requires grad; encode and decode run without gradients"
    return None


def check_vae(registry: Registry, spec: BaseModel, context: dict[str, Any], seed: int) -> list[str]:
    """Built from ``spec``: frozen (no parameter requires grad, eval mode after ``train()``); declares
    positive ``image_channels``, ``latent_channels`` and ``downsample_factor`` equal to its
    ``*_of(spec)`` declarations where those are not ``None``; on ``B`` random images of ``(4 f) x (4 f)``
    in [-1, 1], ``encode`` gives float32 ``(B, latent_channels, 4, 4)`` latents and ``decode`` float32
    ``(B, image_channels, 4 f, 4 f)`` images in [-1, 1], finite and without gradients; both are
    deterministic (encode under the same generator seed); encode under another seed differs exactly
    when the VAE is ``stochastic``; a batch equals its items done alone (within ``1e-4`` of the
    output's scale: latent datasets are encoded in batches; encode only when not ``stochastic``)."""
    fam, name = registry.family, spec.type  # type: ignore[attr-defined]
    cls = registry.get(name)
    try:
        vae = registry.build(spec, **context)
    except Exception as exc:
        raise fail(fam, name, "vae", f"building it from {spec!r} raised {type(exc).__name__}: {exc}") from exc
    declared = {"image_channels": cls.image_channels_of(spec), "latent_channels": cls.latent_channels_of(spec),
                "downsample_factor": cls.downsample_factor_of(spec)}
    for what, value in declared.items():
        built = getattr(vae, what, None)
        if not _positive_int(built):
            raise fail(fam, name, "vae", f"its instances must expose {what} (a positive int), got {built!r}")
        if value is not None and value != built:
            raise fail(fam, name, "vae", f"{what}_of(spec) declares {value} but the built VAE has {built}; recipe "
                       "validation compares the declaration with the model and the data")
    trainable = [n for n, p in vae.named_parameters() if p.requires_grad]
    if trainable:
        raise fail(fam, name, "vae", f"parameters {trainable[:3]} require grad; a VAE is frozen (requires_grad_(False))")
    vae.train()
    if any(m.training for m in vae.modules()):
        raise fail(fam, name, "vae", "train() put it in training mode; a VAE stays in eval mode (override train())")
    c, lc, f = vae.image_channels, vae.latent_channels, vae.downsample_factor
    side = LATENT_GRID * f
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(BATCH, c, side, side, generator=gen) * 2 - 1

    def encode(x: Tensor, offset: int = 1) -> Tensor:
        return vae.encode(x, generator=torch.Generator(x.device).manual_seed(seed + offset))

    latents = encode(images)
    problem = _tensor_problem(latents, (BATCH, lc, LATENT_GRID, LATENT_GRID))
    if problem:
        raise fail(fam, name, "vae", f"encode of {tuple(images.shape)} images {problem}")
    decoded = vae.decode(latents)
    problem = _tensor_problem(decoded, (BATCH, c, side, side))
    if problem:
        raise fail(fam, name, "vae", f"decode of {tuple(latents.shape)} latents {problem}")
    lo, hi = decoded.min().item(), decoded.max().item()
    if lo < -1 or hi > 1:
        raise fail(fam, name, "vae", f"decoded pixels span [{lo:.3g}, {hi:.3g}]; decode returns images in [-1, 1] (clip)")
    for what, first, again in (("encode", latents, encode(images)), ("decode", decoded, vae.decode(latents))):
        if not torch.equal(first, again):
            raise fail(fam, name, "vae", f"{what} gave two different results for the same input (and generator seed)")
    stochastic = vae.stochastic
    if not isinstance(stochastic, bool):
        raise fail(fam, name, "vae", f"stochastic is {stochastic!r}, not a bool")
    if torch.equal(encode(images, offset=2), latents) == stochastic:
        raise fail(fam, name, "vae", "encode under another generator seed gave " + (
            "the same latents, but it declares stochastic = True" if stochastic else
            "other latents, but it declares stochastic = False (override stochastic when encode draws noise)"))
    pairs = [("decode", vae.decode, latents, decoded)]
    if not stochastic:
        pairs.insert(0, ("encode", encode, images, latents))
    for what, fn, x, out in pairs:
        alone = torch.cat([fn(x[i : i + 1]) for i in range(BATCH)])
        scale = out.abs().max().item() + 1e-6
        if (alone - out).abs().max().item() > _BATCH_TOL * scale:
            raise fail(fam, name, "vae", f"{what} of a batch differs from its items done one at a time (by "
                       f"{(alone - out).abs().max().item():.3g}); each item must be independent of the others")
    return ["vae"]
