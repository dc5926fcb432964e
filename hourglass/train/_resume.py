"""How a :class:`~hourglass.train.Trainer` starts: resuming its run directory, or warm-starting a new run.

A run directory with a valid checkpoint resumes from its newest one (model, EMA, optimizer, random
states, step, a streamed dataset's positions); ``train.init_from`` is then ignored, with a note. A run directory without one starts
at step 0, from ``train.init_from``'s weights when it is set (:mod:`hourglass.train.warm_start`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from hourglass.devices import set_device_rng_states
from hourglass.registry import MODEL
from hourglass.train import checkpoint as ckpt
from hourglass.train._data_state import restore_data_state

if TYPE_CHECKING:
    from hourglass.train.trainer import Trainer

__all__ = ["resume_or_warm_start", "same_model"]


def same_model(trainer: Trainer, saved: dict[str, Any]) -> bool:
    """Whether a checkpoint's model spec is the trainer's (compared as validated specs, so renamed keys of
    older checkpoints still match)."""
    try:
        return MODEL.validate(saved) == trainer.model.spec
    except ValueError:  # pydantic's ValidationError included: not even a valid spec
        return False


def resume_or_warm_start(trainer: Trainer) -> None:
    """Load the newest valid checkpoint of ``trainer.run_dir`` into ``trainer``, or warm-start it.

    Sets ``trainer.step``, ``bad_steps`` and ``resumed_from`` when resuming, ``trainer.init_report``
    (a :class:`~hourglass.train.warm_start.InitReport`) when warm-starting.

    Raises:
        TrainConfigError: the checkpoint holds another model than the recipe's, or ``init_from``'s
            weights do not fit it (the message names the ``train.init_allow`` option to set).
    """
    from hourglass.train.trainer import TrainConfigError

    if trainer.dist.is_main:
        for stale in ckpt.remove_stale_temp_files(trainer.run_dir):
            trainer.say(f"removed {stale.name}, left by a save that was interrupted")
    found = ckpt.find_latest_checkpoint(trainer.run_dir, report=trainer.say if trainer.dist.is_main else None)
    init_from = trainer.recipe.train.init_from
    if found is None:
        if init_from:
            _warm_start(trainer, init_from)
        return
    if init_from:
        trainer.say(f"note: train.init_from = {init_from!r} is ignored: {trainer.run_dir} already has checkpoints, "
                    "and resuming wins")
    if found.model_spec and not same_model(trainer, found.model_spec):
        raise TrainConfigError(
            f"{found.path} holds a different model than recipe's [model]; resume with the recipe that run was "
            "started with (its copy is the run directory's recipe.toml) or choose another --run-dir"
        )
    trainer.model.load_state_dict(found.model)
    trainer.ema.model.load_state_dict(found.ema or found.model)
    if found.optimizer is not None:
        base = [g["initial_lr"] for g in trainer.optimizer.param_groups]
        trainer.optimizer.load_state_dict(found.optimizer)
        for group, lr in zip(trainer.optimizer.param_groups, base, strict=True):
            group["initial_lr"] = lr  # the recipe's learning rate wins over the saved one
    if "torch_cpu" in found.rng:
        torch.set_rng_state(found.rng["torch_cpu"])
    set_device_rng_states(found.rng)
    trainer.step = found.step
    trainer.bad_steps = int(found.extra.get("bad_steps", 0))
    saved_batch = int(found.data["global_micro_batch"]) if "global_micro_batch" in found.data else None
    if saved_batch is not None and saved_batch != trainer.micro_batch * trainer.dist.world_size:
        trainer.say(
            f"note: the data order differs from the original run (micro-batch over all ranks {saved_batch} -> "
            f"{trainer.micro_batch * trainer.dist.world_size}); training continues, but not bitwise as before"
        )
    restore_data_state(trainer, found.data)
    trainer.resumed_from = found.path
    trainer.say(f"resuming from {found.path} (step {trainer.step})")


def _warm_start(trainer: Trainer, source: str) -> None:
    """Initialise the model and its EMA from ``train.init_from`` (fresh optimizer, step 0)."""
    from hourglass.train.trainer import TrainConfigError
    from hourglass.train.warm_start import WarmStartError, warm_start

    t = trainer.recipe.train
    try:  # trainer.init_report: what was loaded, reshaped, skipped and newly initialised
        trainer.init_report = warm_start(
            trainer.model, source, allow=t.init_allow, weights=t.init_weights, class_names=trainer.class_names,
            ema_model=trainer.ema.model, report=trainer.say if trainer.dist.is_main else None,
        )
    except WarmStartError as exc:
        raise TrainConfigError(str(exc)) from None
