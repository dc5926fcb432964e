"""``hourglass data shards FOLDER OUT``: write an image folder as WebDataset tar shards.

Every image under FOLDER (found as ``imagefolder`` finds them, sorted by relative path) becomes one
sample of ``OUT/shard-NNNNNN.tar``: the file's bytes unchanged, plus its class id in ``.cls`` with
``--classes subfolders`` (ids by sorted top-level folder name, as ``imagefolder`` numbers them).
``OUT/shards.json`` lists the shards, their sample counts and the class names. Train on them with
``data.dataset = {type = "webdataset", root = "OUT", classes = "cls"}``.

A shard closes after ``--samples-per-shard`` samples or once it holds ``--max-shard-size`` (MB).
Streamed training splits whole shards over ranks x workers: write at least that many shards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hourglass.cli._common import CLIError

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

HELP = "write an image folder as WebDataset tar shards (class ids from subfolders)"
EXAMPLES = ("hourglass data shards data/ffhq1024/ shards/ffhq1024 --classes none --max-shard-size 256",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """FOLDER, OUT, ``--classes``, ``--samples-per-shard``, ``--max-shard-size``, ``--no-progress``."""
    parser.add_argument("folder", metavar="FOLDER", help="the image folder (searched recursively)")
    parser.add_argument("out", metavar="OUT", help="the folder to write the shards to (new or empty)")
    parser.add_argument(
        "--classes",
        choices=("subfolders", "none"),
        default="subfolders",
        help="subfolders: class ids by sorted top-level folder name (default); none: unlabelled",
    )
    parser.add_argument(
        "--samples-per-shard", type=int, default=1000, metavar="N", help="the most samples in one shard (default 1000)"
    )
    parser.add_argument(
        "--max-shard-size",
        type=float,
        default=1024.0,
        metavar="MB",
        help="a shard closes once it holds this many MB (default 1024)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(args: argparse.Namespace) -> tuple[Path, Path]:
    folder, out = Path(args.folder).expanduser(), Path(args.out).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise CLIError(f"image folder '{folder}' {what}; pass the folder that holds the images")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CLIError(f"'{out}' already exists and is not an empty folder; choose a new OUT folder or remove it")
    if out.resolve().is_relative_to(folder.resolve()):
        raise CLIError(f"OUT '{out}' lies inside FOLDER '{folder}'; write the shards outside the image folder")
    if args.samples_per_shard < 1:
        raise CLIError(f"--samples-per-shard must be at least 1, got {args.samples_per_shard}")
    if not args.max_shard_size > 0:
        raise CLIError(f"--max-shard-size must be a positive number of MB, got {args.max_shard_size}")
    return folder, out


def run(args: argparse.Namespace) -> int:
    """Write the shards and print one summary line."""
    from hourglass.data.imagefolder import IMAGE_EXTENSIONS
    from hourglass.data.write_shards import list_images, write_shards
    from hourglass.train.trainer import progress_enabled

    folder, out = _check(args)
    images, class_names = list_images(folder, args.classes)
    if not images:
        where = " inside class subfolders (--classes subfolders)" if args.classes == "subfolders" else ""
        raise CLIError(
            f"no image found in '{folder}'{where} (looked for {' '.join(IMAGE_EXTENSIONS)}); "
            "check FOLDER" + (", or pass --classes none" if where else "")
        )
    bar = None
    if progress_enabled() and not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc="shards", unit="img", dynamic_ncols=True)
    try:
        written = write_shards(
            images,
            out,
            class_names=class_names,
            samples_per_shard=args.samples_per_shard,
            max_shard_bytes=int(args.max_shard_size * 2**20),
            on_sample=None if bar is None else (lambda _size: bar.update(1)),
        )
    finally:
        if bar is not None:
            bar.close()
    classes = f"{len(class_names)} classes" if class_names else "unlabelled"
    print(
        f"wrote {written.samples} samples ({classes}) in {written.shards} shards, "
        f"{written.bytes / 2**20:.1f} MB, to {out}",
        file=sys.stdout,
    )
    return 0
