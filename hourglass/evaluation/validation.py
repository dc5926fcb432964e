"""Validation denoising loss at fixed noise levels: a sample-free, weight-free quality signal.

For each of ``n`` dataset images ``x0`` and each fixed ``sigma`` the denoiser sees
``x0 + sigma * noise`` with noise drawn from a per-image seed, and the loss
:meth:`KarrasDenoiser.loss <hourglass.diffusion.denoiser.KarrasDenoiser.loss>` is averaged over the
images. The default weighting, ``uniform``, makes that the plain x0-space MSE
``mean((D(x0 + sigma noise; sigma) - x0)^2)``, comparable across runs trained with different
weightings; pass the training weighting to get numbers on the training loss's scale.

Everything is fixed by ``seed``: image ``i``'s noise comes from its own generator
(``mix_seed(seed, i)``), so the result does not depend on the batch size, and datasets that take
``(index, draw)`` keys get fixed draws too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ValidationLoss", "default_validation_sigmas", "validation_loss"]


def default_validation_sigmas(num: int = 8, sigma_min: float = 0.05, sigma_max: float = 40.0) -> list[float]:
    """``num`` log-spaced noise levels from ``sigma_min`` to ``sigma_max`` (both included).

    Args:
        num: how many (>= 1; one level gives ``[sigma_min]``).
        sigma_min: the smallest, > 0.
        sigma_max: the largest, >= ``sigma_min``.

    Returns:
        The levels, ascending.
    """
    if num < 1 or not 0 < sigma_min <= sigma_max or not math.isfinite(sigma_max):
        raise ValueError(
            f"need num >= 1 and 0 < sigma_min <= sigma_max < inf, got num={num}, sigma_min={sigma_min}, "
            f"sigma_max={sigma_max}"
        )
    if num == 1:
        return [float(sigma_min)]
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return [math.exp(lo + (hi - lo) * i / (num - 1)) for i in range(num)]


@dataclass(frozen=True)
class ValidationLoss:
    """Per-sigma validation losses.

    Attributes:
        sigmas: the noise levels.
        per_sigma: the mean loss over the images at each level.
        mean: the mean of ``per_sigma``.
        n: number of images.
        seed: the noise seed.
        weighting: name of the loss weighting.
    """

    sigmas: tuple[float, ...]
    per_sigma: tuple[float, ...]
    mean: float
    n: int
    seed: int
    weighting: str

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _num_classes(denoiser: Any) -> int:
    inner = getattr(denoiser, "inner_model", denoiser)
    return int(getattr(getattr(inner, "spec", None), "num_classes", 0) or 0)


def _device_of(denoiser: Any) -> torch.device:
    if isinstance(denoiser, nn.Module):
        for tensor in denoiser.parameters():
            return tensor.device
        for tensor in denoiser.buffers():
            return tensor.device
    return torch.device("cpu")


def _weighting_name(weighting: Any) -> str:
    if isinstance(weighting, str):
        return weighting
    if isinstance(weighting, dict):
        return str(weighting.get("type", "custom"))
    return str(getattr(weighting, "type", None) or getattr(weighting, "__name__", None) or type(weighting).__name__)


def _item(dataset: Any, i: int, seed: int) -> dict[str, Any]:
    if getattr(dataset, "uses_draw_keys", False):
        from hourglass.data import mix_seed

        item = dataset[(i, mix_seed(seed, i, 1))]
    else:
        item = dataset[i]
    if isinstance(item, Tensor):
        item = {"image": item}
    if not isinstance(item, dict) or not isinstance(item.get("image"), Tensor) or item["image"].ndim != 3:
        raise TypeError(
            f"dataset item {i} must be a dict with an 'image' tensor (C, H, W) in [-1, 1] (or such a tensor), "
            f"got {type(item).__name__}"
        )
    return item


@torch.no_grad()
def validation_loss(
    denoiser: Any,
    dataset: Any,
    sigmas: Sequence[float] | None = None,
    n: int = 256,
    seed: int = 0,
    *,
    batch_size: int = 32,
    weighting: Any = "uniform",
    class_cond: bool | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> ValidationLoss:
    """The denoising loss of ``denoiser`` on the first ``n`` items of ``dataset`` at fixed ``sigmas``.

    The denoiser runs in eval mode (its mode is restored afterwards), without gradients.

    Args:
        denoiser: a denoiser with ``loss(x0, noise, sigma, weighting, **cond) -> (B,)`` (e.g.
            :class:`~hourglass.diffusion.denoiser.KarrasDenoiser`).
        dataset: items ``{"image": (C, H, W) in [-1, 1], "class_cond": (), "aug_cond": (9,)}`` (or
            plain image tensors).
        sigmas: the noise levels; None: :func:`default_validation_sigmas` (8 from 0.05 to 40).
        n: number of images (at most ``len(dataset)``).
        seed: fixes the noise (and the items' random draws).
        batch_size: images per forward (does not change the result beyond float rounding).
        weighting: the loss weighting (name, spec or callable); default ``uniform`` = x0-space MSE.
        class_cond: pass the items' ``class_cond`` to the model; None: when its spec has classes.
        device: where to compute; None: the denoiser's device.
        progress: show a progress bar.

    Returns:
        :class:`ValidationLoss` with the per-sigma and mean losses.

    Raises:
        ValueError: ``n`` or ``batch_size`` not positive, ``n`` beyond the dataset, or bad sigmas.
    """
    from hourglass.data import mix_seed

    sigmas = default_validation_sigmas() if sigmas is None else [float(s) for s in sigmas]
    if not sigmas or not all(math.isfinite(s) and s > 0 for s in sigmas):
        raise ValueError(f"sigmas must be a non-empty list of positive finite numbers, got {sigmas}")
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    if n > len(dataset):
        raise ValueError(f"the dataset has {len(dataset)} items but n={n}; lower n")
    device = torch.device(device) if device is not None else _device_of(denoiser)
    use_classes = _num_classes(denoiser) > 0 if class_cond is None else class_cond
    was_training = denoiser.training if isinstance(denoiser, nn.Module) else None
    if was_training:
        denoiser.eval()
    totals = torch.zeros(len(sigmas), dtype=torch.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="val loss", unit="img", dynamic_ncols=True)
    try:
        for start in range(0, n, batch_size):
            items = [_item(dataset, i, seed) for i in range(start, min(start + batch_size, n))]
            x0 = torch.stack([it["image"] for it in items]).to(device, torch.float32)
            noise = torch.stack([
                torch.randn((len(sigmas), *x0.shape[1:]), generator=torch.Generator().manual_seed(mix_seed(seed, i)))
                for i in range(start, start + len(items))
            ]).to(device)  # (b, S, C, H, W)
            cond: dict[str, Tensor] = {}
            if all("aug_cond" in it for it in items):
                cond["aug_cond"] = torch.stack([torch.as_tensor(it["aug_cond"]) for it in items]).to(device)
            if use_classes:
                cond["class_cond"] = torch.stack([torch.as_tensor(it["class_cond"]) for it in items]).to(device)
            for j, sigma in enumerate(sigmas):
                sigma_b = torch.full((x0.shape[0],), sigma, device=device)
                losses = denoiser.loss(x0, noise[:, j], sigma_b, weighting, **cond)
                totals[j] += losses.double().sum().cpu()
            if bar is not None:
                bar.update(len(items))
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            denoiser.train()
    per_sigma = (totals / n).tolist()
    return ValidationLoss(
        sigmas=tuple(sigmas), per_sigma=tuple(per_sigma), mean=float(sum(per_sigma) / len(per_sigma)), n=n,
        seed=seed, weighting=_weighting_name(weighting),
    )
