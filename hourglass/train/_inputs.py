"""What a :class:`~hourglass.train.Trainer` trains on: the recipe's frozen VAE and its dataset.

Validation checked what the dataset and the VAE declare; what they learn only from their files
(class count, channels) is checked here, when they are built, by the same rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hourglass.data import Augmented
from hourglass.recipe import channel_problems, class_problems, vae_channel_problems
from hourglass.registry import DATASET, VAE

if TYPE_CHECKING:
    from hourglass.train.trainer import Trainer

__all__ = ["build_vae", "build_dataset"]


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
    _fail(problems)
    names = [str(n) for n in (getattr(dataset, "class_names", None) or [])]
    class_names = names if trainer.num_classes and len(names) == trainer.num_classes else None
    if data.augment.p > 0:
        dataset = Augmented(dataset, data.augment, seed=trainer.recipe.train.seed)
    return dataset, class_names
