"""Editing images with a :class:`~hourglass.pipeline.Pipeline`: image-to-image and inpainting.

:class:`Editing` holds the editing calls of a pipeline (the sampling ones are in
:mod:`hourglass.pipeline.core`): the images (and masks) are checked, the noise schedule is cut at
the requested strength, and each image is edited with its own seed, so a result does not depend on
``batch_size``. With a VAE the images are encoded, the mask is moved onto the latent grid, and the
kept pixels of an inpainted image are pasted back exactly after decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from hourglass.pipeline._errors import PipelineError, check_strength
from hourglass.pipeline.images import load_images, load_masks
from hourglass.train.sampling import step_callback
from hourglass.vae import latent_mask

__all__ = ["Editing"]


class Editing:
    """The editing calls of :class:`~hourglass.pipeline.Pipeline` (a base class: it uses the pipeline's
    model, denoiser, VAE and argument checks)."""

    # -- editing ------------------------------------------------------------------------------------
    def load_images(self, sources: Any, resolution: int | Sequence[int] | None = None) -> Tensor:
        """:func:`load_images` at the model's channels and size (or ``resolution``): ``(B, C, H, W)`` in [-1, 1]."""
        return load_images(sources, size=self._size(resolution), channels=self.channels)

    def _inputs(self, images: Any, resolution: Any) -> Tensor:
        if not isinstance(images, Tensor):
            return self.load_images(images, resolution)
        x = images[None] if images.ndim == 3 else images
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise PipelineError(f"images must be (B, {self.channels}, H, W) (or one (C, H, W)) in [-1, 1], "
                                f"got shape {tuple(images.shape)}")
        if x.shape[0] == 0:
            raise PipelineError("images is an empty batch")
        if not x.is_floating_point():
            raise PipelineError(f"images must be float in [-1, 1], got dtype {x.dtype}")
        h, w = x.shape[-2:]
        problem = self.resolution_problems((int(h), int(w)))
        if problem:
            raise PipelineError(f"images of {h}x{w} do not fit this model: {problem}; resize them (load_images)")
        return x.detach().float().cpu()

    def _masks(self, mask: Any, x: Tensor) -> Tensor:
        hw = tuple(x.shape[-2:])
        if not isinstance(mask, Tensor):
            m = load_masks(mask, size=hw)  # type: ignore[arg-type]
        else:
            m = mask.detach().float().cpu()
            m = m[None, None] if m.ndim == 2 else m[:, None] if m.ndim == 3 else m
            if m.ndim != 4 or m.shape[1] not in (1, x.shape[1]) or tuple(m.shape[-2:]) != hw:
                raise PipelineError(f"mask must be (H, W), (B, H, W) or (B, 1, H, W) with H, W = {hw[0]}, {hw[1]} "
                                    f"(1 = generate, 0 = keep), got shape {tuple(mask.shape)}")
            if bool(((m < 0) | (m > 1)).any()):
                raise PipelineError("mask values must lie in [0, 1] (1 = generate, 0 = keep)")
        if m.shape[0] not in (1, x.shape[0]):
            raise PipelineError(f"got {m.shape[0]} masks for {x.shape[0]} images; give one mask, or one per image")
        return m

    def _edit(
        self, kind: str, images: Any, mask: Any, *, n: Any, classes: Any, cfg: Any, sampler: Any, schedule: Any,
        steps: Any, seed: Any, batch_size: Any, resolution: Any, dtype: Any, progress: bool,
        sampler_options: dict[str, Any], run: Callable[..., Tensor], sigmas_for: Callable[[Tensor], tuple[Tensor, int]],
    ) -> Tensor:
        from hourglass.diffusion import CFGDenoiser
        from hourglass.registry import SAMPLER, SCHEDULE
        from hourglass.train.sampling import autocast_context

        x = self._inputs(images, resolution)
        m = self._masks(mask, x) if kind == "inpaint" else None
        n, steps, seed, batch_size, dtype = self._settings(len(x) if n is None else n, steps, seed, batch_size, dtype)
        labels = self._labels(n, classes, default_every_class=False)
        scale = self._cfg(cfg)
        sampler_obj = SAMPLER.build(self._sampler(sampler, sampler_options))
        device = self.device
        sigmas, steps_run = sigmas_for(SCHEDULE.build(self._schedule(schedule))(steps, device=device))
        order = torch.arange(n) % len(x)  # more images than inputs: the inputs in turn
        x = x[order]
        if m is not None and m.shape[0] > 1:
            m = m[order]
        denoiser: Any = self.denoiser
        if labels is not None and scale != 1.0 and bool((labels != self.num_classes).any()):
            denoiser = CFGDenoiser(self.denoiser, scale, self.num_classes)
        bar = self._bar(progress, math.ceil(n / batch_size) * steps_run, kind.replace("_", "-"))
        out = []
        try:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                seeds = [seed + i for i in range(start, stop)]
                extra = {} if labels is None else {"class_cond": labels[start:stop].to(device)}
                batch_mask = None if m is None else (m if m.shape[0] == 1 else m[start:stop]).to(device)
                images = x[start:stop].to(device)
                inputs, model_mask = images, batch_mask
                if self.vae is not None:  # edit the latents: encode the images, the mask on the latent grid
                    inputs = self._encode(images, seeds)
                    if batch_mask is not None:
                        model_mask = latent_mask(batch_mask, self.vae.downsample_factor)
                with torch.no_grad(), autocast_context(device, dtype):
                    result = run(
                        sampler_obj, denoiser, inputs, sigmas, model_mask, seeds=seeds,
                        callback=step_callback(bar.update) if bar is not None else None, extra_args=extra,
                    )
                if self.vae is not None:
                    result = self._decode(result.float())
                    if batch_mask is not None:  # the kept pixels are the input's, exactly
                        result = batch_mask * result + (1 - batch_mask) * images
                out.append(result.float().cpu())
        finally:
            if bar is not None:
                bar.close()
        return torch.cat(out)

    def image_to_image(
        self,
        images: Any,
        *,
        strength: float | None = None,
        sigma_start: float | None = None,
        n: int | None = None,
        classes: Any = None,
        cfg: float | None = None,
        sampler: Any = None,
        schedule: Any = None,
        steps: int | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        resolution: int | Sequence[int] | None = None,
        dtype: str | torch.dtype = "float32",
        progress: bool = False,
        **sampler_options: Any,
    ) -> Tensor:
        """SDEdit (Meng et al. 2022): noise the images part of the way and sample back.

        The images are noised to the schedule's level at ``strength`` (or to ``sigma_start``) and the
        sampler runs the rest of the schedule: ``strength`` 0.25 of a 40-step schedule runs its last
        10 steps and keeps the layout and colours; 1 runs all 40 from (nearly) pure noise, so little
        of the input survives.

        Args:
            images: ``(B, C, H, W)`` (or ``(C, H, W)``) in ``[-1, 1]`` at a size the model takes, or
                paths / folders / PIL images (read by :meth:`load_images` at ``resolution``).
            strength: in ``(0, 1]``: the fraction of the schedule that is run (default 0.75).
            sigma_start: or: the noise level to start from (the schedule's levels below it follow).
            n: number of results (default: one per image; more cycle through the images).
            classes: as for :meth:`sample`; default: no class (unconditional).
            cfg, sampler, schedule, steps, seed, batch_size, dtype, progress, **sampler_options: as
                for :meth:`sample` (``steps`` counts the whole schedule).
            resolution: the size paths and PIL images are read at (default: the training size).

        Returns:
            ``(n, C, H, W)`` float32 on the CPU, in ``[-1, 1]``.

        With a VAE the images are encoded (posterior mean, or a sample drawn from image ``i``'s seed
        ``seed + i`` when the VAE samples), edited as latents and decoded.

        Raises:
            PipelineError: e.g. ``strength`` outside (0, 1], an unreadable image.
        """
        from hourglass.diffusion import image_to_image, truncate_sigmas

        if strength is not None and sigma_start is not None:
            raise PipelineError("give strength or sigma_start, not both")
        if sigma_start is None:
            strength = 0.75 if strength is None else strength
            check_strength(strength)
        elif isinstance(sigma_start, bool) or not isinstance(sigma_start, (int, float)) or not (
                math.isfinite(sigma_start) and sigma_start > 0):
            raise PipelineError(f"sigma_start must be a positive noise level, got {sigma_start!r}")

        def sigmas_for(full: Tensor) -> tuple[Tensor, int]:
            try:
                kept = truncate_sigmas(full, strength=None if sigma_start is not None else strength,
                                       sigma_start=sigma_start)
            except ValueError as exc:
                raise PipelineError(str(exc)) from None
            return kept, len(kept) - 1

        def run(sampler_obj: Any, denoiser: Any, x: Tensor, sigmas: Tensor, mask: Any, **kw: Any) -> Tensor:
            return image_to_image(sampler_obj, denoiser, x, sigmas, strength=1.0, **kw)

        return self._edit(
            "image_to_image", images, None, n=n, classes=classes, cfg=cfg, sampler=sampler, schedule=schedule,
            steps=steps, seed=seed, batch_size=batch_size, resolution=resolution, dtype=dtype, progress=progress,
            sampler_options=sampler_options, run=run, sigmas_for=sigmas_for,
        )

    def inpaint(
        self,
        images: Any,
        mask: Any,
        *,
        strength: float = 1.0,
        jumps: int = 0,
        jump_length: int = 1,
        n: int | None = None,
        classes: Any = None,
        cfg: float | None = None,
        sampler: Any = None,
        schedule: Any = None,
        steps: int | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        resolution: int | Sequence[int] | None = None,
        dtype: str | torch.dtype = "float32",
        progress: bool = False,
        **sampler_options: Any,
    ) -> Tensor:
        """Fill the masked part of the images; the rest is kept exactly.

        Replacement method (with optional RePaint resampling, Lugmayr et al. 2022): see
        :mod:`hourglass.diffusion.inpaint`.

        Args:
            images: as for :meth:`image_to_image`.
            mask: 1 = generate, 0 = keep (in between blends): ``(H, W)``, ``(B, H, W)`` or
                ``(B, 1, H, W)`` tensors (one mask, or one per image), or mask images / a folder
                (white = generate, read with the images' geometry by :func:`load_masks`).
            strength: 1 (default) fills the mask from pure noise; below 1 the masked part starts
                from the image noised part of the way (SDEdit inside the mask).
            jumps: RePaint: how many extra times each segment of ``jump_length`` steps is redone.
            jump_length: steps per resampled segment.
            n, classes, cfg, sampler, schedule, steps, seed, batch_size, resolution, dtype, progress: as for
                :meth:`image_to_image`.
            **sampler_options: as for :meth:`image_to_image`.

        Returns:
            ``(n, C, H, W)`` float32 on the CPU, equal to the input wherever the mask is 0.

        With a VAE, inpainting happens on the latent grid, an approximation: the images are
        encoded, the mask is reduced to the latent grid by max pooling (a latent cell is generated as
        much as the most-generated pixel it covers, so the generated region grows to whole ``f x f``
        cells), the latents are inpainted and decoded, and the input's pixels are pasted back where
        the mask is 0 (blended where it is between 0 and 1). The kept pixels are therefore exact,
        but a seam can show at the mask's edge: the decoder saw the kept cells' latents, not their
        pixels, and the generated cells reach up to ``f - 1`` pixels past the mask.
        """
        from hourglass.diffusion import inpaint_images

        check_strength(strength)
        for name, value, low in (("jumps", jumps, 0), ("jump_length", jump_length, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PipelineError(f"{name} must be an integer >= {low}, got {value!r}")

        def sigmas_for(full: Tensor) -> tuple[Tensor, int]:  # inpaint_images truncates the schedule itself
            n = len(full) - 1
            return full, n if strength == 1 else max(1, round(strength * n))

        def run(sampler_obj: Any, denoiser: Any, x: Tensor, sigmas: Tensor, mask: Tensor, **kw: Any) -> Tensor:
            return inpaint_images(sampler_obj, denoiser, x, mask, sigmas, strength=strength, jumps=jumps,
                                  jump_length=jump_length, **kw)

        return self._edit(
            "inpaint", images, mask, n=n, classes=classes, cfg=cfg, sampler=sampler, schedule=schedule,
            steps=steps, seed=seed, batch_size=batch_size, resolution=resolution, dtype=dtype, progress=progress,
            sampler_options=sampler_options, run=run, sigmas_for=sigmas_for,
        )

