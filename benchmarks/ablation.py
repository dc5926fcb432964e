"""The paper's architecture ablation, shrunk to CPU size, at equal training compute.

The ladder is the ImageNet-128 ablation of HDiT (Crowson et al. 2024, arXiv 2401.11605), Sec. 5.2 and
Table 1: pixel-space DiT-B/4 (row R1) and the hourglass steps A, B1, B2, C, D and E; the U-ViT rung is
ours (the paper has no U-ViT row).

Usage::

    python3 benchmarks/ablation.py                          # the default ladder, writes docs/benchmarks/
    python3 benchmarks/ablation.py --budget-gmacs 2000 --rungs dit,hdit --out /tmp/abl
    python3 benchmarks/ablation.py --list                   # the rungs and the recipe each comes from

Every rung is *derived from its recipe* (``recipes/ablation/*.toml``, ``recipes/dit_b4_imagenet128.toml``,
``recipes/uvit_m4_imagenet64.toml``) by the same ``--set`` style overrides, so each step of the ladder
changes exactly what its recipe changes (attention kind, FFN, positions, loss weighting). The shrink:

* data: the built-in ``shapes`` dataset at 32 x 32 (6 classes), patch 2, so every model sees a
  16 x 16 token grid at its outermost level (DiT-B/4 at 128 px and U-ViT-M/4 at 64 px see 32 x 32
  and 16 x 16); the hourglass's inner level sees 8 x 8;
* width: every width, FFN width and mapping width divided by ``--width-div`` (default 6:
  768 -> 128, 384 -> 64), attention heads of ``d_head`` 32 instead of 64;
* depth: every depth halved (rounded, at least 1): DiT 12 -> 6, hourglass 2 + 2 / 11 -> 1 + 1 / 6,
  U-ViT 16 -> 8;
* optimiser, EMA, weighting, sigma density, sampler and schedule: the recipe's own.

Equal compute: each rung trains for ``steps = budget / (GMAC per image x batch)`` optimizer steps,
with ``GMAC per image`` the forward cost from :func:`hourglass.flops.count_gmacs` (training costs
about 3x that for every rung alike). Cheaper models therefore take more steps.

Metrics, on the ``val`` split of ``shapes`` (never trained on), with the EMA weights:

* validation denoising loss: :func:`hourglass.evaluation.validation_loss` (x0-space MSE, the same
  ``uniform`` weighting for every rung whatever it trained with) at 8 fixed sigmas, fixed seed;
* FID and KID of ``--samples`` generated images (classes cycling, no guidance) against
  ``--reference`` validation images, with the feature network :func:`resolve_feature_extractor`
  finds (``--extractor``). With a few hundred images FID is strongly biased upwards; compare rungs
  with each other only (KID is unbiased).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fmt, machine_description, markdown_table  # noqa: E402

from hourglass.evaluation import (  # noqa: E402
    DatasetImages,
    FeatureStats,
    ImageSource,
    extract_features,
    fid_from_stats,
    kernel_inception_distance,
    resolve_feature_extractor,
    to_uint8_rgb,
    validation_loss,
)
from hourglass.flops import count_gmacs  # noqa: E402
from hourglass.recipe import (
    recipe_from_data,  # noqa: E402
    toml,  # noqa: E402
)
from hourglass.registry import DATASET  # noqa: E402

__all__ = ["RUNGS", "DEFAULT_RUNGS", "rung_overrides", "rung_recipe", "run_rung", "main"]

#: rung name -> (recipe path relative to the repository, label, the paper's ImageNet-128 FID or None)
RUNGS: dict[str, tuple[str, str, float | None]] = {
    "dit": ("recipes/dit_b4_imagenet128.toml", "DiT-style baseline (DiT-B/4 graph)", 42.03),
    "global": ("recipes/ablation/1_global_only.toml", "hourglass, global attention only", 50.76),
    "swin": ("recipes/ablation/2_swin.toml", "+ Swin attention", 55.93),
    "neighborhood": ("recipes/ablation/3_neighborhood.toml", "+ neighborhood attention", 51.07),
    "geglu": ("recipes/ablation/4_geglu.toml", "+ GEGLU", 44.36),
    "rope": ("recipes/ablation/5_rope.toml", "+ axial RoPE", 41.41),
    "hdit": ("recipes/ablation/6_soft_min_snr.toml", "+ Soft-Min-SNR (= HDiT)", 27.74),
    "uvit": ("recipes/uvit_m4_imagenet64.toml", "U-ViT (U-ViT-M/4 graph)", None),
}
#: the ladder the brief asks for (Swin is available with --rungs but not run by default)
DEFAULT_RUNGS = ("dit", "global", "neighborhood", "geglu", "rope", "hdit", "uvit")

RESOLUTION = 32
PATCH = 2
D_HEAD = 32
SHAPES_CLASSES = 6


def _shrink_width(value: int, div: int) -> int:
    return max(D_HEAD, int(round(value / div)))


def _shrink_depth(value: int) -> int:
    return max(1, int(round(value / 2)))


def rung_overrides(data: dict[str, Any], *, batch_size: int, steps: int, width_div: int = 6) -> list[tuple[str, Any]]:
    """The ``--set`` overrides that shrink one ladder recipe to the CPU benchmark.

    Only sizes, data and bookkeeping change; the components (attention kinds, FFN, positions,
    norm, weighting, sampler) stay the recipe's, so consecutive rungs differ exactly as their
    recipes do.

    Args:
        data: the recipe's plain data (as read from its TOML file).
        batch_size: images per optimizer step.
        steps: optimizer steps.
        width_div: every width (and FFN / mapping width) is divided by this.

    Returns:
        ``(dotted path, value)`` pairs for :func:`hourglass.recipe.apply_overrides`.
    """
    model = data["model"]
    out: list[tuple[str, Any]] = [
        ("model.input_size", RESOLUTION),
        ("model.patch_size", PATCH),
        ("model.num_classes", SHAPES_CLASSES),
    ]
    for key in ("width", "d_ff"):
        if key in model:
            out.append((f"model.{key}", _shrink_width(model[key], width_div)))
    if "depth" in model:
        out.append(("model.depth", _shrink_depth(model["depth"])))
    if isinstance(model.get("attention"), dict) and "d_head" in model["attention"]:
        out.append(("model.attention.d_head", D_HEAD))
    mapping = model.get("mapping")
    if isinstance(mapping, dict):
        for key in ("width", "d_ff"):
            if key in mapping:
                out.append((f"model.mapping.{key}", _shrink_width(mapping[key], width_div)))
    for i, level in enumerate(model.get("levels", [])):
        out.append((f"model.levels[{i}].depth", _shrink_depth(level["depth"])))
        out.append((f"model.levels[{i}].width", _shrink_width(level["width"], width_div)))
        if "d_ff" in level:  # keep the recipe's FFN ratio (4 x width for the GELU MLP rungs)
            out.append((f"model.levels[{i}].d_ff", _shrink_width(level["d_ff"], width_div)))
        if isinstance(level.get("attention"), dict) and "d_head" in level["attention"]:
            out.append((f"model.levels[{i}].attention.d_head", D_HEAD))
    out += [
        ("data.dataset", {"type": "shapes", "size": 10000}),
        ("data.batch_size", batch_size),
        ("data.num_workers", 0),
        ("train.steps", max(1, steps)),
        ("train.checkpoint_every", max(1, steps) + 1),
        ("train.sample_every", 0),
        ("train.log_every", max(1, steps)),
        ("train.seed", 0),
        ("runtime.device", "cpu"),
        ("runtime.dtype", "float32"),
    ]
    return out


def rung_recipe(name: str, *, batch_size: int, steps: int, width_div: int = 6) -> Any:
    """The validated :class:`~hourglass.recipe.Recipe` of rung ``name`` (see :func:`rung_overrides`).

    Raises:
        ValueError: for an unknown rung name.
    """
    if name not in RUNGS:
        raise ValueError(f"unknown rung {name!r}; choose from {', '.join(RUNGS)}")
    path = ROOT / RUNGS[name][0]
    data = toml.loads(path.read_text(encoding="utf-8"))
    overrides = rung_overrides(data, batch_size=batch_size, steps=steps, width_div=width_div)
    return recipe_from_data(data, overrides, source=str(path))


class _TensorImages(ImageSource):
    """Generated images held in memory: ``(N, C, H, W)`` floats in [-1, 1]."""

    def __init__(self, images: torch.Tensor, label: str) -> None:
        self.images = images
        self.label = label

    def __len__(self) -> int:
        return self.images.shape[0]

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "tensor", "label": self.label, "n": len(self)}

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), batch_size):
            yield to_uint8_rgb(self.images[start : start + batch_size])


def run_rung(
    name: str,
    *,
    budget_gmacs: float,
    batch_size: int,
    width_div: int,
    val_dataset: Any,
    n_val: int,
    n_samples: int,
    sample_steps: int,
    extractor: Any,
    ref_stats: FeatureStats | None,
    log: Any = print,
) -> dict[str, Any]:
    """Train one rung at the given compute and measure it.

    Args:
        name: a key of :data:`RUNGS`.
        budget_gmacs: training compute, forward GMAC per image x steps x batch.
        batch_size: images per optimizer step.
        width_div: width divisor (see :func:`rung_overrides`).
        val_dataset: the ``shapes`` validation split (items ``image (C, H, W)``, ``class_cond ()``).
        n_val: images for the validation loss.
        n_samples: images generated for FID/KID (0: skip).
        sample_steps: sampler steps (the recipe's sampler and schedule).
        extractor: a :class:`~hourglass.evaluation.FeatureExtractor` or None (no FID/KID).
        ref_stats: reference features of the validation images (None: no FID/KID).
        log: prints progress lines.

    Returns:
        A JSON-able dict of the rung's settings and results.
    """
    from hourglass.train import Trainer, generate_images
    from hourglass.train.sampling import class_labels

    probe = rung_recipe(name, batch_size=batch_size, steps=1, width_div=width_div)
    gmacs = count_gmacs(probe.model)
    steps = max(1, int(round(budget_gmacs / (gmacs * batch_size))))
    recipe = rung_recipe(name, batch_size=batch_size, steps=steps, width_div=width_div)
    with tempfile.TemporaryDirectory(prefix=f"ablation_{name}_") as run_dir:
        trainer = Trainer(recipe, run_dir, report=lambda _msg: None, progress=False)
        params = sum(p.numel() for p in trainer.model.parameters())
        log(f"[{name}] {params / 1e6:.3f}M params, {gmacs:.4f} GMAC/img, {steps} steps x batch {batch_size}")
        data = trainer.loader.iterate(start_step=0)
        losses: list[float] = []
        start = time.perf_counter()
        for _ in range(steps):
            out = trainer.train_step([next(data)])
            losses.append(out["loss"])
        train_s = time.perf_counter() - start
        tail = losses[-max(1, len(losses) // 10):]
        denoiser = trainer.ema_denoiser
        val = validation_loss(denoiser, val_dataset, n=n_val, seed=0, batch_size=64)
        result: dict[str, Any] = {
            "rung": name, "label": RUNGS[name][1], "recipe": RUNGS[name][0], "paper_fid": RUNGS[name][2],
            "params": params, "gmacs": gmacs, "steps": steps, "batch_size": batch_size,
            "train_gmacs": gmacs * steps * batch_size, "train_seconds": train_s,
            "train_loss_last10pct": float(np.mean(tail)), "val_loss": val.mean,
            "val_sigmas": list(val.sigmas), "val_per_sigma": list(val.per_sigma),
            "weighting": recipe.diffusion.weighting.type, "fid": None, "kid": None, "kid_std": None,
        }
        if n_samples > 0 and extractor is not None and ref_stats is not None:
            start = time.perf_counter()
            s = recipe.sample
            images = generate_images(
                denoiser, n=n_samples, shape=(3, RESOLUTION, RESOLUTION), sampler=s.sampler, schedule=s.schedule,
                steps=sample_steps, seed=0, labels=class_labels(n_samples, SHAPES_CLASSES), cfg_scale=1.0,
                uncond_class=SHAPES_CLASSES, batch_size=64, device="cpu",
            )
            feats = extract_features(_TensorImages(images, name), extractor, batch_size=50)
            gen_stats = FeatureStats.from_features(feats, extractor.name)
            kid = kernel_inception_distance(feats, ref_stats.features, subsets=50, subset_size=min(100, n_samples))
            result.update(fid=fid_from_stats(gen_stats, ref_stats), kid=kid.mean, kid_std=kid.std,
                          sample_seconds=time.perf_counter() - start)
    log(f"[{name}] train {train_s:.0f}s, loss {result['train_loss_last10pct']:.4f}, val {val.mean:.4f}, "
        f"FID {fmt(result['fid'], '.1f')}, KID {fmt(result['kid'], '.4f')}")
    return result


def _plot(results: list[dict[str, Any]], path: Path, metric_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["rung"] for r in results]
    panels = [("val_loss", "validation loss (x0 MSE, EMA)")]
    if any(r["fid"] is not None for r in results):
        panels += [("fid", f"FID ({metric_name})"), ("kid", f"KID ({metric_name})")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        values = [r[key] if r[key] is not None else math.nan for r in results]
        errors = [r["kid_std"] or 0.0 for r in results] if key == "kid" else None
        ax.bar(range(len(names)), values, yerr=errors, color="#4c72b0", capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"CPU ablation at equal compute ({results[0]['train_gmacs']:.0f} forward GMAC per rung)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(results: list[dict[str, Any]], args: argparse.Namespace, command: str, metric_note: str,
              wall: float) -> str:
    header = ["rung", "recipe", "params", "GMAC/img", "steps x batch", "train s", "train loss",
              "val loss", "FID", "KID (x1e3)", "paper FID (IN-128)"]
    rows = []
    for r in results:
        kid = "-" if r["kid"] is None else f"{r['kid'] * 1e3:.1f} ± {r['kid_std'] * 1e3:.1f}"
        rows.append([
            r["label"], f"`{r['recipe']}`", f"{r['params'] / 1e6:.2f}M", f"{r['gmacs']:.4f}",
            f"{r['steps']} x {r['batch_size']}", f"{r['train_seconds']:.0f}",
            f"{r['train_loss_last10pct']:.4f} ({r['weighting']})", f"{r['val_loss']:.4f}",
            fmt(r["fid"], ".1f"), kid, fmt(r["paper_fid"], ".2f"),
        ])
    sig_header = ["rung"] + [f"σ={s:.3g}" for s in results[0]["val_sigmas"]]
    sig_rows = [[r["rung"]] + [f"{v:.4f}" for v in r["val_per_sigma"]] for r in results]
    budget = results[0]["train_gmacs"]
    return "\n".join([
        "# Architecture ablation at equal compute (CPU, `shapes` 32x32)",
        "",
        "Written by `benchmarks/ablation.py`; rerun it to refresh. The ladder of the HDiT paper's ablation",
        "(Crowson et al. 2024, arXiv 2401.11605, Sec. 5.2 and Table 1), each rung derived",
        "from its recipe by size/data overrides only (see the script's docstring), trained at the same forward",
        "compute (GMAC per image x steps x batch).",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_description()} (shared with other jobs while this ran)",
        f"- Compute per rung: {args.budget_gmacs:g} forward GMAC requested (achieved ≈ {budget:.0f}; steps are rounded);",
        f"  batch {args.batch_size}, width divisor {args.width_div}, seed 0; total wall time {wall / 60:.1f} min.",
        f"- Validation: {args.val} images of the `shapes` val split, 8 log-spaced sigmas 0.05..40, noise seed 0,",
        "  EMA weights, x0-space MSE (uniform weighting for every rung, so rungs trained with EDM and",
        "  Soft-Min-SNR weighting are scored on the same scale).",
        f"- Sample quality: {metric_note}",
        "",
        markdown_table(header, rows),
        "",
        "Validation loss per sigma:",
        "",
        markdown_table(sig_header, sig_rows),
        "",
        "![ablation](ablation.png)",
        "",
        "## Reading these numbers",
        "",
        *([f"- At this budget every rung took at most {max(r['steps'] for r in results)} optimizer steps: the models are",
           "  barely trained (samples are still mostly noise, hence FIDs in the hundreds). Differences here",
           "  reflect the first steps of training, not what each architecture reaches."]
          if max(r["steps"] for r in results) < 1000 else []),
        "- These are tiny models (about 1/6 of the paper's widths, half its depths) trained for a few CPU",
        "  minutes on a toy dataset; the paper trained 117-130M-parameter models for 400k steps on ImageNet.",
        "  The ordering here says nothing reliable about the paper's ordering and was not tuned toward it.",
        "- One seed per rung: differences smaller than the spread between seeds (not measured here) are noise.",
        "- FID from a few hundred images is biased upwards and noisy; KID (unbiased, with its std over subsets)",
        "  is the better of the two at this sample count. The last column is the paper's ImageNet-128 FID for",
        "  reference only.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-gmacs", type=float, default=6000.0,
                        help="training compute per rung: forward GMAC per image x steps x batch (default 6000)")
    parser.add_argument("--rungs", default=",".join(DEFAULT_RUNGS),
                        help=f"comma-separated rungs (default {','.join(DEFAULT_RUNGS)}; also: swin)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks",
                        help="folder for ablation.md and ablation.png")
    parser.add_argument("--batch-size", type=int, default=32, help="images per optimizer step (default 32)")
    parser.add_argument("--width-div", type=int, default=6, help="divide every recipe width by this (default 6)")
    parser.add_argument("--val", type=int, default=256, help="validation images for the denoising loss")
    parser.add_argument("--samples", type=int, default=200, help="generated images per rung for FID/KID (0: skip)")
    parser.add_argument("--reference", type=int, default=500, help="validation images for the FID/KID reference")
    parser.add_argument("--sample-steps", type=int, default=25, help="sampler steps (the recipe's sampler/schedule)")
    parser.add_argument("--extractor", default="auto",
                        help="feature network: auto (fid-helper Inception, ...), random-projection, ... (default auto)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--list", action="store_true", help="list the rungs and exit")
    args = parser.parse_args(argv)

    if args.list:
        for name, (path, label, _) in RUNGS.items():
            print(f"{name:13s} {label:40s} {path}")
        return 0
    rungs = [r.strip() for r in args.rungs.split(",") if r.strip()]
    unknown = [r for r in rungs if r not in RUNGS]
    if unknown or not rungs:
        parser.error(f"unknown rung(s) {unknown or rungs}; choose from {', '.join(RUNGS)}")
    for flag in ("budget_gmacs", "batch_size", "width_div", "val"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.samples < 0 or args.reference < 2 or args.sample_steps < 1:
        parser.error("--samples must be >= 0, --reference >= 2 and --sample-steps >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    command = "python3 benchmarks/ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    wall_start = time.perf_counter()

    val_dataset = DATASET.build({"type": "shapes", "size": max(args.val, args.reference)},
                                resolution=RESOLUTION, split="val")
    extractor, ref_stats, metric_note = None, None, "not measured (--samples 0)"
    if args.samples > 0:
        from hourglass.evaluation import FeatureNetworkUnavailable

        try:
            extractor = resolve_feature_extractor(args.extractor)
        except FeatureNetworkUnavailable as exc:
            metric_note = f"not measured: no feature network ({exc})"
            print(metric_note, file=sys.stderr)
        if extractor is not None:
            ref = extract_features(DatasetImages(val_dataset, n=args.reference, label="shapes val"), extractor,
                                   batch_size=50)
            ref_stats = FeatureStats.from_features(ref, extractor.name)
            kind = "Inception" if "random" not in extractor.name else "weight-free random projection (not Inception)"
            metric_note = (
                f"FID and KID with `{extractor.name}` ({kind}, {extractor.dim}-d features) of {args.samples} EMA "
                f"samples per rung ({args.sample_steps} steps of the recipe's sampler, no guidance, classes cycling) "
                f"against {args.reference} `shapes` val images; KID over 50 subsets of {min(100, args.samples)}."
            )

    results = []
    for name in rungs:
        results.append(run_rung(
            name, budget_gmacs=args.budget_gmacs, batch_size=args.batch_size, width_div=args.width_div,
            val_dataset=val_dataset, n_val=args.val, n_samples=args.samples, sample_steps=args.sample_steps,
            extractor=extractor, ref_stats=ref_stats,
        ))
    wall = time.perf_counter() - wall_start
    args.out.mkdir(parents=True, exist_ok=True)
    _plot(results, args.out / "ablation.png", extractor.name if extractor is not None else "-")
    (args.out / "ablation.md").write_text(_markdown(results, args, command, metric_note, wall))
    print(f"wrote {args.out / 'ablation.md'} and {args.out / 'ablation.png'} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
