"""``hourglass sample``: draw images from a checkpoint (or a run directory's newest valid one), or
edit images with it (``--init``: image-to-image; with ``--mask``: inpainting).

A latent model (its recipe names a ``[vae]``) is sampled the same way: its VAE (loaded from the folder
or Hugging Face cache the recipe names) decodes the latents, and ``--init`` images are encoded first.

Uses the EMA weights unless ``--no-ema`` (a folder or ``model.safetensors`` written by ``hourglass
convert`` holds one set of weights, which is used; the message says whether they are the converted
checkpoint's EMA weights). Image ``i`` gets seed ``--seed + i`` for all of its noise, so the same seed
gives the same images whatever ``--batch-size`` is. The sampler, schedule, steps and guidance scale
default to the run's ``[sample]`` section. Class-conditional models cycle through every class unless
``--class`` names some, by name or id (``none`` = the unconditional "no class"); ``--list-classes``
lists them (an image folder's classes are its sorted subfolder names). Sampling runs in float32 unless ``--dtype`` says otherwise (bfloat16 autocast picks kernels
by batch size, so its images change with ``--batch-size``). Writes ``000000.png``, ``000001.png``,
... and ``grid.png`` into ``--out`` (default ``<run dir>/samples/<checkpoint name>``).

``--npz FILE`` writes the images into one ``.npz`` instead, in the ADM evaluator's layout (guided-diffusion's
and DiT's ``sample_ddp.py``): ``arr_0`` uint8 ``(N, H, W, C)`` in image order, plus ``arr_1`` int64 labels for
a class-conditional model (PNGs and the grid too only when ``--out`` is also given); ``hourglass eval`` reads it.
Sampling is resumable: images are drawn in chunks of ``--batch-size`` and each finished chunk is saved at once
(``FILE.parts/``, or ``DIR/.parts/`` for PNGs, with the run's settings), so a run that is killed and started
again with the same command draws only the missing chunks; a rerun with other settings is refused. Under
``torchrun --nproc_per_node N -m hourglass sample ...`` the N processes share the chunks (gloo on the CPU, nccl
on GPUs: process r uses cuda:r) and write the same images as one process; rank 0 shows the progress, writes
the ``.npz`` and removes the parts. ``grid.png`` shows at most the first 256 images.

``--init IMAGE_OR_FOLDER`` edits images instead (SDEdit): each is read like a dataset image (scaled
to cover the model's size, centre-cropped, converted to its channels), noised to the part of the
schedule given by ``--strength`` (default 0.75: the last 75% of the steps) and sampled back; small
strengths stay close to the input. ``--mask MASK_OR_FOLDER`` inpaints: white pixels of the mask are
generated, black ones kept exactly (one mask for every image, or a folder with one per image, paired
in name order); ``--strength`` below 1 starts the masked part from the noised image. Edits draw
without a class unless ``--class`` is given; ``--n`` more than the images cycles through them. The
grid shows the inputs, (the masks,) and the results in rows. The default output folder is
``<run dir>/samples/<checkpoint name>-img2img`` (``-inpaint``). The Python API is the same:
:func:`hourglass.load` (``Pipeline.sample``, ``image_to_image``, ``inpaint``).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

from hourglass.cli._common import CLIError
from hourglass.cli._sample_conditions import add_condition_arguments, read_conditions

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

COMMAND = "sample"


HELP = "draw images from a checkpoint or run directory (EMA weights by default), or edit / inpaint images"
EXAMPLES = (
    "hourglass sample runs/quickstart",
    "hourglass sample runs/quickstart --n 36 --steps 20 --sampler dpmpp_2m --out samples/",
    "hourglass sample runs/in128/checkpoints/step_00400000.safetensors --class 207 --cfg 1.3 --device cuda",
    "hourglass sample runs/quickstart --n 16 --npz samples.npz",
    "torchrun --nproc_per_node 2 -m hourglass sample runs/quickstart --num-images 16 --npz samples.npz --device cpu",
    "hourglass sample runs/quickstart --list-classes",
    "hourglass sample runs/quickstart --class star,ring --n 8",
    "hourglass sample runs/quickstart --init photos/ --strength 0.5          # image-to-image",
    "hourglass sample runs/quickstart --init photo.png --mask hole.png --n 4  # inpainting, 4 variations",
    "hourglass sample runs/sr4x_lfw --cond-image low_res/ --n 8             # super-resolution of 8 inputs",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass sample``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR",
                        help="a step_*.safetensors checkpoint, a run directory (its newest valid checkpoint), "
                             "or a folder / model.safetensors written by `hourglass convert`")
    parser.add_argument("--n", "--num-images", dest="n", type=int,
                        help="number of images (default: the run's sample.n; with --init: one per input image); "
                        "under torchrun write --num-images (torchrun reads --n as an abbreviation of its own options)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the run's sample.batch_size)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the run's sample.steps)")
    parser.add_argument("--sampler", help="sampler name (default: the run's sample.sampler); see `hourglass list sampler`")
    parser.add_argument("--cfg", type=float, metavar="SCALE",
                        help="classifier-free guidance scale, 1 = none (default: the run's sample.cfg_scale)")
    parser.add_argument("--class", dest="classes", metavar="CLASSES",
                        help="class names or ids to draw, comma-separated (cycled), or 'none' for no class; "
                        "default: every class in turn (with --init: no class); --list-classes shows them")
    parser.add_argument("--list-classes", action="store_true",
                        help="print the run's class ids and names, then exit")
    parser.add_argument("--seed", type=int, help="image i uses seed SEED + i (default: the run's sample.seed)")
    parser.add_argument("--resolution", type=int, nargs="+", metavar="N",
                        help="image side, or height and width (default: the model's training size)")
    parser.add_argument("--init", metavar="IMAGE_OR_FOLDER",
                        help="image-to-image: start from this image, or the images of this folder (name order), "
                        "resized and centre-cropped to the model's size")
    parser.add_argument("--strength", type=float, metavar="S",
                        help="with --init: the part of the schedule that is run, in (0, 1]; small values stay close "
                        "to the input (default 0.75; with --mask 1: the masked part from pure noise)")
    parser.add_argument("--mask", metavar="MASK_IMAGE_OR_FOLDER",
                        help="with --init: inpaint; white = generate, black = keep (one mask, or one per image)")
    add_condition_arguments(parser)
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                        help="use the EMA weights (default when the file has them) or the raw trained weights")
    parser.add_argument("--out", metavar="DIR",
                        help="output folder (default: <run dir>/samples/<checkpoint name>, with -img2img or -inpaint "
                        "for edits)")
    parser.add_argument("--npz", metavar="FILE",
                        help="write the images into one .npz (uint8 NHWC arr_0, int64 labels arr_1: the ADM "
                        "evaluator's layout) instead of PNGs (PNGs too when --out is given)")
    parser.add_argument("--grid", action=argparse.BooleanOptionalAction, default=True, help="write grid.png")
    parser.add_argument("--images", action=argparse.BooleanOptionalAction, default=True,
                        help="write one PNG per image")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | xpu[:N] | mps (default auto: the first present of cuda, xpu, mps, cpu)")
    parser.add_argument("--dtype", default="float32", choices=("auto", "float32", "bfloat16"),
                        help="precision (default float32: an image then does not depend on the batch size; "
                        "bfloat16 autocast is faster on GPUs but batches of different sizes drift apart; "
                        "auto: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise CLIError(f"{name} must be a positive integer, got {value}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _list_classes(source: str) -> int:
    from hourglass.train.checkpoint import CheckpointError, read_class_names, resolve_checkpoint

    try:
        info = resolve_checkpoint(source, report=None, tensors=False)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None
    num_classes = int((info.model_spec or {}).get("num_classes") or 0)
    names = read_class_names(info)
    if not num_classes:
        print(f"{source}: the model is unconditional (no classes)")
    elif not names:
        print(f"{source}: {num_classes} classes, ids 0..{num_classes - 1} (the run recorded no names)")
    else:
        print("\n".join(f"{i}\t{name}" for i, name in enumerate(names)))
    return 0


def _resolution(values: list[int] | None, pipe: Any) -> tuple[int, int]:
    if values is None:
        return pipe.image_size
    if len(values) not in (1, 2) or min(values) <= 0:
        raise CLIError(f"--resolution takes one or two positive integers (side, or height width), got {values}")
    hw = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    problem = pipe.resolution_problems(hw)
    if problem:
        raise CLIError(f"--resolution {hw[0]}x{hw[1]} does not fit this model: {problem}")
    return hw


def _check_edit_arguments(args: argparse.Namespace) -> None:
    if args.init is None:
        for flag, value in (("--mask", args.mask), ("--strength", args.strength)):
            if value is not None:
                raise CLIError(f"{flag} edits images: give the images with --init IMAGE_OR_FOLDER")
    elif args.strength is not None and not 0 < args.strength <= 1:
        raise CLIError(f"--strength must be in (0, 1] (1 = the whole schedule), got {args.strength}")


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """``print`` for ranks other than 0."""


def run(args: argparse.Namespace) -> int:
    """Sample (or edit) images with ``args.checkpoint``; 0 on success (under torchrun: on every rank)."""
    from hourglass.train.distributed import cleanup_distributed, init_distributed

    if args.list_classes:
        return _list_classes(args.checkpoint)
    if args.init is not None and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise CLIError("--init edits run in one process; start `hourglass sample` without torchrun")
    try:
        info = init_distributed(args.device)
    except (ValueError, RuntimeError) as exc:
        raise CLIError(f"--device {args.device!r}: {exc}") from None
    try:
        return _run(args, info)
    finally:
        cleanup_distributed(info)


def _run(args: argparse.Namespace, info: Any) -> int:
    import torch

    from hourglass.cli._sample_parts import check_npz_path, sample_in_parts
    from hourglass.devices import resolve_dtype
    from hourglass.pipeline import PipelineError, comparison_grid, load, run_dir_of
    from hourglass.registry import SAMPLER
    from hourglass.train.checkpoint import CheckpointError
    from hourglass.train.images import save_grid
    from hourglass.train.trainer import progress_enabled

    say = print if info.is_main else _quiet
    for name in ("n", "batch_size", "steps"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.sampler is not None and args.sampler not in SAMPLER:
        raise CLIError(f"unknown sampler {args.sampler!r}; known samplers: {', '.join(SAMPLER.names())}")
    if args.cfg is not None and (not math.isfinite(args.cfg) or args.cfg < 0):
        raise CLIError(f"--cfg must be a finite number >= 0 (1 = no guidance), got {args.cfg}")
    if args.seed is not None and args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    _check_edit_arguments(args)
    if args.npz is not None and args.init is not None:
        raise CLIError("--npz writes drawn images; drop it for --init edits (they are written as PNGs)")
    npz = check_npz_path(args.npz) if args.npz is not None else None
    device = info.device
    try:
        pipe = load(args.checkpoint, ema=args.ema, device=device, report=say)
    except (CheckpointError, PipelineError) as exc:
        raise CLIError(str(exc)) from None
    if pipe.channels not in (1, 3) and (args.images or args.grid or args.init is not None or npz is not None):
        raise CLIError(
            f"this model draws {pipe.channels}-channel samples (latents, e.g. of the Stable Diffusion VAE), which "
            "are not images: decoding them needs the VAE. Sample the latents from Python "
            f"(hourglass.load({str(args.checkpoint)!r}).sample(...)), or pass --no-images --no-grid without --npz"
        )
    d = pipe.defaults
    cfg = d.cfg_scale if args.cfg is None else args.cfg
    if args.cfg is not None and cfg != 1.0 and pipe.num_classes == 0 and args.mapping_cond is None:
        raise CLIError(f"--cfg {cfg} needs a class-conditional model (or --mapping-cond); this one has no classes "
                       "(use --cfg 1)")
    if args.classes is not None and pipe.num_classes == 0:
        raise CLIError("--class needs a class-conditional model; this model has no classes (drop --class)")
    classes = args.classes
    try:
        pipe.class_ids(classes)  # checked here to name the option
    except PipelineError as exc:
        raise CLIError(f"--class {args.classes}: {exc}") from None
    hw = _resolution(args.resolution, pipe)
    steps = args.steps or d.steps
    sampler = args.sampler or d.sampler.type
    seed = d.seed if args.seed is None else args.seed
    dtype = resolve_dtype(args.dtype, device.type)
    n = args.n or d.n
    conditions = read_conditions(args, pipe, n) if args.init is None else {}
    common = dict(classes=classes, cfg=cfg, sampler=args.sampler, steps=steps, seed=seed, **conditions,
                  batch_size=args.batch_size or d.batch_size, dtype=dtype,
                  progress=info.is_main and progress_enabled() and not args.no_progress)
    kind = "sample" if args.init is None else "inpaint" if args.mask is not None else "img2img"
    ckpt_name = f"step_{pipe.step:08d}" + ("" if kind == "sample" else f"-{kind}")
    out = Path(args.out) if args.out else run_dir_of(args.checkpoint) / "samples" / ckpt_name
    weights = pipe.describe_weights()
    if pipe.weights == "ema" and not pipe.converted_from:
        weights += " (--no-ema for the raw weights)"
    guidance = "no class" if kind != "sample" and classes is None and pipe.num_classes else f"cfg {cfg}"
    settings = f"{sampler}, {steps} steps, {guidance}, seed {seed}, {device}/{dtype}"
    if pipe.vae is not None:
        lh, lw = pipe.latent_size
        settings += f"; latents {lh}x{lw} decoded by the VAE "
        settings += f"({getattr(getattr(pipe.vae, 'spec', None), 'type', type(pipe.vae).__name__)})"
    start_time = time.perf_counter()
    pngs, grid = args.images, args.grid
    if npz is not None and args.out is None:
        pngs = grid = False  # the .npz only
    if kind == "sample":
        say(f"sampling {_plural(n, 'image')} at {hw[0]}x{hw[1]} from step {pipe.step} with the {weights}; "
            f"{settings}" + (f"; {info.world_size} processes" if info.world_size > 1 else ""))
        nrow = pipe.num_classes if classes is None and 0 < pipe.num_classes <= min(n, 16) else None
        if npz is not None or pngs:
            recorded = {"checkpoint": str(Path(args.checkpoint).resolve()), "step": pipe.step,
                        "weights": pipe.weights, "n": n, "seed": seed, "sampler": sampler, "steps": steps,
                        "cfg": cfg, "classes": pipe.class_ids(classes), "resolution": list(hw), "dtype": str(dtype)}
            options = {k: v for k, v in common.items() if k not in ("classes", "seed", "batch_size", "progress")}
            grid_images = sample_in_parts(
                pipe, info=info, n=n, settings=recorded, options={**options, "resolution": hw},
                batch_size=common["batch_size"], npz=npz, out=out, pngs=pngs, grid=grid, progress=common["progress"],
                report=say)
        elif info.world_size > 1:
            raise CLIError("with --no-images there is nothing for several processes to share; give --npz FILE or "
                           "start `hourglass sample` without torchrun")
        else:  # the grid only
            grid_images = torch.cat([images for _, images in pipe.iter_sample(n, resolution=hw, **common)])
    else:
        try:
            inputs = pipe.load_images(args.init, resolution=hw)
        except PipelineError as exc:
            raise CLIError(f"--init: {exc}") from None
        masks = None
        if args.mask is not None:
            from hourglass.pipeline import load_masks

            try:
                masks = load_masks(args.mask, size=hw)
            except PipelineError as exc:
                raise CLIError(f"--mask: {exc}") from None
            if masks.shape[0] not in (1, inputs.shape[0]):
                raise CLIError(f"--mask gives {_plural(masks.shape[0], 'mask')} for "
                               f"{_plural(inputs.shape[0], 'image')} of --init; give one mask, or one per image")
        n = args.n or inputs.shape[0]
        strength = args.strength if args.strength is not None else (1.0 if masks is not None else 0.75)
        kept = max(1, round(strength * steps))
        what = "inpainting" if masks is not None else "image-to-image on"
        print(f"{what} {_plural(n, 'image')} at {hw[0]}x{hw[1]} from step {pipe.step} with the {weights}; "
              f"strength {strength} ({kept} of {steps} steps), {settings}")
        try:
            if masks is None:
                results = pipe.image_to_image(inputs, strength=strength, n=n, **common)
            else:
                results = pipe.inpaint(inputs, masks, strength=strength, n=n, **common)
        except PipelineError as exc:
            raise CLIError(str(exc)) from None
        if pngs:
            pipe.save_images(results, out)
        order = torch.arange(n) % inputs.shape[0]
        shown_masks = None if masks is None else masks[order] if masks.shape[0] > 1 else masks
        nrow = min(n, 8)
        grid_images = comparison_grid(inputs[order], results, shown_masks, ncol=nrow)
    if not info.is_main:
        return 0
    written = []
    if pngs:
        written.append(f"{_plural(n, 'image')} {out}/000000.png" + ("..." if n > 1 else ""))
    if npz is not None:
        written.append(f"{npz} (arr_0: {n}x{hw[0]}x{hw[1]}x{pipe.channels} uint8"
                       + (", arr_1: labels)" if pipe.num_classes else ")"))
    if grid:
        written.append(f"grid {save_grid(grid_images, out / 'grid.png', nrow=nrow)}")
    elapsed = time.perf_counter() - start_time
    say(f"wrote {', '.join(written) or 'nothing (--no-images --no-grid)'} in {elapsed:.1f} s")
    return 0
