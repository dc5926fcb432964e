"""Held-out PSNR of a super-resolution model against bicubic upsampling.

The model's samples, the mean of several samples per input (an estimate of the posterior mean, which
PSNR rewards: a single sample of a good model carries detail that is plausible but not the
ground truth's) and bicubic upsampling of the same low-resolution inputs are each compared with the
held-out ground truth. PSNR is ``10 log10(1 / MSE)`` on images in [0, 1], averaged over images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hourglass.diffusion.conditioning import resize_image

__all__ = ["bicubic_upsample", "psnr", "superres_report"]


def psnr(images: Tensor, reference: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (clamped), computed on [0, 1].

    Args:
        images: ``(B, C, H, W)``.
        reference: ``(B, C, H, W)`` ground truth.

    Returns:
        ``(B,)`` float64.
    """
    a = (images.double().clamp(-1, 1) + 1) / 2
    b = (reference.double().clamp(-1, 1) + 1) / 2
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * mse.log10()


def bicubic_upsample(low: Tensor, size: Sequence[int]) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, C, H, W)`` by bicubic interpolation, clamped to [-1, 1]."""
    return resize_image(low.float(), size).clamp(-1, 1)


def superres_report(
    pipe: Any,
    dataset: Any,
    *,
    samples: int = 8,
    steps: int | None = None,
    sampler: Any = None,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Sample every item of a super-resolution ``dataset`` (e.g. the recipe's data at split ``"test"``) and
    score it.

    Args:
        pipe: a :class:`~hourglass.pipeline.Pipeline` of a ``[conditioning]`` model.
        dataset: items with ``"image" (C, H, W)`` and ``"cond_image" (C', h, w)``.
        samples: samples per input; the mean of them is scored too.
        steps: sampler steps (default: the run's).
        sampler: a sampler (default: the run's).
        seed: sample ``j`` of image ``i`` uses seed ``seed + j * len(dataset) + i``.

    Returns:
        ``{"n", "psnr_bicubic", "psnr_sample", "psnr_mean", "images": {"low", "bicubic", "sample", "mean",
        "truth"}}``: PSNRs in dB averaged over the items (``psnr_sample`` over every sample), and the
        ``(N, C, H, W)`` images (``sample``: each item's first).
    """
    items = [dataset[i] for i in range(len(dataset))]
    truth = torch.stack([item["image"] for item in items])
    low = torch.stack([item["cond_image"] for item in items])
    n = len(items)
    drawn = torch.stack(
        [
            pipe.sample(n, cond_image=low, steps=steps, sampler=sampler, seed=seed + j * n, batch_size=batch_size)
            for j in range(samples)
        ]
    )  # (samples, N, C, H, W)
    mean = drawn.clamp(-1, 1).mean(0)
    bicubic = bicubic_upsample(low, truth.shape[-2:])
    return {
        "n": n,
        "psnr_bicubic": float(psnr(bicubic, truth).mean()),
        "psnr_sample": float(torch.stack([psnr(d, truth) for d in drawn]).mean()),
        "psnr_mean": float(psnr(mean, truth).mean()),
        "images": {"low": low, "bicubic": bicubic, "sample": drawn[0], "mean": mean, "truth": truth},
    }
