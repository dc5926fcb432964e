"""Per-step overhead of every registered sampler relative to one denoiser forward, on CPU.

Usage::

    python3 benchmarks/sampling.py                          # quick-start model, writes docs/benchmarks/sampling.md
    python3 benchmarks/sampling.py --batch 36 1 --repeats 5
    python3 benchmarks/sampling.py --preset hdit_test --steps 10 --out /tmp/sampling

The model is the one of ``recipes/quickstart.toml`` (``--recipe``; ``--preset`` picks a model preset
instead), untrained (timing does not depend on the weights), wrapped exactly as ``hourglass
sample`` wraps it: the recipe's denoiser (Karras preconditioning), classifier-free guidance when
``cfg_scale != 1`` (one forward over the doubled batch) and a :class:`NoiseSampler` as the SDE noise
source, with the recipe's schedule and number of steps.

Overhead, two ways, process CPU time (one thread by default; best of ``--repeats``):

- **null** (the verdict): run the sampler with a denoiser that costs nothing (it returns a tensor
  computed in advance), so the whole time is the sampler's own work (arithmetic, noise, sigma
  tensors, schedule checks); divided by the steps and by the time of one real denoiser call.
- **difference** (a cross-check, noisy): the sampler's time with the real denoiser minus
  ``evaluations x`` the time of one real denoiser call, per step.

Target: below 2 % of one forward per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine_description, markdown_table  # noqa: E402

TARGET = 0.02


def best_cpu(fn, repeats: int, min_time: float = 0.0) -> float:
    """Best process CPU time of ``fn()`` over ``repeats`` runs (more while their total is under ``min_time``)."""
    fn()  # warm-up
    times: list[float] = []
    total = 0.0
    while len(times) < repeats or total < min_time:
        t = time.process_time()
        fn()
        dt = time.process_time() - t
        times.append(dt)
        total += dt
    return min(times)


class CountingDenoiser:
    """Forward ``D(x, sigma, **cond)`` to ``inner`` and count the calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.calls += 1
        return self.inner(x, sigma, **cond)


class NullDenoiser:
    """A denoiser that costs nothing: returns ``out`` ``(B, C, H, W)`` computed in advance."""

    def __init__(self, out: torch.Tensor) -> None:
        self.out = out

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        return self.out


def build_setup(recipe_path: Path | None, preset: str | None) -> dict[str, Any]:
    """Model, denoiser and sampling settings: from a recipe, or a preset with the default sampling.

    Returns:
        ``{"name", "denoiser", "shape" (C, H, W), "num_classes", "cfg_scale", "schedule", "steps",
        "batch"}``.
    """
    from hourglass.diffusion import KarrasDenoiser, KarrasDenoiserSpec
    from hourglass.models.factory import create_model
    from hourglass.registry import DENOISER, SCHEDULE

    if preset is not None:
        model = create_model(preset)
        denoiser = KarrasDenoiser(KarrasDenoiserSpec(), model)
        sample = {"schedule": SCHEDULE.validate("karras"), "steps": 30, "cfg_scale": 1.0, "batch": 16}
        name = f"preset {preset}"
    else:
        from hourglass.recipe import load_recipe

        recipe = load_recipe(recipe_path)
        model = create_model(recipe.model)
        denoiser = DENOISER.build(recipe.diffusion.denoiser, model=model)
        s = recipe.sample
        sample = {"schedule": s.schedule, "steps": s.steps, "cfg_scale": s.cfg_scale, "batch": s.batch_size}
        name = str(recipe_path.relative_to(ROOT) if recipe_path.is_relative_to(ROOT) else recipe_path)
    model.eval()
    spec = model.spec
    size = spec.input_size if isinstance(spec.input_size, int) else spec.input_size[0]
    return {"name": name, "denoiser": denoiser, "shape": (spec.in_channels, size, size),
            "num_classes": getattr(spec, "num_classes", 0), "params": sum(p.numel() for p in model.parameters()),
            **sample}


def measure_sampler(
    sampler_name: str, setup: dict[str, Any], batch: int, repeats: int, seed: int = 0
) -> dict[str, Any]:
    """Time one sampler with the real and with the null denoiser at ``batch`` images.

    The real sampler runs and the runs of ``steps`` plain denoiser calls alternate, so both see
    the same load on a shared machine; each takes the best of ``repeats``.

    Args:
        sampler_name: a registered sampler (default options).
        setup: from :func:`build_setup`.
        batch: images per call ``B``.
        repeats: timed runs of the real sampler (the null one runs until 0.2 s have been timed).
        seed: seed of the noise.

    Returns:
        ``{"sampler", "batch", "steps", "evals", "forward_s", "real_s", "null_s", "null_pct",
        "diff_pct"}`` with the overheads as fractions of ``forward_s`` (one denoiser call) per step.
    """
    from hourglass.diffusion import NoiseSampler, initial_noise
    from hourglass.registry import SAMPLER, SCHEDULE

    sampler = SAMPLER.build(sampler_name)
    sigmas = SCHEDULE.build(setup["schedule"])(setup["steps"])
    seeds = list(range(seed, seed + batch))
    x0 = initial_noise(seeds, setup["shape"]) * sigmas[0]
    real, extra = guided_denoiser(setup, batch)
    counter = CountingDenoiser(real)
    null = NullDenoiser(torch.zeros_like(x0))

    def run(denoiser: Any) -> None:
        sampler(denoiser, x0, sigmas, noise=NoiseSampler(seeds), extra_args=extra)

    run(counter)
    evals = counter.calls
    forward_runs, real_runs = [], []
    for _ in range(repeats):
        forward_runs.append(forward_time(setup, batch, 1))
        real_runs.append(best_cpu(lambda: run(counter), 1))
    forward_s, real_s = min(forward_runs), min(real_runs)
    null_s = best_cpu(lambda: run(null), max(repeats, 5), min_time=0.2)
    steps = setup["steps"]
    return {
        "sampler": sampler_name, "batch": batch, "steps": steps, "evals": evals, "forward_s": forward_s,
        "real_s": real_s, "null_s": null_s, "null_pct": null_s / steps / forward_s,
        "diff_pct": (real_s - evals * forward_s) / steps / forward_s,
        "profile": profile_null(sampler, x0, sigmas, seeds, extra) if null_s / steps / forward_s >= TARGET else [],
    }


def profile_null(sampler: Any, x0: torch.Tensor, sigmas: torch.Tensor, seeds: list[int], extra: dict,
                 top: int = 5) -> list[tuple[str, float]]:
    """Where a sampler's own time goes: cProfile of null runs (at least 0.3 s of them).

    Functions are ranked by cumulative time (time inside them and their callees), leaving out the
    frames every sampler has around its work: ``Sampler.__call__``, the ``_sample`` loop and the
    lambdas and null denoiser of this script.

    Returns:
        ``[(function, share of the profiled time)]``, largest first.
    """
    import cProfile
    import pstats

    from hourglass.diffusion import NoiseSampler

    null = NullDenoiser(torch.zeros_like(x0))
    prof = cProfile.Profile(time.process_time)
    start = time.process_time()
    prof.enable()
    while time.process_time() - start < 0.3:
        sampler(null, x0, sigmas, noise=NoiseSampler(seeds), extra_args=extra)
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    total = sum(v[2] for v in stats.values()) or 1.0
    def wrapper(key: tuple) -> bool:
        file, _, fn = key
        return (file.endswith("_sampler_base.py") or fn in ("_sample", "<lambda>")
                or (file == __file__) or "_lsprof" in fn)

    rows = sorted(((v[3], k) for k, v in stats.items() if not wrapper(k)), reverse=True)[:top]
    return [(f"{Path(k[0]).name}:{k[1]} {k[2]}" if k[1] else k[2], t / total) for t, k in rows]


def guided_denoiser(setup: dict[str, Any], batch: int) -> tuple[Any, dict[str, torch.Tensor]]:
    """The denoiser as ``hourglass sample`` calls it and its extra arguments for ``batch`` images.

    Class-conditional models get class ids cycling over the classes, wrapped in classifier-free
    guidance when the recipe's ``cfg_scale`` is not 1 (one forward over the doubled batch).
    """
    from hourglass.diffusion import CFGDenoiser

    den: Any = setup["denoiser"]
    cond: dict[str, torch.Tensor] = {}
    if setup["num_classes"]:
        cond["class_cond"] = torch.arange(batch) % setup["num_classes"]
        if setup["cfg_scale"] != 1.0:
            den = CFGDenoiser(den, setup["cfg_scale"], setup["num_classes"])
    return den, cond


def forward_time(setup: dict[str, Any], batch: int, repeats: int) -> float:
    """CPU seconds of one denoiser call as the samplers make it (guided when the recipe guides).

    Args:
        setup: from :func:`build_setup`.
        batch: images per call ``B``.
        repeats: timed runs (best of them).

    Timed as ``steps`` calls in a row (best of the runs, divided by ``steps``), the granularity of a
    sampler run, so that the difference method compares like with like.
    """
    x = torch.randn(batch, *setup["shape"])
    sigma = torch.full((batch,), 1.0)
    den, cond = guided_denoiser(setup, batch)
    n = setup["steps"]

    def calls() -> None:  # timed like a sampler run: n calls in a row, best of the repeats
        for _ in range(n):
            den(x, sigma, **cond)

    with torch.no_grad():
        return best_cpu(calls, repeats) / n


def component_costs(shape: tuple[int, ...], batch: int, repeats: int) -> dict[str, float]:
    """CPU seconds of per-step building blocks at ``batch``: noise draws, the sigma tensor, one axpy."""
    from hourglass.diffusion import NoiseSampler

    x = torch.randn(batch, *shape)
    y = torch.randn_like(x)
    noise = NoiseSampler(list(range(batch)))
    n = 200

    def loop(fn):
        def go():
            for _ in range(n):
                fn()
        return best_cpu(go, repeats) / n

    return {
        "NoiseSampler(seeds)(x)": loop(lambda: noise(x)),
        "torch.randn_like(x)": loop(lambda: torch.randn_like(x)),
        "torch.full((B,), sigma)": loop(lambda: torch.full((batch,), 1.0)),
        "x + c * y": loop(lambda: x + 0.5 * y),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every registered sampler, write ``sampling.md`` and print PASS/FAIL lines."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart.toml", help="model + sampling")
    p.add_argument("--preset", help="use this model preset (default sampling settings) instead of --recipe")
    p.add_argument("--samplers", nargs="+", help="sampler names (default: every registered one)")
    p.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: the recipe's, then 1)")
    p.add_argument("--steps", type=int, help="override the recipe's number of steps")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each real sampler")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU time is then exact)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks", help="folder of sampling.md")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or (args.steps is not None and args.steps < 1):
        p.error("--repeats, --threads and --steps must be at least 1")
    if args.preset is None and not args.recipe.is_file():
        p.error(f"--recipe {args.recipe} does not exist; pass a recipe file or --preset hdit_test")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from hourglass.registry import SAMPLER

    setup = build_setup(None if args.preset else args.recipe.resolve(), args.preset)
    if args.steps is not None:
        setup["steps"] = args.steps
    names = args.samplers or sorted(SAMPLER.names())
    unknown = sorted(set(names) - set(SAMPLER.names()))
    if unknown:
        p.error(f"unknown sampler(s) {', '.join(unknown)}; registered: {', '.join(sorted(SAMPLER.names()))}")
    batches = args.batch or list(dict.fromkeys([setup["batch"], 1]))
    if min(batches) < 1:
        p.error("--batch sizes must be at least 1")

    rows, checks, comp_rows, profiles = [], [], [], []
    for b in batches:
        guided = setup["num_classes"] and setup["cfg_scale"] != 1.0
        print(f"batch {b}{' (CFG: the model runs on 2 x B images)' if guided else ''}:", flush=True)
        fwds = []
        for name in names:
            r = measure_sampler(name, setup, b, args.repeats)
            fwd = r["forward_s"]
            fwds.append(fwd)
            if r["profile"]:
                profiles.append((name, b, r["profile"]))
            ok = r["null_pct"] < TARGET
            checks.append((f"{name} (batch {b}) overhead per step < {TARGET:.0%} of a forward", ok,
                           f"{r['null_pct']:.2%} (difference method {r['diff_pct']:+.2%})"))
            rows.append([name, str(b), f"{r['evals'] / r['steps']:.2f}", f"{fwd * 1e3:.2f}",
                         f"{r['real_s']:.3f}", f"{r['null_s'] / r['steps'] * 1e6:.0f}",
                         f"{r['null_pct']:.2%}", f"{r['diff_pct']:+.2%}", "PASS" if ok else "FAIL"])
            print(f"  {name:16s} null {r['null_s'] / r['steps'] * 1e6:7.0f} us/step = {r['null_pct']:.2%} of a "
                  f"forward; difference {r['diff_pct']:+.2%}", flush=True)
        fwd = sorted(fwds)[len(fwds) // 2]
        for comp, secs in component_costs(setup["shape"], b, args.repeats).items():
            comp_rows.append([comp, str(b), f"{secs * 1e6:.1f}", f"{secs / fwd:.2%}"])

    command = "python3 benchmarks/sampling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Sampler overhead per step",
        "",
        f"Made by `{command.strip()}` on {machine_description()}; {args.threads} thread(s), float32.",
        "",
        f"Model: {setup['name']} ({setup['params'] / 1e6:.2f}M parameters, images {setup['shape']}), "
        f"{setup['steps']} steps of the {setup['schedule'].type} schedule, CFG scale {setup['cfg_scale']}"
        + (" (one forward over the doubled batch)" if setup["cfg_scale"] != 1.0 and setup["num_classes"] else "")
        + ", SDE noise from `NoiseSampler(seeds)` as `hourglass sample` draws it.",
        "",
        markdown_table(["sampler", "batch", "evals/step", "forward ms", "sampler s (real)", "own us/step",
                        "overhead/step (null)", "overhead/step (difference)", f"< {TARGET:.0%}"], rows),
        "",
        "`forward ms`: CPU time of one denoiser call (preconditioning, guidance and model). `own us/step`: "
        "CPU time per step of the sampler run with a denoiser that costs nothing (the sampler's own work: "
        "arithmetic, noise draws, sigma tensors, schedule checks). `overhead/step (null)` = that / forward "
        "(the verdict); `(difference)` = (real sampler time - evaluations x forward) / steps / forward, a noisy "
        "cross-check. Process CPU time, best of the runs.",
        "",
        "## Per-step building blocks",
        "",
        "CPU time of single operations a step makes, against the median forward of the batch size.",
        "",
        markdown_table(["operation", "batch", "us per call", "% of a forward"], comp_rows),
        "",
        "## Checks",
        "",
    ]
    lines += [f"- **{'PASS' if ok else 'FAIL'}** {label}: {detail}" for label, ok, detail in checks]
    for name, b, prof in profiles:
        lines += ["", f"### Where {name}'s own time goes (batch {b}, cProfile of null runs, cumulative)", ""]
        lines += [f"- {share:.0%} `{fn}`" for fn, share in prof]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sampling.md").write_text("\n".join(lines) + "\n")
    print()
    for label, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'} {label}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
