"""Training throughput of a recipe on this device: images/s and model FLOP utilisation (MFU).

Usage::

    python3 benchmarks/train_throughput.py                                  # CPU: recipes/quickstart.toml
    python3 benchmarks/train_throughput.py recipes/hdit_imagenet256.toml --bf16 --compile \\
        --backend neighborhood=natten --batch-size 64 --steps 50 --warmup 10   # a GPU

One timed step is exactly what ``hourglass train`` does per optimizer step (Trainer.train_step):
sample sigmas from the recipe's density and noise, the preconditioned loss with the recipe's
weighting (class dropout included), backward, gradient clipping, AdamW, EMA update. Batches are
random images made on the device (no data loading: the number is the model's, not the loader's).

``MFU = 6 x MACs per image x images/s / peak FLOP/s``: 2 FLOPs per multiply-accumulate, forward
plus a backward of twice its cost; the MACs are :func:`hourglass.flops.count_gmacs` of the forward,
so recomputation under ``--checkpointing`` earns no credit. The peak comes from ``--peak-tflops``,
else from the device name (dense bf16: H100 SXM 989, H200 989, A100 312 TFLOP/s), else, on CPU,
from timing a large fp32 matmul on the same threads (said so in the output).

Results go into ``docs/benchmarks/train_throughput.md`` (``--out``): a row per (device, recipe,
switches), replaced when measured again.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine_description  # noqa: E402

from hourglass.flops import count_gmacs  # noqa: E402
from hourglass.recipe import build_model, load_recipe  # noqa: E402
from hourglass.registry import DENOISER, SIGMA_DENSITY, WEIGHTING  # noqa: E402

__all__ = ["KNOWN_PEAKS_TFLOPS", "device_peak_tflops", "measure_cpu_peak_tflops", "measure", "main"]

#: dense bf16 tensor-core peaks (TFLOP/s) by a substring of the device name
KNOWN_PEAKS_TFLOPS: dict[str, float] = {"H100": 989.0, "H200": 989.0, "A100": 312.0}

DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "train_throughput.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
HEADER = ("| device | recipe | switches | batch | GMAC/img | img/s | s/step | peak TFLOP/s (source) | MFU |\n"
          "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")


def measure_cpu_peak_tflops(n: int = 2048, repeats: int = 5) -> float:
    """Achieved fp32 TFLOP/s of an ``(n, n) @ (n, n)`` matmul on the current torch threads (best run)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def device_peak_tflops(device: torch.device, override: float | None = None) -> tuple[float, str]:
    """The peak FLOP/s to divide by, and where it came from.

    Args:
        device: the device measured.
        override: ``--peak-tflops``; wins when given.

    Returns:
        ``(TFLOP/s, source)``.

    Raises:
        ValueError: a CUDA device whose name is not in :data:`KNOWN_PEAKS_TFLOPS` and no override.
    """
    if override is not None:
        return override, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in KNOWN_PEAKS_TFLOPS.items():
            if key in name:
                return peak, f"{key} dense bf16 spec"
        raise ValueError(f"no known peak for {name!r}; pass --peak-tflops with its dense peak in TFLOP/s")
    return measure_cpu_peak_tflops(), f"measured: fp32 2048^2 matmul, {torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(recipe: Any, *, steps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Time ``steps`` training steps of ``recipe`` after ``warmup`` untimed ones.

    Args:
        recipe: a validated :class:`~hourglass.recipe.Recipe` (``data.batch_size`` images per step,
            ``runtime.dtype``, ``runtime.compile``, ``train.gradient_checkpointing``, backends).
        steps: timed steps (>= 1).
        warmup: untimed steps first (compilation, allocator, autotuning).
        device: where to train.

    Returns:
        ``{"seconds_per_step", "images_per_sec", "final_loss"}``.
    """
    from hourglass.train import EMA, create_optimizer
    from hourglass.train.sampling import autocast_context

    t, spec = recipe.train, recipe.model
    torch.manual_seed(t.seed)
    model = build_model(recipe, device="cpu").to(device)
    if t.gradient_checkpointing:
        model.set_gradient_checkpointing(True)
    model.train()
    ema = EMA(model, power=t.ema.power, decay_max=t.ema.decay_max)
    optimizer = create_optimizer(model, lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay,
                                 mapping_lr_scale=t.mapping_lr_scale)
    net = torch.compile(model) if recipe.runtime.compile else model
    denoiser = DENOISER.build(recipe.diffusion.denoiser, model=net)
    weighting = WEIGHTING.build(recipe.diffusion.weighting)
    size = spec.input_size
    h, w = (size, size) if isinstance(size, int) else size
    density = SIGMA_DENSITY.build(recipe.diffusion.sigma_density, sigma_data=float(denoiser.sigma_data),
                                  image_size=(h, w))
    dtype = torch.bfloat16 if recipe.runtime.dtype == "bfloat16" else torch.float32
    n, classes = recipe.data.batch_size, int(getattr(spec, "num_classes", 0) or 0)
    gen = torch.Generator(device=device).manual_seed(t.seed)
    x0 = torch.rand((n, spec.in_channels, h, w), generator=gen, device=device) * 2 - 1
    cond: dict[str, torch.Tensor] = {"aug_cond": torch.zeros(n, 9, device=device)}

    def step(i: int) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        sigma = density.sample(n, generator=gen, device=device)
        noise = torch.randn(x0.shape, generator=gen, device=device)
        if classes:
            labels = torch.randint(0, classes, (n,), generator=gen, device=device)
            drop = torch.rand(n, generator=gen, device=device) < t.class_dropout
            cond["class_cond"] = torch.where(drop, torch.full_like(labels, classes), labels)
        with autocast_context(device, dtype):
            loss = denoiser.loss(x0, noise, sigma, weighting, **cond).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
        optimizer.step()
        ema.update(model, i)
        return loss.detach()

    for i in range(warmup):
        step(i)
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        loss = step(warmup + i)
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    return {"seconds_per_step": seconds, "images_per_sec": n / seconds, "final_loss": float(loss)}


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({machine_description().split(';')[0]}, {torch.get_num_threads()} threads)"


def _static_text() -> str:
    return "\n".join([
        "# Training throughput and MFU",
        "",
        "Written by `benchmarks/train_throughput.py` (rows are added or replaced per device, recipe and switches).",
        "A step is one `hourglass train` optimizer step (loss, backward, clipping, AdamW, EMA) on random",
        "images made on the device; `MFU = 6 x MACs/img x img/s / peak`, MACs from `hourglass.flops`",
        "(recomputation under `--checkpointing` earns no credit). CPU peaks are *measured* (a 2048^2 fp32",
        "matmul on the same threads), not a datasheet number; GPU peaks are dense bf16 (H100 SXM / H200 989,",
        "A100 312 TFLOP/s) unless `--peak-tflops` says otherwise.",
        "",
        "## Results",
        "",
        BEGIN,
        HEADER,
        END,
        "",
        "## GPU runs (not measured yet)",
        "",
        "No H100/H200 numbers for the paper-scale recipes have been measured yet. The commands to run (each",
        "writes its row into this file; `natten` needs to be installed on the GPU machine):",
        "",
        "```bash",
        "python3 benchmarks/train_throughput.py recipes/hdit_imagenet256.toml --bf16 --compile \\",
        "    --backend neighborhood=natten --batch-size 64 --steps 50 --warmup 10",
        "python3 benchmarks/train_throughput.py recipes/hdit_ffhq1024.toml --bf16 --compile \\",
        "    --backend neighborhood=natten --checkpointing --batch-size 8 --steps 30 --warmup 10",
        "```",
        "",
        "(`--peak-tflops 989` is the default for both H100 SXM and H200; pass it explicitly for other cards.)",
        "",
    ])


def write_row(path: Path, key: str, row: str, command: str) -> None:
    """Insert ``row`` into the results table of ``path`` (created when missing), replacing a row with ``key``.

    Args:
        path: the markdown file.
        key: ``"| device | recipe | switches |"``: the prefix identifying a row.
        row: the full table row.
        command: the command that produced the row (kept under the table).
    """
    text = path.read_text(encoding="utf-8") if path.is_file() else _static_text()
    if BEGIN not in text or END not in text:
        text = _static_text()
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    lines = [ln for ln in body.strip().splitlines() if ln.strip()]
    table = [ln for ln in lines if ln.startswith("|")][2:]
    commands = [ln for ln in lines if ln.startswith("- `")]
    table = [ln for ln in table if not ln.startswith(key)] + [row]
    cmd_line = f"- `{command}`"
    commands = [c for c in commands if c != cmd_line] + [cmd_line]
    new_body = "\n".join([HEADER, *table, "", "Commands:", "", *commands])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{BEGIN}\n{new_body}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", type=Path, default=None,
                        help="recipe TOML (default: recipes/quickstart.toml)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (runtime.dtype = bfloat16)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--backend", action="append", default=[], metavar="KIND=NAME",
                        help="attention backend per kind, e.g. neighborhood=natten (repeatable)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU (default: by device)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="PATH=VALUE",
                        help="extra recipe overrides, as in hourglass train --set")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update --out")
    args = parser.parse_args(argv)

    if args.steps < 1 or args.warmup < 0 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--steps and --batch-size must be >= 1 and --warmup >= 0")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error(f"--peak-tflops must be positive, got {args.peak_tflops}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    recipe_path = args.recipe or ROOT / "recipes" / "quickstart.toml"
    overrides: list[Any] = list(args.overrides)
    for item in args.backend:
        kind, sep, name = item.partition("=")
        if not sep or not kind or not name:
            parser.error(f"--backend takes KIND=NAME (e.g. neighborhood=natten), got {item!r}")
        overrides.append((f"runtime.backends.{kind}", name))
    overrides += [("runtime.device", device.type), ("runtime.dtype", "bfloat16" if args.bf16 else "float32"),
                  ("runtime.compile", args.compile), ("train.gradient_checkpointing", args.checkpointing)]
    if args.batch_size is not None:
        overrides.append(("data.batch_size", args.batch_size))
    recipe = load_recipe(recipe_path, overrides)

    macs = count_gmacs(recipe.model) * 1e9
    peak, source = device_peak_tflops(device, args.peak_tflops)
    result = measure(recipe, steps=args.steps, warmup=args.warmup, device=device)
    mfu = 6 * macs * result["images_per_sec"] / (peak * 1e12)
    switches = ", ".join(
        [s for s, on in (("bf16", args.bf16), ("compile", args.compile), ("checkpointing", args.checkpointing)) if on]
        + [f"{b}" for b in args.backend]
    ) or "fp32, eager"
    try:
        rel = recipe_path.resolve().relative_to(ROOT)
    except ValueError:
        rel = recipe_path
    device_label = _device_label(device)
    key = f"| {device_label} | `{rel}` | {switches} |"
    row = (f"{key} {recipe.data.batch_size} | {macs / 1e9:.4g} | {result['images_per_sec']:.3g} | "
           f"{result['seconds_per_step']:.3g} | {peak:.3g} ({source}) | {mfu * 100:.2f}% |")
    print(f"{device_label}: {rel} [{switches}] batch {recipe.data.batch_size}: {result['images_per_sec']:.3g} img/s, "
          f"{result['seconds_per_step']:.3g} s/step, {macs / 1e9:.4g} GMAC/img, peak {peak:.3g} TFLOP/s ({source}), "
          f"MFU {mfu * 100:.2f}% (loss {result['final_loss']:.4f})")
    if not args.no_write:
        command = "python3 benchmarks/train_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_row(args.out, key, row, command.strip())
        print(f"updated {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
