"""Drawing images from a trained denoiser: the sample grids of training and ``hourglass sample``.

Image ``i`` of a request uses seed ``seed + i`` for its initial noise and for the noise a
stochastic sampler adds (:func:`hourglass.diffusion.initial_noise`, :class:`NoiseSampler`), so an
image does not depend on the batch size or on the other images drawn with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hourglass.diffusion import CFGDenoiser, NoiseSampler, initial_noise
from hourglass.diffusion.conditioning import sampling_conditions
from hourglass.registry import SAMPLER, SCHEDULE

__all__ = ["autocast_context", "class_ids", "class_labels", "generate_images", "iter_generate", "step_callback"]


def autocast_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for low-precision ``dtype``, a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def class_ids(classes: str | Sequence[str | int], num_classes: int, names: Sequence[str] | None = None) -> list[int]:
    """Class ids from names or ids, e.g. ``"cat,dog"``, ``"0,2"``, ``["cat", 2]`` or ``"none"``.

    A value that is one of ``names`` means that class (exactly, else case-insensitively when that is
    unambiguous), otherwise an integer is an id; ``"none"`` is the unconditional "no class" (id
    ``num_classes``), unless a class has that name.

    Args:
        classes: comma-separated text, or a sequence of names and ids.
        num_classes: the model's classes (0: unconditional, then any class is an error).
        names: one name per class id (e.g. from :func:`hourglass.train.checkpoint.read_class_names`).

    Returns:
        The ids, in the order given.

    Raises:
        ValueError: one line naming the value and listing the valid names (or the id range).
    """
    if num_classes == 0:
        raise ValueError("this model has no classes (it is unconditional); drop the class")
    items = [p.strip() for p in classes.split(",")] if isinstance(classes, str) else list(classes)
    names = list(names) if names else []
    lowered: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        lowered.setdefault(name.lower(), []).append(i)
    ids = []
    for item in items:
        if isinstance(item, str) and item in names:
            ids.append(names.index(item))
        elif isinstance(item, str) and len(lowered.get(item.lower(), [])) == 1:
            ids.append(lowered[item.lower()][0])
        elif isinstance(item, str) and item.lower() == "none":
            ids.append(num_classes)
        else:
            try:
                i = int(item) if not isinstance(item, bool) else None
            except (TypeError, ValueError):
                i = None
            if i is None or not 0 <= i < num_classes or (isinstance(item, float) and not item.is_integer()):
                raise ValueError(f"{item!r} is not a class of this model; {_valid_classes(num_classes, names)}")
            ids.append(i)
    if not ids:
        raise ValueError(f"no class given; {_valid_classes(num_classes, names)}")
    return ids


def _valid_classes(num_classes: int, names: Sequence[str]) -> str:
    if names:
        shown = ", ".join(f"{i} {name}" for i, name in enumerate(names[:50]))
        more = f", ... ({len(names)} in all)" if len(names) > 50 else ""
        return f"its classes (id name): {shown}{more}, or 'none'"
    return f"give class ids 0..{num_classes - 1} (this run recorded no class names), or 'none'"


def class_labels(n: int, num_classes: int, fixed: Sequence[int] | None = None) -> Tensor | None:
    """Class ids of ``n`` images: ``fixed`` repeated, or ``0, 1, ..., num_classes - 1, 0, ...``.

    Args:
        n: number of images.
        num_classes: the model's classes (0: unconditional, returns None).
        fixed: ids to cycle through instead of every class (``num_classes`` = "no class").

    Returns:
        ``(n,)`` int64 labels, or None for an unconditional model.
    """
    if num_classes <= 0:
        return None
    ids = list(fixed) if fixed else list(range(num_classes))
    return torch.tensor([ids[i % len(ids)] for i in range(n)], dtype=torch.int64)


def iter_generate(
    denoiser: nn.Module,
    *,
    n: int,
    shape: Sequence[int],
    sampler: Any,
    schedule: Any,
    steps: int,
    seed: int = 0,
    labels: Tensor | None = None,
    cfg_scale: float = 1.0,
    uncond_class: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    on_step: Callable[[], None] | None = None,
    decode: Callable[[Tensor], Tensor] | None = None,
    cond: dict[str, Tensor] | None = None,
    conditioning: Any = None,
) -> Iterator[tuple[int, Tensor]]:
    """Generate ``n`` images in batches, yielding each batch as soon as it is done.

    Args:
        denoiser: ``D(x, sigma, class_cond=...) -> (B, C, H, W)`` (a preconditioned model).
        n: number of images.
        shape: ``(C, H, W)`` of one image.
        sampler: a sampler name, dict or spec (validated by the ``SAMPLER`` registry).
        schedule: a sigma-schedule name, dict or spec (``SCHEDULE`` registry).
        steps: sampler steps (``>= 1``).
        seed: image ``i`` uses seed ``seed + i``.
        labels: ``(n,)`` class ids, or None for an unconditional model.
        cfg_scale: classifier-free guidance scale (1 = none).
        uncond_class: the "no class" id used by guidance (the model's ``num_classes``).
        batch_size: images per denoiser batch.
        device: where to sample.
        dtype: autocast dtype (float32: none).
        on_step: called after every sampler step (e.g. to advance a progress bar).
        decode: maps each batch the sampler drew (on ``device``, float32, outside autocast) to what is
            yielded: a VAE's ``decode`` for latent models (``shape`` is then the latents').
        cond: per-image conditions beyond the class, ``n`` rows each: ``"mapping_cond": (n, D)``
            vectors (zeroed in guidance's unconditional branch) and/or ``"cond_image": (n, C', h, w)``
            condition images (resized and noised by :func:`~hourglass.diffusion.conditioning.sampling_conditions`).
        conditioning: the recipe's ``[conditioning]`` section (with a ``cond_image``).

    Yields:
        ``(start, images)``: index of the batch's first image and ``(b, C, H, W)`` float32 images
        on the CPU, nominally in [-1, 1] (with ``decode``: what it returns).
    """
    device = torch.device(device)
    sampler_obj = SAMPLER.build(sampler)
    sigmas = SCHEDULE.build(schedule)(steps, device=device)
    model: Any = denoiser
    guided = labels is not None or (cond or {}).get("mapping_cond") is not None
    if guided and cfg_scale != 1.0:
        model = CFGDenoiser(denoiser, cfg_scale, uncond_class)
    for start in range(0, n, batch_size):
        callback = step_callback(on_step) if on_step is not None else None
        seeds = [seed + i for i in range(start, min(n, start + batch_size))]
        x = initial_noise(seeds, shape, device=device) * sigmas[0]
        rows = slice(start, start + len(seeds))
        extra = sampling_conditions(cond, rows, seeds, shape[-2:], conditioning, device)
        if labels is not None:
            extra["class_cond"] = labels[rows].to(device)
        with torch.no_grad(), autocast_context(device, dtype):
            out = sampler_obj(
                model, x, sigmas, noise=NoiseSampler(seeds), callback=callback, extra_args=extra
            )
        if decode is not None:
            out = decode(out.float())
        yield start, out.float().cpu()


def step_callback(on_step: Callable[[], None]) -> Callable[[dict[str, Any]], None]:
    """A sampler callback calling ``on_step()`` once per step (second-order samplers report several
    evaluations per step: each step index counts once)."""
    seen: set[int] = set()

    def callback(info: dict[str, Any]) -> None:
        if info["i"] not in seen:
            seen.add(info["i"])
            on_step()

    return callback


def generate_images(denoiser: nn.Module, **kwargs: Any) -> Tensor:
    """All images of :func:`iter_generate` (same arguments) as one ``(n, C, H, W)`` CPU tensor."""
    return torch.cat([images for _, images in iter_generate(denoiser, **kwargs)])
