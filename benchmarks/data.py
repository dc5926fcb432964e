"""Data-loading throughput: images/s of one CPU worker per dataset kind, and the workers one GPU needs.

Usage::

    python3 benchmarks/data.py                              # 256 and 1024 px, writes docs/benchmarks/data_loading.md
    python3 benchmarks/data.py --sizes 256 --images 256 --workers 0 2
    python3 benchmarks/data.py --kinds webdataset hf_streaming --out /tmp/data_loading.md

Synthetic photos (smooth random colour fields with grain, JPEG quality 90, 25 % larger than the
target side, like the photos of ImageNet or FFHQ) are written to a temporary folder, then read as:

- ``imagefolder``: the JPEG files;
- ``webdataset``: tar shards written by ``hourglass data shards``, streamed;
- ``hf_indexed`` / ``hf_streaming``: Parquet files of the same JPEG bytes, read by random access
  (``load_dataset("parquet")``, converted to Arrow once, not timed) or streamed (``streaming=True``);
- ``latents``: ``.npy`` SD-VAE-sized latents (4 x side/8 x side/8 float32), which skip decoding.

Each kind is loaded through the training loader (:func:`hourglass.data.create_dataloader`, random
crop and flip on, batch ``--batch-size``) after one warm-up batch, the best of ``--repeats`` passes; ``--workers 0`` times the main
process, which is what one loader worker does. The number of workers one GPU needs is the paper's
per-GPU training throughput divided by that rate (HDiT, Crowson et al. 2024, arXiv 2401.11605:
ImageNet-256 about 300 img/s, FFHQ-1024 about 25 img/s per GPU); a GPU host must also leave cores for
the training process itself.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine_description, markdown_table  # noqa: E402

#: paper per-GPU training throughput (img/s) by image side: hdit_imagenet256, hdit_ffhq1024
TARGETS = {256: ("hdit_imagenet256", 300.0), 1024: ("hdit_ffhq1024", 25.0)}
KINDS = ("imagefolder", "webdataset", "hf_indexed", "hf_streaming", "latents")


def photo(side: int, seed: int) -> bytes:
    """A JPEG (quality 90) of a smooth random colour field with grain, ``side * 5 / 4`` px square."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    size = side * 5 // 4
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_data(root: Path, side: int, n: int, per_shard: int) -> dict[str, dict]:
    """Write ``n`` synthetic photos as every kind; returns each kind's dataset spec."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hourglass.data.write_shards import list_images, write_shards

    folder = root / "images" / "photos"
    folder.mkdir(parents=True)
    data = [photo(side, i) for i in range(n)]
    for i, jpeg in enumerate(data):
        (folder / f"{i:06d}.jpg").write_bytes(jpeg)
    images, names = list_images(root / "images", "none")
    write_shards(images, root / "shards", class_names=names, samples_per_shard=per_shard)
    (root / "parquet").mkdir()
    for start in range(0, n, per_shard):
        rows = [{"bytes": b, "path": None} for b in data[start : start + per_shard]]
        pq.write_table(pa.table({"image": rows}), root / "parquet" / f"part-{start // per_shard:05d}.parquet")
    latents = root / "latents"
    latents.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(latents / f"{i:06d}.npy", rng.standard_normal((4, side // 8, side // 8)).astype(np.float32))
    crop = {"crop": "random", "hflip": 0.5}
    return {
        "imagefolder": {"type": "imagefolder", "root": str(root / "images"), **crop},
        "webdataset": {"type": "webdataset", "root": str(root / "shards"), **crop},
        "hf_indexed": {"type": "hf_datasets", "path": str(root / "parquet"), **crop},
        "hf_streaming": {"type": "hf_datasets", "path": str(root / "parquet"), "streaming": True, **crop},
        "latents": {"type": "latents", "root": str(latents), "hflip": 0.5},
    }


def images_per_second(spec: dict, side: int, n: int, batch_size: int, workers: int, repeats: int = 2) -> float:
    """Images/s of the training loader over ``spec`` at ``side`` px: the best of ``repeats`` passes of about
    ``n`` images, after one warm-up batch."""
    from hourglass.data import create_dataloader
    from hourglass.registry import DATASET

    resolution = side // 8 if spec["type"] == "latents" else side
    dataset = DATASET.build(spec, resolution=resolution, split="train")
    loader = create_dataloader(dataset, batch_size, seed=0, num_workers=workers)
    batches = loader.iterate(0)
    next(batches)  # warm-up: worker start, file handles, Arrow conversion
    count, best = max(1, n // batch_size - 1), 0.0
    for _ in range(repeats):  # the best pass: a shared machine's other jobs only ever slow a pass down
        start = time.perf_counter()
        for _ in range(count):
            next(batches)
        best = max(best, count * batch_size / (time.perf_counter() - start))
    return best


def run(
    sizes: list[int],
    kinds: list[str],
    images: dict[int, int],
    batch_size: int,
    workers: list[int],
    per_shard: int,
    repeats: int = 2,
    report=print,
) -> list[list]:
    """Measure every kind at every size and worker count; returns the table rows."""
    import datasets

    datasets.disable_progress_bars()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hourglass-data-bench-") as tmp:
        datasets.config.HF_DATASETS_CACHE = str(Path(tmp) / "hf-cache")  # the Arrow copy of hf_indexed goes here
        for side in sizes:
            n = images[side]
            specs = write_data(Path(tmp) / str(side), side, n, per_shard)
            name, target = TARGETS.get(side, ("", 0.0))
            for kind in kinds:
                for w in workers:
                    rate = images_per_second(specs[kind], side, n, batch_size, w, repeats)
                    per_worker = round(rate / max(w, 1), 1)  # the worker count follows from the number shown
                    need = (math.ceil(target / per_worker) if per_worker else "n/a") if target else ""
                    report(f"{side} px {kind:13s} workers={w}: {rate:8.1f} img/s ({per_worker:.1f} per worker)")
                    rows.append(
                        [
                            f"{side}",
                            kind,
                            w,
                            f"{rate:.1f}",
                            f"{per_worker:.1f}",
                            f"{need} for {name} ({target:g} img/s)" if target else "-",
                        ]
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="image sides (default 256 1024)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="dataset kinds (default all)")
    parser.add_argument(
        "--images", type=int, default=None, help="images per size (default 96 at up to 256 px, 24 above)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="loader batch (default 8)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0],
        help="loader worker counts to time (default 0: the main process, i.e. one worker)",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed passes per measurement, the best kept (default 2)"
    )
    parser.add_argument("--samples-per-shard", type=int, default=8, help="samples per tar/Parquet shard (default 8)")
    parser.add_argument(
        "--out",
        default=str(ROOT / "docs" / "benchmarks" / "data_loading.md"),
        help="the Markdown file to write (default docs/benchmarks/data_loading.md)",
    )
    args = parser.parse_args(argv)
    images = {s: args.images or (96 if s <= 256 else 24) for s in args.sizes}
    if any(n < 2 * args.batch_size for n in images.values()):
        parser.error(f"--images must be at least twice --batch-size ({2 * args.batch_size})")
    if any(args.samples_per_shard * max(w, 1) > n for w in args.workers for n in images.values()):
        parser.error("every worker needs a shard: lower --samples-per-shard or --workers, or raise --images")
    rows = run(args.sizes, args.kinds, images, args.batch_size, args.workers, args.samples_per_shard, args.repeats)
    header = ["px", "kind", "workers", "img/s", "img/s per worker", "workers one GPU needs (paper target)"]
    text = (
        "# Data loading\n\nWritten by `benchmarks/data.py` on " + machine_description() + ". Synthetic JPEG photos "
        "(25 % larger than the target side), random crop and flip, batch "
        f"{args.batch_size}, best of {args.repeats} passes; latents are 4 x side/8 x side/8 `.npy` files. Workers 0 is the main process (one "
        "worker's throughput).\n\n" + markdown_table(header, rows) + "\n"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
