"""``hourglass train``: train a recipe, resuming from the run directory's newest valid checkpoint.

The run directory (default ``runs/<recipe name>``) receives ``recipe.toml`` (the resolved recipe),
``classes.json`` (the class names, e.g. an image folder's sorted subfolders), ``metrics.jsonl``, ``checkpoints/step_XXXXXXXX.safetensors`` and ``samples/*.png`` (grids from the
EMA weights, ``final.png`` at the end). Running the same command again continues where the last
checkpoint left off; a corrupt newest checkpoint is reported and skipped. SIGINT/SIGTERM finish
the current step, write a checkpoint and exit 0.

Several GPUs or nodes: ``torchrun --nproc_per_node N -m hourglass train RECIPE`` (DDP; nccl on
CUDA, gloo on CPU). ``data.batch_size`` is the global batch of one optimizer step.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hourglass.cli._common import CLIError, add_set_option, print_notes

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run", "default_run_dir"]

COMMAND = "train"


HELP = "train a recipe (resumes from the run directory's newest valid checkpoint)"
EXAMPLES = (
    "hourglass train recipes/quickstart.toml",
    "hourglass train recipes/quickstart.toml --run-dir runs/qs2 --set train.steps=2000",
    "torchrun --nproc_per_node 8 -m hourglass train recipes/hdit_imagenet256.toml --run-dir runs/in256",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass train``."""
    parser.add_argument("recipe", metavar="RECIPE", help="a .toml recipe")
    parser.add_argument("--run-dir", metavar="DIR", help="run directory (default: runs/<recipe file stem>)")
    parser.add_argument("--max-bad-steps", type=int, metavar="N",
                        help="consecutive NaN/inf steps before the run stops (default 10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines instead)")
    add_set_option(parser)


def default_run_dir(recipe_path: str | os.PathLike) -> Path:
    """``runs/<stem of the recipe file>`` (relative to the working directory)."""
    return Path("runs") / Path(recipe_path).stem


def run(args: argparse.Namespace) -> int:
    """Train ``args.recipe``; 0 when done or stopped by a signal, 1 when training diverged."""
    import torch

    from hourglass.recipe import RecipeError, availability_problems, load_recipe
    from hourglass.recipe.problems import with_values
    from hourglass.trackers import TrackerError
    from hourglass.train import checkpoint as ckpt
    from hourglass.train.trainer import TrainConfigError, Trainer, TrainingDiverged

    if args.max_bad_steps is not None and args.max_bad_steps < 1:
        raise CLIError(f"--max-bad-steps must be at least 1, got {args.max_bad_steps}")
    notes: list[str] = []
    try:
        recipe = load_recipe(args.recipe, args.set, notes=notes)
    finally:
        print_notes(notes)
    missing = availability_problems(recipe.data, vae=recipe.vae, trackers=recipe.train.trackers)  # before anything is built
    if missing:
        raise RecipeError(with_values(missing, recipe.to_data()), args.recipe)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.recipe)
    try:
        trainer = Trainer(recipe, run_dir, max_bad_steps=args.max_bad_steps,
                          progress=False if args.no_progress else None)
    except TrainConfigError as exc:
        raise CLIError(str(exc)) from None
    try:
        n_params = sum(p.numel() for p in trainer.model.parameters())
        precision = "float32" if trainer.amp_dtype == torch.float32 else f"{str(trainer.amp_dtype)[6:]} autocast"
        trainer.say(
            f"training {recipe.model.type} ({n_params:,} params) on {trainer.device} x{trainer.dist.world_size} "
            f"process(es), {precision}, batch {recipe.data.batch_size} ({trainer.micro_batch} per process and "
            f"micro-step), {recipe.train.steps} steps, run dir {run_dir}"
        )
        if trainer.vae is not None and not trainer.encodes:
            trainer.say(f"latent diffusion on precomputed latents ({recipe.data.dataset.type}); the frozen VAE "
                        f"({recipe.vae.type}) decodes the sample grids")
        elif trainer.vae is not None:
            (h, w), (lh, lw) = trainer.data_resolution, trainer.image_size
            trainer.say(f"latent diffusion: {h}x{w} images encoded by the frozen VAE ({recipe.vae.type}) to "
                        f"{trainer.vae.latent_channels}x{lh}x{lw} latents")
        try:
            result = trainer.fit()
        except TrainingDiverged as exc:
            trainer.say(f"hourglass train: error: {exc}")
            return 1
        except TrackerError as exc:  # a tracker's service or store refused to start or log
            raise CLIError(str(exc)) from None
        except OSError as exc:  # full disk, read-only or vanished run directory: the last checkpoint is intact
            last = ckpt.list_checkpoints(run_dir)
            kept = f"the last complete checkpoint is {last[-1][1]}" if last else "no checkpoint was written yet"
            trainer.say(
                f"hourglass train: error: writing to {run_dir} failed: {exc}; {kept}. Free disk space or fix the "
                "directory's permissions, then run the same command again to resume"
            )
            return 1
        if result.interrupted is None and not result.already_finished:  # a finished run said so already
            loss = f"{result.loss:.4f}" if result.loss is not None else "n/a"
            trainer.say(
                f"done: step {result.step}, loss {loss}, {result.wall_time:.0f} s"
                + (f", {result.bad_steps} skipped step(s)" if result.bad_steps else "")
                + (f"; checkpoint {result.checkpoint}" if result.checkpoint else "")
                + (f"; samples {result.grid}" if result.grid else "")
            )
        return 0
    finally:
        trainer.close()
