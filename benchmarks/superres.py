"""Held-out PSNR of a super-resolution run against bicubic upsampling, and the picture of docs/conditioning.md.

Usage (from the repository root, after ``hourglass train recipes/sr4x_lfw.toml``)::

    python benchmarks/superres.py runs/sr4x_lfw                 # print the PSNRs (JSON)
    python benchmarks/superres.py runs/sr4x_lfw --grid docs/assets/sr4x_lfw.png

It loads the run's EMA weights, builds the run's dataset at split ``"test"`` (the held-out faces),
samples each one ``--samples`` times from its low-resolution condition with the run's ``[sample]``
sampler and steps, and prints the mean PSNR of single samples, of the mean of the samples and of
bicubic upsampling (:func:`hourglass.evaluation.superres.superres_report`). ``--grid`` writes rows
of held-out faces: low-resolution input (nearest upsampling), bicubic, one model sample, the mean of
the samples, and the ground truth.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's hourglass, wherever it runs

from hourglass.evaluation.superres import superres_report  # noqa: E402
from hourglass.pipeline import load  # noqa: E402
from hourglass.registry import DATASET  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Measure (and optionally draw) a run, printing the PSNRs as one JSON line; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory (or checkpoint) of a [conditioning] super-resolution recipe")
    parser.add_argument("--samples", type=int, default=8, help="samples per held-out image (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the run's)")
    parser.add_argument("--sampler", default=None, help="sampler (default: the run's)")
    parser.add_argument("--grid", default=None, help="write the comparison PNG here")
    parser.add_argument("--rows", type=int, default=8, help="faces in the grid (default 8)")
    args = parser.parse_args(argv)

    pipe = load(args.run, device="cpu", report=None)
    data = pipe.recipe.data.dataset
    dataset = DATASET.build(data, resolution=pipe.image_size, split="test")
    report = superres_report(pipe, dataset, samples=args.samples, steps=args.steps, sampler=args.sampler)
    numbers = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in report.items() if k != "images"}
    numbers.update(
        step=pipe.step,
        samples=args.samples,
        steps=args.steps or pipe.defaults.steps,
        sampler=args.sampler or str(pipe.defaults.sampler.type),
    )
    print(json.dumps(numbers))
    if args.grid:
        images = report["images"]
        rows = min(args.rows, report["n"])
        low = F.interpolate(images["low"][:rows], size=images["truth"].shape[-2:], mode="nearest")
        columns = [
            low,
            images["bicubic"][:rows],
            images["sample"][:rows],
            images["mean"][:rows],
            images["truth"][:rows],
        ]
        tiles = torch.stack(columns, dim=1).flatten(0, 1)  # row-major: one face per row
        pipe.save_grid(F.interpolate(tiles, scale_factor=2, mode="nearest"), args.grid, nrow=len(columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
