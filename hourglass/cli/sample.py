"""``hourglass sample``: draw images from a checkpoint (or a run directory's newest valid one).

Uses the EMA weights unless ``--no-ema`` (a folder or ``model.safetensors`` written by ``hourglass
convert`` holds one set of weights, which is used). Image ``i`` gets seed ``--seed + i`` for all of its
noise, so the same seed gives the same images whatever ``--batch-size`` is. The sampler, schedule,
steps and guidance scale default to the run's ``[sample]`` section. Class-conditional models cycle
through every class unless ``--class`` names some, by name or id (``none`` = the unconditional "no
class"); ``--list-classes`` lists them (an image folder's classes are its sorted subfolder names).
Sampling runs in float32 unless ``--dtype`` says otherwise (bfloat16 autocast picks kernels by
batch size, so its images change with ``--batch-size``). Writes ``000000.png``, ``000001.png``,
... and ``grid.png`` into ``--out`` (default ``<run dir>/samples/<checkpoint name>``).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from hourglass.cli._common import CLIError

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

COMMAND = "sample"


HELP = "draw images from a checkpoint or run directory (EMA weights by default)"
EXAMPLES = (
    "hourglass sample runs/quickstart",
    "hourglass sample runs/quickstart --n 36 --steps 20 --sampler dpmpp_2m --out samples/",
    "hourglass sample runs/in128/checkpoints/step_00400000.safetensors --class 207 --cfg 1.3 --device cuda",
    "hourglass sample runs/quickstart --list-classes",
    "hourglass sample runs/quickstart --class star,ring --n 8",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass sample``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR",
                        help="a step_*.safetensors checkpoint, a run directory (its newest valid checkpoint), "
                             "or a folder / model.safetensors written by `hourglass convert`")
    parser.add_argument("--n", type=int, help="number of images (default: the run's sample.n)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the run's sample.batch_size)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the run's sample.steps)")
    parser.add_argument("--sampler", help="sampler name (default: the run's sample.sampler); see `hourglass list sampler`")
    parser.add_argument("--cfg", type=float, metavar="SCALE",
                        help="classifier-free guidance scale, 1 = none (default: the run's sample.cfg_scale)")
    parser.add_argument("--class", dest="classes", metavar="NAMES",
                        help="class names or ids to draw, comma-separated (cycled), or 'none' for no class; "
                        "default: every class in turn (--list-classes shows them)")
    parser.add_argument("--list-classes", action="store_true",
                        help="print the run's class ids and names, then exit")
    parser.add_argument("--seed", type=int, help="image i uses seed SEED + i (default: the run's sample.seed)")
    parser.add_argument("--resolution", type=int, nargs="+", metavar="N",
                        help="image side, or height and width (default: the model's training size)")
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                        help="use the EMA weights (default when the file has them) or the raw trained weights")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <run dir>/samples/<checkpoint name>)")
    parser.add_argument("--grid", action=argparse.BooleanOptionalAction, default=True, help="write grid.png")
    parser.add_argument("--images", action=argparse.BooleanOptionalAction, default=True,
                        help="write one PNG per image")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--dtype", default="float32", choices=("auto", "float32", "bfloat16"),
                        help="precision (default float32: an image then does not depend on the batch size; "
                        "bfloat16 autocast is faster on GPUs but batches of different sizes drift apart; "
                        "auto: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise CLIError(f"{name} must be a positive integer, got {value}")


def _parse_classes(text: str | None, num_classes: int, source: Any) -> list[int] | None:
    if text is None:
        return None
    if num_classes == 0:
        raise CLIError("--class needs a class-conditional model; this model has no classes (drop --class)")
    from hourglass.train.checkpoint import read_class_names
    from hourglass.train.sampling import class_ids

    try:
        return class_ids(text, num_classes, read_class_names(source))
    except ValueError as exc:
        raise CLIError(f"--class {text}: {exc}") from None


def _list_classes(source: str) -> int:
    from hourglass.train.checkpoint import read_class_names, resolve_checkpoint

    info = resolve_checkpoint(source, report=None, tensors=False)
    num_classes = int((info.model_spec or {}).get("num_classes") or 0)
    names = read_class_names(source)
    if not num_classes:
        print(f"{source}: the model is unconditional (no classes)")
    elif not names:
        print(f"{source}: {num_classes} classes, ids 0..{num_classes - 1} (the run recorded no names)")
    else:
        print("\n".join(f"{i}\t{name}" for i, name in enumerate(names)))
    return 0


def _resolution(values: list[int] | None, model: Any) -> tuple[int, int]:
    size = model.spec.input_size
    default = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if values is None:
        return default
    if len(values) not in (1, 2) or min(values) <= 0:
        raise CLIError(f"--resolution takes one or two positive integers (side, or height width), got {values}")
    hw = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    from pydantic import ValidationError

    try:  # the spec's own rules: divisibility by patch x 2^(levels-1), windows that fit the grids
        type(model.spec).model_validate({**model.spec.model_dump(), "input_size": hw})
    except ValidationError as exc:
        reasons = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        raise CLIError(f"--resolution {hw[0]}x{hw[1]} does not fit this model: {reasons}") from None
    return hw


def run(args: argparse.Namespace) -> int:
    """Sample images from ``args.checkpoint``; 0 on success."""
    import torch

    from hourglass.devices import resolve_device, resolve_dtype
    from hourglass.recipe import SampleSection
    from hourglass.registry import DENOISER, SAMPLER
    from hourglass.train.checkpoint import CheckpointError, load_checkpoint
    from hourglass.train.images import save_grid, save_image
    from hourglass.train.sampling import class_labels, iter_generate
    from hourglass.train.trainer import progress_enabled

    if args.list_classes:
        return _list_classes(args.checkpoint)
    for name in ("n", "batch_size", "steps"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.sampler is not None and args.sampler not in SAMPLER:
        raise CLIError(f"unknown sampler {args.sampler!r}; known samplers: {', '.join(SAMPLER.names())}")
    if args.cfg is not None and (not math.isfinite(args.cfg) or args.cfg < 0):
        raise CLIError(f"--cfg must be a finite number >= 0 (1 = no guidance), got {args.cfg}")
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise CLIError(f"--device {args.device!r}: {exc}") from None
    try:
        model, ema_model, recipe, step = load_checkpoint(args.checkpoint, device=device)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None
    if args.ema is None:  # default: EMA when the file has it (weights from `hourglass convert` have only one set)
        args.ema = ema_model is not None
    if args.ema and ema_model is None:
        raise CLIError("this checkpoint has no EMA weights; pass --no-ema to use the trained weights")
    net = ema_model if args.ema else model
    s = recipe.sample if recipe is not None else SampleSection()
    num_classes = net.spec.num_classes
    cfg = s.cfg_scale if args.cfg is None else args.cfg
    if cfg != 1.0 and num_classes == 0:
        raise CLIError(f"--cfg {cfg} needs a class-conditional model; this one has no classes (use --cfg 1)")
    fixed = _parse_classes(args.classes, num_classes, args.checkpoint)
    hw = _resolution(args.resolution, net)
    n = args.n or s.n
    batch_size = args.batch_size or s.batch_size
    steps = args.steps or s.steps
    sampler = args.sampler or s.sampler
    seed = s.seed if args.seed is None else args.seed
    if seed < 0:
        raise CLIError(f"--seed must be >= 0, got {seed}")
    dtype = getattr(torch, resolve_dtype(args.dtype, device.type))
    denoiser_spec = recipe.diffusion.denoiser if recipe is not None else "karras"
    denoiser = DENOISER.build(denoiser_spec, model=net)
    labels = class_labels(n, num_classes, fixed)
    ckpt_name = f"step_{step:08d}"
    source = Path(args.checkpoint)
    if source.is_dir():
        run_dir = source
    elif source.parent.name == "checkpoints":  # <run dir>/checkpoints/step_*.safetensors
        run_dir = source.parent.parent
    else:  # e.g. model.safetensors in a folder written by `hourglass convert`
        run_dir = source.parent
    out = Path(args.out) if args.out else run_dir / "samples" / ckpt_name
    which = "EMA weights (--no-ema for the raw weights)" if args.ema else "raw trained weights (not the EMA)"
    sampler_name = sampler if isinstance(sampler, str) else sampler.type
    print(f"sampling {n} image(s) at {hw[0]}x{hw[1]} from step {step} with the {which}; "
          f"{sampler_name}, {steps} steps, cfg {cfg}, seed {seed}, {device}/{dtype}".replace("torch.", ""))
    bar = None
    if progress_enabled() and not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=math.ceil(n / batch_size) * steps, desc="sample", unit="step", dynamic_ncols=True)
    start_time = time.perf_counter()
    chunks = []
    try:
        for start, images in iter_generate(
            denoiser, n=n, shape=(int(net.spec.in_channels), *hw), sampler=sampler, schedule=s.schedule,
            steps=steps, seed=seed, labels=labels, cfg_scale=cfg, uncond_class=num_classes,
            batch_size=batch_size, device=device, dtype=dtype, on_step=(bar.update if bar is not None else None),
        ):
            if args.images:
                for j, image in enumerate(images):
                    save_image(image, out / f"{start + j:06d}.png")
            chunks.append(images)
    finally:
        if bar is not None:
            bar.close()
    written = [f"{n} images {out}/000000.png..." if args.images else ""]
    if args.grid:
        nrow = num_classes if fixed is None and 0 < num_classes <= min(n, 16) else None
        grid = save_grid(torch.cat(chunks), out / "grid.png", nrow=nrow)
        written.append(f"grid {grid}")
    elapsed = time.perf_counter() - start_time
    print(f"wrote {', '.join(w for w in written if w) or 'nothing (--no-images --no-grid)'} in {elapsed:.1f} s")
    return 0
