"""What a :class:`~hourglass.train.Trainer` trains on: the recipe's frozen VAE and its dataset.

Validation checked what the dataset and the VAE declare; what they learn only from their files
(class count, channels) is checked here, when they are built, by the same rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hourglass.data import Augmented
from hourglass.diffusion.conditioning import condition_image, train_levels
from hourglass.recipe import channel_problems, class_problems, vae_channel_problems
from hourglass.recipe.conditioning import cond_channel_problem, mapping_cond_problems
from hourglass.registry import DATASET, VAE

if TYPE_CHECKING:
    from hourglass.train.trainer import Trainer

__all__ = ["batch_conditions", "build_vae", "build_dataset", "grid_conditions"]


def _fail(problems: list[Any]) -> None:
    from hourglass.train.trainer import TrainConfigError

    if problems:
        raise TrainConfigError("; ".join(str(p) for p in problems))


def build_vae(trainer: Trainer) -> Any:
    """The recipe's VAE on the trainer's device (None without one); its channels checked against the model's.

    Raises:
        TrainConfigError: the VAE cannot be loaded (missing files, diffusers not installed, a bad
            config), or its latent channels are not the model's input channels.
    """
    from hourglass.train.trainer import TrainConfigError

    spec = trainer.recipe.vae
    if spec is None:
        return None
    try:
        vae = VAE.build(spec)
    except (OSError, ImportError, ValueError) as exc:
        raise TrainConfigError(f"vae ({spec.type}): {' '.join(str(exc).split())}") from None
    _fail(vae_channel_problems(trainer.channels, vae.latent_channels, spec.type))
    return vae.to(trainer.device)


def build_dataset(trainer: Trainer) -> tuple[Any, list[str] | None]:
    """The training dataset at ``trainer.data_resolution`` (augmented when the recipe says so), and its
    class names (one per class id; None when the data names none).

    Raises:
        TrainConfigError: the data cannot be read, or its classes or channels do not fit the model
            (or, when the VAE encodes it, the VAE's images).
    """
    from hourglass.train.trainer import TrainConfigError

    data = trainer.recipe.data
    try:
        dataset = DATASET.build(data.dataset, resolution=trainer.data_resolution, split="train")
    except (OSError, ValueError) as exc:  # e.g. files that vanished since the check, none readable
        raise TrainConfigError(f"data.dataset ({data.dataset.type}): {' '.join(str(exc).split())}") from None
    problems = class_problems(trainer.num_classes, dataset.num_classes, data.dataset.type)
    if not trainer.encodes:
        problems += channel_problems(trainer.channels, dataset.channels)
    else:
        problems += vae_channel_problems(data_channels=dataset.channels, image_channels=trainer.vae.image_channels,
                                         vae=trainer.recipe.vae.type, dataset=data.dataset)
    cond = trainer.recipe.conditioning
    extra = cond.mapping_extra if cond is not None else 0
    problems += mapping_cond_problems(trainer.model.spec.mapping_cond_dim, getattr(dataset, "mapping_cond_dim", 0),
                                      extra, data.dataset.type)
    image_channels = cond.image_channels if cond is not None else 0
    if getattr(dataset, "cond_channels", 0) != image_channels:
        problems.append(cond_channel_problem(image_channels, getattr(dataset, "cond_channels", 0), data.dataset.type))
    _fail(problems)
    names = [str(n) for n in (getattr(dataset, "class_names", None) or [])]
    class_names = names if trainer.num_classes and len(names) == trainer.num_classes else None
    if data.augment.p > 0:
        dataset = Augmented(dataset, data.augment, seed=trainer.recipe.train.seed)
    return dataset, class_names


def batch_conditions(trainer: Trainer, batch: dict[str, Tensor], gen: torch.Generator) -> dict[str, Tensor]:
    """The model's conditioning of one micro-batch, on the trainer's device.

    ``aug_cond`` as loaded; with ``train.class_dropout``, one mask (drawn from ``gen``) drops the
    class (to the "no class" id ``num_classes``) and zeroes the data's ``mapping_cond`` vectors of
    the same samples, so the model learns the zero vector as "no condition" for guidance. With a
    ``[conditioning]`` image, ``cond_image`` is the condition resized to the model's resolution
    plus noise of a level drawn per sample (``cond_noise``, :func:`~hourglass.diffusion.conditioning.train_levels`).

    Args:
        batch: ``{"image": (b, C, H, W), "class_cond": (b,), "aug_cond": (b, 9)}``, optionally
            ``"mapping_cond": (b, D)`` and ``"cond_image": (b, C', h, w)``.
        gen: the micro-step's generator on the trainer's device.

    Returns:
        Keyword arguments of the denoiser: ``aug_cond``, and ``class_cond``, ``mapping_cond``,
        ``cond_image (b, C', H, W)``, ``cond_noise (b,)`` where they apply.
    """
    dev, t = trainer.device, trainer.recipe.train
    n = batch["image"].shape[0]
    cond: dict[str, Tensor] = {"aug_cond": batch["aug_cond"].to(dev, non_blocking=True)}
    vectors = batch["mapping_cond"].to(dev, non_blocking=True).float() if "mapping_cond" in batch else None
    drop = None
    if t.class_dropout > 0 and (trainer.num_classes or vectors is not None):  # classifier-free guidance
        drop = torch.rand(n, generator=gen, device=dev) < t.class_dropout
    if trainer.num_classes:
        labels = batch["class_cond"].to(dev, non_blocking=True)
        cond["class_cond"] = labels if drop is None else torch.where(drop, torch.full_like(labels, trainer.num_classes),
                                                                    labels)
    if vectors is not None:
        cond["mapping_cond"] = vectors if drop is None else vectors * (~drop)[:, None].to(vectors.dtype)
    spec = trainer.recipe.conditioning
    if spec is not None and spec.image_channels:
        image = batch["cond_image"].to(dev, non_blocking=True)
        levels = train_levels(n, spec, gen, dev)
        size = (n, image.shape[1], *trainer.image_size)
        noise = torch.randn(size, generator=gen, device=dev)
        cond["cond_image"] = condition_image(image, trainer.image_size, levels, noise, spec.resize)
        cond["cond_noise"] = levels
    return cond


def grid_conditions(trainer: Trainer, n: int) -> dict[str, Tensor] | None:
    """The conditions of a training sample grid: those of the first ``n`` training items (None when the
    data has neither ``mapping_cond`` nor ``cond_image``).

    Returns:
        ``{"mapping_cond": (n, D)}`` and/or ``{"cond_image": (n, C', h, w)}`` on the CPU, as loaded.
    """
    dataset = trainer.dataset
    first = dataset[0]
    keys = [k for k in ("mapping_cond", "cond_image") if k in first]
    if not keys:
        return None
    items = [first, *(dataset[i % len(dataset)] for i in range(1, n))]
    return {k: torch.stack([item[k] for item in items]) for k in keys}
