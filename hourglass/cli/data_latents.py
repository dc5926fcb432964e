"""``hourglass data latents SOURCE OUT``: encode a dataset with a VAE into latent shards.

SOURCE is a recipe (``.toml``: its ``[data]`` dataset, its ``[vae]`` and the image size its model's
latent grid decodes to) or the name of a registered dataset, whose options ``--set KEY=VALUE`` gives
(``--set root=data/imagenet/train``). ``--vae`` (a local ``AutoencoderKL`` folder or a Hub id read from
the Hugging Face cache) replaces the recipe's ``[vae]``.

Every image is encoded together with its horizontal flip, as the DiT (fast-DiT's features) and U-ViT
pipelines store them, so training with ``hflip`` reads the exact latents of flipped images. The latents
are what the VAE's ``encode`` gives, scaled by its scaling factor. With ``--latents sample`` (DiT's
``train.py`` encodes ``vae.encode(x).latent_dist.sample().mul_(0.18215)``) each is one posterior sample,
drawn once from ``--seed`` per batch (so it depends on ``--batch-size`` too); with ``--latents mean`` the
posterior's mean. The default is the VAE spec's ``latents`` (``autoencoder_kl``: mean).

OUT receives ``latents.json`` (the index: VAE, scaling factor, shapes, count, classes) and
``shard-*.safetensors`` files of ``--shard-size`` items each (format: :mod:`hourglass.data.latent_shards`).
Each shard is written to a temporary name and renamed when complete: a killed encode leaves only
whole shards, and the same command run again continues with the missing ones. Train on OUT with
``dataset = {type = "latents", root = "OUT", classes = "stored", hflip = 0.5}``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from hourglass.cli._common import CLIError

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

HELP = "encode a dataset (and its horizontal flips) with a VAE into latent shards for the latents dataset"
EXAMPLES = (
    "hourglass data latents latent.toml data/latent_shards",
    "hourglass data latents imagefolder data/in256_latents --set root=data/imagenet/train --set classes=subfolders "
    "--resolution 256 --vae stabilityai/sd-vae-ft-mse --latents sample --batch-size 64",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass data latents``."""
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a recipe (.toml: its data.dataset, [vae] and the model's image size) or a dataset type "
        "(imagefolder, shapes, ...: its options by --set)",
    )
    parser.add_argument(
        "out", metavar="OUT", help="the shard folder to write (new or empty; an unfinished one resumes)"
    )
    parser.add_argument(
        "--set",
        "-s",
        dest="set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with a recipe, override a recipe value (data.dataset.root=/data/train); with a dataset "
        "type, set one of its options (root=/data/train); VALUE is read as TOML, else as a string; "
        "repeatable",
    )
    parser.add_argument(
        "--vae",
        metavar="PATH|HUB_ID",
        help="the autoencoder_kl VAE: a local AutoencoderKL folder or a Hub id (from the Hugging Face "
        "cache); default: the recipe's [vae]",
    )
    parser.add_argument(
        "--resolution",
        type=int,
        nargs="+",
        metavar="PX",
        help="image size in pixels, H [W], a multiple of the VAE's factor (default with a recipe: the "
        "model's input_size times the factor)",
    )
    parser.add_argument("--split", default="train", help="the dataset's split (default: train)")
    parser.add_argument(
        "--latents",
        choices=("mean", "sample"),
        help="the posterior's mean, or one sample of it (DiT's train.py); default: the VAE spec's",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset's draws and of sampled latents")
    parser.add_argument("--batch-size", type=int, default=32, help="images per VAE forward (default: 32)")
    parser.add_argument("--shard-size", type=int, default=4096, help="items per shard file (default: 4096)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="dtype the latents are stored in (default: float32)",
    )
    parser.add_argument("--device", default="auto", help="device of the VAE: auto, cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--num-workers", type=int, default=0, help="image loading processes (default: 0)")
    parser.add_argument("--limit", type=int, metavar="N", help="encode only the first N items")


def _source(args: argparse.Namespace) -> tuple[Any, Any, tuple[int, int] | None]:
    """``(dataset spec, the recipe's vae spec or None, the recipe model's input size or None)`` of SOURCE."""
    from hourglass.cli._common import load_target
    from hourglass.recipe import apply_overrides
    from hourglass.recipe.overrides import OverrideError
    from hourglass.registry import DATASET
    from hourglass.spec import as_pair

    if args.source.endswith(".toml") or Path(args.source).is_file():
        recipe = load_target(args.source, args.set).recipe
        if recipe is None or recipe.data is None:
            raise CLIError(f"recipe {args.source} has no [data] section; give one, or a dataset type as SOURCE")
        return recipe.data.dataset, recipe.vae, as_pair(recipe.model.input_size)
    DATASET.get(args.source)  # an unknown name: RegistryError, listing the known ones
    try:
        options = apply_overrides({"type": args.source}, args.set)
    except OverrideError as exc:
        raise CLIError(f"--set {exc}") from None
    try:
        spec = DATASET.validate(options)
    except ValueError as exc:
        first = " ".join(str(exc).split())
        raise CLIError(
            f"dataset {args.source}: {first}; fix the --set options (hourglass show {args.source})"
        ) from None
    return spec, None, None


def _vae(args: argparse.Namespace, recipe_vae: Any) -> Any:
    """The built VAE: ``--vae`` or the recipe's ``[vae]``, with ``--latents``, on ``--device``."""
    from hourglass.devices import resolve_device
    from hourglass.registry import VAE

    if args.vae:
        data: dict[str, Any] = {"type": "autoencoder_kl", "path": args.vae}
    elif recipe_vae is not None:
        data = recipe_vae.model_dump(mode="python")
    else:
        raise CLIError("no VAE: pass --vae PATH|HUB_ID (an AutoencoderKL folder or Hub id), or a recipe with a [vae]")
    if args.latents:
        data["latents"] = args.latents
    try:
        spec = VAE.validate(data)
        problems = VAE.get(spec.type).availability_problems(spec)
        if problems:
            raise CLIError(f"vae.{problems[0]}")
        device = resolve_device(args.device)
        return VAE.build(spec).to(device)
    except (OSError, ImportError, ValueError) as exc:
        raise CLIError(" ".join(str(exc).split())) from None


def _plan(
    args: argparse.Namespace, dataset_spec: Any, dataset: Any, vae: Any, size: tuple[int, int], count: int
) -> dict[str, Any]:
    from hourglass.data.latent_shards import FORMAT, VERSION, shard_name

    vae_data = vae.spec.model_dump(mode="json")
    for name in ("scaling_factor", "shift_factor"):
        if hasattr(vae, name):
            vae_data[name] = getattr(vae, name)
    shards = [
        {"file": shard_name(k), "count": min(args.shard_size, count - k * args.shard_size)}
        for k in range(math.ceil(count / args.shard_size))
    ]
    return {
        "format": FORMAT,
        "version": VERSION,
        "complete": False,
        "count": count,
        "shard_size": args.shard_size,
        "shards": shards,
        "latent_shape": [vae.latent_channels, *vae.latent_size(size)],
        "image_size": list(size),
        "dtype": args.dtype,
        "latents": "sample" if vae.stochastic else "mean",
        "seed": args.seed,
        "batch_size": args.batch_size,
        "vae": vae_data,
        "dataset": dataset_spec.model_dump(mode="json"),
        "split": args.split,
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "flips": True,
    }


def _prepare_out(out: Path, plan: dict[str, Any]) -> bool:
    """Check OUT; True when it holds an unfinished encode of the same plan (resumed)."""
    from hourglass.data.latent_shards import INDEX_FILE, read_index

    if out.exists() and not out.is_dir():
        raise CLIError(f"OUT {out} is a file; pass a folder (it is created if missing)")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not (out / INDEX_FILE).is_file():
        raise CLIError(f"OUT {out} is not empty and holds no unfinished encode; pass a new or empty folder")
    try:
        index = read_index(out)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if index.get("complete"):
        raise CLIError(f"OUT {out} already holds {index['count']} encoded items; pass a new folder to encode again")
    for key, value in plan.items():
        if index.get(key) != value:
            raise CLIError(
                f"OUT {out} holds an unfinished encode with other settings ({key}: {index.get(key)!r}, now "
                f"{value!r}); rerun it with the same arguments to finish it, or pass a new folder"
            )
    return True


def _encode(vae: Any, images: Any, seed: int) -> Any:
    """Latents of ``images (B, C, H, W)`` and of their flips, ``(2B, c, h, w)``, one generator per batch."""
    import torch

    device = next(vae.parameters()).device
    generator = torch.Generator(device).manual_seed(seed) if vae.stochastic else None
    both = torch.cat([images, images.flip(-1)]).to(device)
    return vae.encode(both, generator=generator).cpu()


def run(args: argparse.Namespace) -> int:
    """Encode; 0 on success, 2 for bad inputs."""
    import torch
    from torch.utils.data import DataLoader

    from hourglass.data._base import mix_seed, parse_resolution
    from hourglass.data.latent_shards import write_index, write_shard
    from hourglass.registry import DATASET
    from hourglass.train.trainer import progress_enabled

    for name in ("batch_size", "shard_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    dataset_spec, recipe_vae, input_size = _source(args)
    contract = DATASET.get(dataset_spec.type)
    if contract.holds_latents:
        raise CLIError(f"the dataset ({dataset_spec.type}) already holds latents; SOURCE must give images")
    problems = contract.availability_problems(dataset_spec)
    if problems:
        raise CLIError(f"data.dataset.{problems[0]}")
    vae = _vae(args, recipe_vae)
    if args.resolution:
        if len(args.resolution) > 2:
            raise CLIError(f"--resolution takes H or H W, got {len(args.resolution)} numbers")
        size = parse_resolution(tuple(args.resolution) if len(args.resolution) == 2 else args.resolution[0])
    elif input_size is not None:
        size = vae.image_size(input_size)
    else:
        raise CLIError(
            f"--resolution is needed with a dataset type: the image size in pixels, e.g. --resolution "
            f"{32 * vae.downsample_factor} for a {32}x{32} latent grid"
        )
    try:
        vae.latent_size(size)
        dataset = DATASET.build(dataset_spec, resolution=size, split=args.split)
    except (ValueError, OSError) as exc:
        raise CLIError(" ".join(str(exc).split())) from None
    if dataset.channels != vae.image_channels:
        raise CLIError(
            f"the dataset gives {dataset.channels}-channel images but the VAE encodes {vae.image_channels} "
            f"channels; set the dataset's channels = {vae.image_channels}"
        )
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    out = Path(args.out)
    plan = _plan(args, dataset_spec, dataset, vae, size, count)
    resumed = _prepare_out(out, plan)
    out.mkdir(parents=True, exist_ok=True)
    write_index(out, plan)
    todo = [k for k, shard in enumerate(plan["shards"]) if not (out / shard["file"]).is_file()]
    done = count - sum(plan["shards"][k]["count"] for k in todo)
    if resumed:
        print(
            f"resuming: {len(plan['shards']) - len(todo)} of {len(plan['shards'])} shards are written", file=sys.stderr
        )
    bar = None
    if progress_enabled():
        from tqdm.auto import tqdm

        bar = tqdm(total=count, initial=done, desc="latents", unit="img", dynamic_ncols=True)
    try:
        for k in todo:
            start = k * args.shard_size
            keys = [(i, mix_seed(args.seed, i)) for i in range(start, start + plan["shards"][k]["count"])]
            loader = DataLoader(dataset, batch_size=args.batch_size, sampler=keys, num_workers=args.num_workers)
            latents, flipped, labels = [], [], []
            for b, batch in enumerate(loader):
                n = batch["image"].shape[0]
                both = _encode(vae, batch["image"], mix_seed(args.seed, k, b))
                latents.append(both[:n])
                flipped.append(both[n:])
                labels.append(batch["class_cond"])
                if bar is not None:
                    bar.update(n)
            write_shard(
                out / plan["shards"][k]["file"],
                torch.cat(latents),
                torch.cat(flipped),
                torch.cat(labels),
                getattr(torch, args.dtype),
            )
    finally:
        if bar is not None:
            bar.close()
    write_index(out, {**plan, "complete": True})
    c, h, w = plan["latent_shape"]
    print(
        f"wrote {count} latents {c}x{h}x{w} (and their horizontal flips) of {size[0]}x{size[1]} images in "
        f"{len(plan['shards'])} shard(s) to {out}"
    )
    print(
        f'train on them with dataset = {{type = "latents", root = "{out}", channels = {c}, '
        f'classes = "{"stored" if dataset.num_classes else "none"}", hflip = 0.5}} and model.input_size = {h}'
    )
    return 0
