"""Cost of HDiT vs pixel-space DiT-B/4 as the image grows: GMACs, CPU time and memory per pixel.

Usage::

    python3 benchmarks/scaling.py                        # 128..1024 px, writes docs/benchmarks/scaling.{md,png}
    python3 benchmarks/scaling.py --sizes 128 256 --repeats 2 --out /tmp/scaling
    python3 benchmarks/scaling.py --gmacs-only           # the GMAC table alone (seconds)
    python3 benchmarks/scaling.py --save-raw r.json      # keep the raw measurements ...
    python3 benchmarks/scaling.py --load-raw r.json      # ... and re-render the report from them

Models: the HDiT ladder grows as HDiT (Crowson et al. 2024, arXiv 2401.11605) grows it for the
resolutions of its ablation (Sec. 5.2 and Table 1; Sec. 4.1 and Fig. 3), one outer neighborhood level
(NA7, width 384, depth 2 + 2) per doubling on top of ``hdit_imagenet128`` (see
``benchmarks/_common.py``); the baseline is ``dit_b_4_pixel`` (DiT-B/4 in pixel space) with
``input_size`` set (global attention over all ``(side / 4)^2`` tokens).

Measurements, each (model, size) in a fresh subprocess, batch 1, float32, default backends:

- **GMAC**: multiply-accumulates of one forward (``hourglass.flops.count_gmacs``, on the meta device).
- **time**: a forward + backward (``model(x, sigma, class_cond).backward(g)``) after one warm-up
  run; the best of ``--repeats`` runs of the process CPU time (``time.process_time``, all threads)
  and, for reference, the wall time. CPU time is the default measure because wall time on a
  machine shared with other jobs counts the time the process waits for a core.
- **memory**: the peak resident set during one forward + backward above the resident set just
  before it (Linux ``VmHWM`` reset through ``/proc/self/clear_refs`` after glibc ``malloc_trim``),
  so it counts activations, autograd state and temporaries but not the weights nor their gradient
  buffers (allocated before the run). A second column counts the bytes autograd saves for the
  backward pass (unique storages seen by ``saved_tensors_hooks``), which no allocator affects.

A size is skipped, and the table says why, when its memory estimated from the previous size
(growth exponent of the last two measured sizes) exceeds ``--memory-limit-gb`` or its estimated
time (GMACs over the throughput measured at the previous size) exceeds ``--time-budget``. A
watchdog kills a worker whose resident set passes the memory limit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ROOT,
    fmt,
    machine_description,
    markdown_table,
    model_data,
    read_status_kib,
    release_free_memory,
    reset_peak_rss,
)

MODELS = {"hdit": "HDiT (grown ladder)", "dit": "DiT-B/4 (pixel space)"}
#: the HDiT paper's ablation table (Table 1, R1 and step E): GMAC at 128 / 256 / 512 px
PAPER_GMACS = {"hdit": {128: 31, 256: 65, 512: 198}, "dit": {128: 106, 256: 657, 512: 6341}}
GMAC_TOL = 0.03
GMAC_FLAT_TOL = 0.20
MEASURED_FLAT_TOL = 0.35


# -- worker: one (model, size) in this process -----------------------------------------------------
def _timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _level_forward_times(model: torch.nn.Module, x, sigma, cls) -> dict[str, float]:
    """CPU seconds of one no-grad forward spent in each hourglass level's layers (HDiT only)."""
    if not hasattr(model, "middle"):
        return {}
    n_levels = len(model.encoder) + 1
    spent = {f"level{i}": 0.0 for i in range(n_levels)}
    starts: dict[int, float] = {}
    hooks = []
    groups = [(len(model.encoder), model.middle)]
    groups += [(i, lv) for i, lv in enumerate(model.encoder)] + [(i, lv) for i, lv in enumerate(model.decoder)]
    for level, layers in groups:
        for layer in layers:
            def pre(mod, args, _id=id(layer)):
                starts[_id] = time.process_time()

            def post(mod, args, out, _id=id(layer), _key=f"level{level}"):
                spent[_key] += time.process_time() - starts.pop(_id)

            hooks += [layer.register_forward_pre_hook(pre), layer.register_forward_hook(post)]
    try:
        with torch.no_grad():
            cpu, _ = _timed(lambda: model(x, sigma, class_cond=cls))
    finally:
        for h in hooks:
            h.remove()
    spent["total"] = cpu
    return spent


def measure(name: str, resolution: int, repeats: int, breakdown: bool = True, seed: int = 0) -> dict[str, Any]:
    """Time and memory of a batch-1 float32 forward + backward of one model, in this process.

    Args:
        name: ``"hdit"`` or ``"dit"``.
        resolution: image side in pixels.
        repeats: timed runs (at least 1) after the warm-up run.
        breakdown: also time one no-grad forward per hourglass level.
        seed: seed of the weights and inputs.

    Returns:
        A JSON-serialisable dict: ``cpu_s``/``wall_s`` (best of the timed runs), ``cold_cpu_s``,
        ``peak_bytes`` (peak RSS above the pre-run RSS), ``saved_bytes``, ``params``,
        ``weight_bytes``, ``threads`` and (HDiT) ``level_forward_cpu_s``.
    """
    from hourglass.models.factory import create_model

    torch.manual_seed(seed)
    model = create_model(model_data(name, resolution))
    x = torch.randn(1, 3, resolution, resolution)
    grad_out = torch.randn_like(x)
    sigma = torch.ones(1)
    cls = torch.zeros(1, dtype=torch.long)
    for p in model.parameters():  # gradient buffers exist before the measured run
        p.grad = torch.zeros_like(p)

    def step() -> None:
        model(x, sigma, class_cond=cls).backward(grad_out)

    storages: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in weights:  # weights are saved by reference, they cost nothing extra
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cold_cpu, cold_wall = _timed(step)  # warm-up (lazy kernels, caches)
    release_free_memory()
    base_kib = read_status_kib("VmRSS")
    can_reset = reset_peak_rss()
    cpu, wall = _timed(step)
    peak_kib = read_status_kib("VmHWM")
    peak = None if not can_reset or base_kib is None or peak_kib is None else (peak_kib - base_kib) * 1024
    cpus, walls = [cpu], [wall]
    for _ in range(repeats - 1):
        c, w = _timed(step)
        cpus.append(c)
        walls.append(w)
    out = {
        "model": name, "resolution": resolution, "threads": torch.get_num_threads(),
        "cpu_s": min(cpus), "wall_s": min(walls), "cpu_runs": cpus, "wall_runs": walls,
        "cold_cpu_s": cold_cpu, "cold_wall_s": cold_wall,
        "peak_bytes": peak, "saved_bytes": sum(storages.values()),
        "params": sum(p.numel() for p in model.parameters()),
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    }
    if breakdown:
        out["level_forward_cpu_s"] = _level_forward_times(model, x, sigma, cls)
    return out


# -- parent: plan, run workers, tabulate ------------------------------------------------------------
def run_worker(
    name: str, resolution: int, *, threads: int, repeats: int, memory_limit: float, timeout: float
) -> dict[str, Any]:
    """Run :func:`measure` in a fresh ``python3`` and return its result, or ``{"error": why}``.

    A watchdog polls the worker's resident set and kills it above ``memory_limit`` bytes.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HOURGLASS_NO_PROGRESS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, str(resolution),
           "--threads", str(threads), "--repeats", str(repeats)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    start, peak_kib, why = time.monotonic(), 0, None
    while proc.poll() is None:
        rss = read_status_kib("VmRSS", proc.pid) or 0
        peak_kib = max(peak_kib, rss)
        if rss * 1024 > memory_limit:
            why = f"killed: resident set passed the {memory_limit / 2**30:.0f} GiB limit"
        elif time.monotonic() - start > timeout:
            why = f"killed: ran longer than {timeout:.0f} s"
        if why:
            proc.kill()
            proc.communicate()
            return {"error": why}
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        tail = (stderr or "").strip().splitlines()[-3:]
        return {"error": f"worker failed (exit {proc.returncode}): {' / '.join(tail)}"}
    result = json.loads(stdout.strip().splitlines()[-1])
    result["worker_peak_rss_bytes"] = peak_kib * 1024
    return result


def gmac_table(sizes: list[int]) -> dict[str, dict[int, float]]:
    """GMACs of one forward for every model and size (counted on the meta device)."""
    from hourglass.flops import count_gmacs
    from hourglass.models.factory import model_spec

    return {name: {r: count_gmacs(model_spec(model_data(name, r))) for r in sizes} for name in MODELS}


def level_gmacs(resolution: int) -> dict[str, float]:
    """GMACs of one HDiT-ladder forward per level (``level0`` outermost) and the rest (``other``)."""
    from hourglass.flops import macs_by_module
    from hourglass.models.factory import model_spec

    spec = model_spec(model_data("hdit", resolution))
    inner = len(spec.levels) - 1
    out: dict[str, float] = {}
    for mod, macs in macs_by_module(spec).items():
        head, _, rest = mod.partition(".")
        if head == "middle":
            key = f"level{inner}"
        elif head in ("encoder", "decoder"):
            key = f"level{rest.split('.')[0]}"
        else:
            key = "other"
        out[key] = out.get(key, 0.0) + macs / 1e9
    return out


def _estimate(prev: list[tuple[int, float]], resolution: int) -> float | None:
    """Extrapolate a per-size quantity to ``resolution`` with the growth exponent (in pixels) of
    the last two points (1 = linear if only one point is known)."""
    if not prev:
        return None
    (r1, v1) = prev[-1]
    alpha = 1.0
    if len(prev) >= 2 and prev[-2][1] > 0 and v1 > 0:
        r0, v0 = prev[-2]
        alpha = max(1.0, math.log(v1 / v0) / math.log((r1 / r0) ** 2))
    return v1 * ((resolution / r1) ** 2) ** alpha


def flatness(values: dict[int, float], lo: int, hi: int) -> float | None:
    """``max / min`` of per-size values over sizes in ``[lo, hi]`` (None if one is missing)."""
    picked = [v for r, v in values.items() if lo <= r <= hi and v is not None]
    needed = [r for r in values if lo <= r <= hi]
    if len(picked) < 2 or len(picked) != len(needed) or min(picked) <= 0:
        return None
    return max(picked) / min(picked)


def marginal(values: dict[int, float]) -> dict[int, float]:
    """Cost of each doubling per added pixel: ``(v(r) - v(r/2)) / (r^2 - (r/2)^2)``, keyed by ``r``."""
    rs = sorted(r for r, v in values.items() if v is not None)
    return {b: (values[b] - values[a]) / (b * b - a * a) for a, b in zip(rs, rs[1:], strict=False)}


def run_checks(gmacs: dict, results: dict) -> list[tuple[str, bool | None, str]]:
    """The issue's checks as ``(name, passed or None if not measurable, detail)``."""
    checks: list[tuple[str, bool | None, str]] = []
    for name, paper in PAPER_GMACS.items():
        errs = {r: gmacs[name][r] / g - 1 for r, g in paper.items() if r in gmacs[name]}
        ok = all(abs(e) <= GMAC_TOL for e in errs.values()) if errs else None
        detail = ", ".join(f"{r}px {gmacs[name][r]:.1f} vs {paper[r]} ({e:+.1%})" for r, e in errs.items())
        checks.append((f"{name} GMAC reproduces the paper within {GMAC_TOL:.0%}", ok, detail))
    px = {name: {r: g * 1e9 / (r * r) for r, g in gmacs[name].items()} for name in gmacs}
    sizes = sorted(gmacs["hdit"])
    lo, hi = sizes[0], sizes[-1]
    f = flatness(px["hdit"], lo, hi)
    checks.append((f"HDiT GMAC/pixel flat within {GMAC_FLAT_TOL:.0%} from {lo} to {hi} px (max/min)",
                   None if f is None else f <= 1 + GMAC_FLAT_TOL, fmt(f, ".3f")))
    m = marginal(gmacs["hdit"])
    fm = flatness(m, min(m, default=0), max(m, default=0)) if len(m) >= 2 else None
    checks.append((f"HDiT marginal GMAC per added pixel flat within {GMAC_FLAT_TOL:.0%} (max/min over doublings)",
                   None if fm is None else fm <= 1 + GMAC_FLAT_TOL, fmt(fm, ".3f")))
    dit = gmacs["dit"]
    if len(dit) >= 2:
        slope = math.log(dit[hi] / dit[sizes[-2]]) / math.log((hi / sizes[-2]) ** 2)
        growth = px["dit"][hi] / px["dit"][lo]
        checks.append(("DiT-B/4 GMAC grows ~quadratically in pixels (log-log slope of the last doubling >= 1.7)",
                       slope >= 1.7, f"slope {slope:.2f}; GMAC/pixel x{growth:.1f} from {lo} to {hi} px"))
    hd = results.get("hdit", {})
    meas_hi = 512 if 512 in sizes else hi
    for key, label in (("cpu_s", "CPU time"), ("wall_s", "wall time"), ("peak_bytes", "memory"),
                       ("saved_bytes", "autograd-saved bytes")):
        per = {r: (hd[r].get(key) / (r * r) if hd.get(r) and hd[r].get(key) else None)
               for r in sizes if lo <= r <= meas_hi}
        f = flatness(per, lo, meas_hi)
        primary = key in ("cpu_s", "peak_bytes")
        checks.append((f"HDiT {label}/pixel flat within {MEASURED_FLAT_TOL:.0%} from {lo} to {meas_hi} px (max/min)"
                       + ("" if primary else " [reference]"),
                       None if f is None else f <= 1 + MEASURED_FLAT_TOL, fmt(f, ".3f")))
        mm = marginal({r: v * r * r for r, v in per.items() if v is not None})
        if len(mm) >= 2:
            fm = max(mm.values()) / min(mm.values()) if min(mm.values()) > 0 else None
            checks.append((f"HDiT marginal {label} per added pixel flat within {MEASURED_FLAT_TOL:.0%} "
                           f"(max/min over doublings up to {meas_hi} px) [diagnostic]",
                           None if fm is None else fm <= 1 + MEASURED_FLAT_TOL, fmt(fm, ".3f")))
    per_gmac = {r: hd[r]["cpu_s"] / gmacs["hdit"][r] for r in sizes
                if lo <= r <= meas_hi and hd.get(r) and hd[r].get("cpu_s")}
    f = flatness(per_gmac, lo, meas_hi) if len(per_gmac) == len([r for r in sizes if lo <= r <= meas_hi]) else None
    checks.append((f"HDiT CPU time per GMAC flat within {MEASURED_FLAT_TOL:.0%} from {lo} to {meas_hi} px "
                   "(time follows GMACs) [diagnostic]", None if f is None else f <= 1 + MEASURED_FLAT_TOL,
                   "-" if f is None else f"{f:.3f}; " + ", ".join(f"{r}px {1 / v:.1f} fwd GMAC per CPU s of fwd+bwd"
                                                                for r, v in sorted(per_gmac.items()))))
    return checks


def _row(name: str, r: int, g: float, g0: float, res: dict | None, skip: str | None) -> list[str]:
    pixels = r * r
    cells = [f"{MODELS[name]}", str(r), f"{g:.1f}", f"{g * 1e9 / pixels:,.0f}", f"{(g / pixels) / g0:.2f}"]
    if res is None or "error" in res:
        why = skip or (res or {}).get("error", "not measured")
        return cells + ["-"] * 6 + [why]
    mem = res.get("peak_bytes")
    return cells + [
        f"{res['cpu_s']:.2f}", f"{res['cpu_s'] / pixels * 1e6:.1f}", f"{res['wall_s']:.2f}",
        fmt(None if mem is None else mem / 2**20, ".0f"), fmt(None if mem is None else mem / pixels / 1024, ".2f"),
        f"{res['saved_bytes'] / pixels / 1024:.2f}", f"best of {len(res['cpu_runs'])}",
    ]


HEADER = ["model", "px", "GMAC", "MAC/pixel", "GMAC/px norm.", "CPU s (fwd+bwd)", "CPU us/px", "wall s",
          "peak MiB", "peak KiB/px", "saved KiB/px", "note"]


def reading(gmacs: dict, results: dict, breakdown: dict) -> list[str]:
    """Sentences that explain the numbers (all values computed from the measurements)."""
    sizes = sorted(gmacs["hdit"])
    if not breakdown or len(sizes) < 2:
        return []
    lo, hi = sizes[0], sizes[-1]
    inner = {r: lg[f"level{sum(k.startswith('level') for k in lg) - 1}"] for r, (lg, _) in breakdown.items()}
    m = marginal(gmacs["hdit"])
    top = model_data("hdit", lo)["levels"][-1]
    side = lo // 4 // 2 ** (len(model_data("hdit", lo)["levels"]) - 1)
    per_px = {r: g / (r * r) for r, g in gmacs["hdit"].items()}
    fails = (flatness(per_px, lo, hi) or 1.0) > 1 + GMAC_FLAT_TOL
    flat_m = len(m) >= 2 and (flatness(m, min(m), max(m)) or math.inf) <= 1 + GMAC_FLAT_TOL
    out = [
        f"- The HDiT's innermost level (global attention, {top['depth']} layers of width {top['width']}) always "
        f"sees {side} x {side} tokens, so it "
        f"costs the same {inner[lo]:.1f} GMAC at every size: {inner[lo] / gmacs['hdit'][lo]:.0%} of the forward at "
        f"{lo} px, {inner[hi] / gmacs['hdit'][hi]:.0%} at {hi} px. Each doubling adds one NA7 level; its GMAC per "
        f"added pixel is " + ", ".join(f"{v * 1e9:,.0f} MAC ({r} px)" for r, v in m.items())
        + ". So GMAC = fixed + marginal x pixels: linear in pixels, but GMAC per pixel falls from "
        f"{gmacs['hdit'][lo] * 1e9 / lo**2:,.0f} MAC at {lo} px towards the marginal value as the fixed part is "
        "spread over more pixels"
        + (f"; a per-pixel test from {lo} px therefore fails" if fails else "")
        + ("; the marginal cost per added pixel is flat." if flat_m else "."),
    ]
    both = [r for r in sizes if r in gmacs.get("dit", {})]
    if both:
        dt = {r: v for r, v in results.get("dit", {}).items() if "cpu_s" in v}
        hd_t = {r: v for r, v in results.get("hdit", {}).items() if "cpu_s" in v}
        timed = [r for r in both if r in dt and r in hd_t]
        out.append(
            "- HDiT vs DiT-B/4, GMAC ratio: " + ", ".join(f"{gmacs['dit'][r] / gmacs['hdit'][r]:.1f}x at {r} px"
                                                         for r in both)
            + (("; measured CPU time ratio: " + ", ".join(f"{dt[r]['cpu_s'] / hd_t[r]['cpu_s']:.1f}x at {r} px"
                                                         for r in timed)) if timed else "") + "."
        )
    hd = {r: v for r, v in results.get("hdit", {}).items() if "cpu_s" in v}
    if len(hd) >= 2:
        tput = {r: gmacs["hdit"][r] / v["cpu_s"] for r, v in sorted(hd.items())}
        shares = {r: lt.get(f"level{sum(k.startswith('level') for k in lg) - 1}", 0) / lt["total"]
                  for r, (lg, lt) in breakdown.items() if lt and lt.get("total")}
        out.append(
            "- Measured time follows GMACs: forward GMAC per CPU second of forward + backward is "
            + ", ".join(f"{v:.1f} at {r} px" for r, v in tput.items())
            + "; the global level takes " + ", ".join(f"{v:.0%} ({r} px)" for r, v in sorted(shares.items()))
            + " of a forward's CPU time. Time per pixel therefore falls with GMAC per pixel; the marginal time "
            "per added pixel (the [diagnostic] lines) is the measure of linear scaling."
        )
        mem = {r: v["peak_bytes"] for r, v in sorted(hd.items()) if v.get("peak_bytes")}
        if len(mem) >= 2:
            mm = marginal({r: float(v) for r, v in mem.items()})
            out.append(
                "- Working memory: " + ", ".join(f"{v / 2**20:,.0f} MiB at {r} px" for r, v in mem.items())
                + "; per added pixel " + ", ".join(f"{v / 1024:.1f} KiB ({r} px)" for r, v in mm.items())
                + ". The 128 px model's memory includes the fixed activations of the 11 global layers too."
            )
    return out


def write_markdown(path: Path, gmacs, results, skips, checks, command: str, args, breakdown) -> None:
    """Write the results table, method, checks and per-level breakdown to ``path``."""
    rows = []
    for name in MODELS:
        sizes = sorted(gmacs[name])
        g0 = gmacs[name][sizes[0]] / sizes[0] ** 2
        rows += [_row(name, r, gmacs[name][r], g0, results[name].get(r), skips[name].get(r)) for r in sizes]
    lines = [
        "# Scaling: HDiT vs pixel-space DiT-B/4",
        "",
        f"Made by `{command}` on {machine_description()}; {args.threads} thread(s), batch 1, float32, "
        "default attention backends (CPU: torch neighborhood kernel, SDPA global attention).",
        "",
        "HDiT ladder: `hdit_imagenet128` (levels NA7 384 x 2, global 768 x 11) plus one outer NA7 level of "
        "width 384 and depth 2 (+2 in the decoder) per doubling, grown by `hourglass.models.grow` "
        "(the helper behind `hourglass flops --grow`). DiT-B/4: `dit_b_4_pixel` (DiT-B/4 in pixel space) with `input_size` set.",
        "",
        markdown_table(HEADER, rows),
        "",
        "Columns: GMAC = multiply-accumulates of one forward (the paper's \"GFLOPs\"); GMAC/px norm. = GMAC per "
        "pixel divided by that at 128 px. Time: best of the timed forward + backward runs after one warm-up, "
        "process CPU time (all threads) and, for reference, wall time. Memory (`peak`): peak resident set during "
        "one forward + backward above the resident set just before it (VmHWM reset via /proc/self/clear_refs "
        "after malloc_trim; weights and gradient buffers allocated beforehand, so not counted), each size in a "
        "fresh process. `saved` = bytes autograd keeps for the backward (unique storages via saved_tensors_hooks).",
        "",
        "## Checks",
        "",
    ]
    lines += [f"- **{'PASS' if ok else 'FAIL' if ok is not None else 'N/A'}** {label}: {detail}"
              for label, ok, detail in checks]
    if breakdown:
        lines += ["", "## Reading the results", ""] + reading(gmacs, results, breakdown)
        lines += ["", "## Where the HDiT cost goes (per level, forward)", "",
                  "GMAC share and share of one no-grad forward's CPU time spent in each level's layers "
                  "(level 0 = outermost; the last level is the global one, always 16 x 16 tokens).", ""]
        head = ["px", "level", "tokens", "GMAC", "GMAC share", "fwd CPU share"]
        brows = []
        for r, (lg, lt) in sorted(breakdown.items()):
            total_g = sum(lg.values())
            n_levels = sum(1 for k in lg if k.startswith("level"))
            for i in range(n_levels):
                key = f"level{i}"
                side = r // 4 // 2**i
                share_t = lt.get(key, 0.0) / lt["total"] if lt and lt.get("total") else None
                brows.append([str(r), f"{i} ({'global' if i == n_levels - 1 else 'NA7'})", f"{side}x{side}",
                              f"{lg[key]:.1f}", f"{lg[key] / total_g:.0%}", fmt(share_t, ".0%")])
        lines += [markdown_table(head, brows)]
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, gmacs, results) -> None:
    """Log-log plot of GMAC, CPU time and peak memory against pixels for both models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for name, style in (("hdit", "o-"), ("dit", "s--")):
        sizes = sorted(gmacs[name])
        px = [r * r for r in sizes]
        axes[0].plot(px, [gmacs[name][r] for r in sizes], style, label=MODELS[name])
        for ax, key, scale in ((axes[1], "cpu_s", 1.0), (axes[2], "peak_bytes", 2**-30)):
            pts = [(r * r, results[name][r][key] * scale) for r in sizes
                   if r in results[name] and results[name][r].get(key)]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=MODELS[name])
    ref = sorted(gmacs["hdit"])
    lin = [gmacs["hdit"][ref[-1]] * (r / ref[-1]) ** 2 for r in ref]
    axes[0].plot([r * r for r in ref], lin, ":", color="gray", label="linear in pixels")
    titles = ("GMAC per forward", "CPU s per forward+backward", "peak working memory (GiB)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([r * r for r in ref], [f"{r}^2" for r in ref])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("pixels (image side^2)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", color="gray")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure_all(args: argparse.Namespace, sizes: list[int], gmacs: dict) -> tuple[dict, dict]:
    """Measure every model and size in worker processes, skipping what the estimates rule out.

    Returns:
        ``(results, skips)``: ``results[model][size]`` is a worker's result (or ``{"error"}``),
        ``skips[model][size]`` the reason a size was not run.
    """
    results: dict[str, dict[int, dict]] = {n: {} for n in MODELS}
    skips: dict[str, dict[int, str]] = {n: {} for n in MODELS}
    limit = args.memory_limit_gb * 2**30
    for name in MODELS:
        if args.gmacs_only or name not in args.models:
            continue
        mem_hist: list[tuple[int, float]] = []
        for r in sizes:
            est_mem = _estimate(mem_hist, r)
            done = [(q, results[name][q]) for q in sorted(results[name]) if "cpu_s" in results[name][q]]
            est_run, repeats = None, args.repeats
            if done:
                q, res = done[-1]
                est_run = res["cpu_s"] / gmacs[name][q] * gmacs[name][r]
                # warm-up + timed runs; fewer timed runs (at least one) where the budget is tight
                repeats = max(1, min(args.repeats, int(args.time_budget // est_run) - 1))
            if est_mem is not None and est_mem > limit:
                skips[name][r] = f"skipped: estimated memory {est_mem / 2**30:.0f} GiB > {args.memory_limit_gb:g} GiB"
            elif est_run is not None and 2 * est_run > args.time_budget:
                skips[name][r] = (f"skipped: estimated {2 * est_run / 60:.0f} CPU min for 2 runs > budget "
                                  f"{args.time_budget / 60:.0f} min")
            if r in skips[name]:
                print(f"{name} {r}px: {skips[name][r]}", flush=True)
                continue
            print(f"{name} {r}px: measuring ...", flush=True)
            res = run_worker(name, r, threads=args.threads, repeats=repeats, memory_limit=limit + 3 * 2**30,
                             timeout=max(4 * args.time_budget, 600))
            results[name][r] = res
            if "error" in res:
                print(f"  {res['error']}", flush=True)
                continue
            print(f"  CPU {res['cpu_s']:.2f} s (runs {', '.join(f'{c:.2f}' for c in res['cpu_runs'])}), "
                  f"wall {res['wall_s']:.2f} s, peak {fmt((res['peak_bytes'] or 0) / 2**20, '.0f')} MiB, "
                  f"saved {res['saved_bytes'] / 2**20:.0f} MiB", flush=True)
            if res.get("peak_bytes"):
                mem_hist.append((r, float(res["peak_bytes"])))
    return results, skips


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, write ``scaling.md`` and ``scaling.png``, print the checks."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024], help="image sides (px)")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per size after the warm-up")
    p.add_argument("--memory-limit-gb", type=float, default=16.0, help="skip / kill above this working memory")
    p.add_argument("--time-budget", type=float, default=1500.0,
                   help="skip a size whose estimated CPU seconds (all its runs) exceed this")
    p.add_argument("--gmacs-only", action="store_true", help="count GMACs, measure nothing")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks", help="folder of scaling.md/.png")
    p.add_argument("--no-plot", action="store_true", help="do not write scaling.png")
    p.add_argument("--save-raw", type=Path, metavar="JSON", help="also write every worker's raw result here")
    p.add_argument("--load-raw", type=Path, metavar="JSON",
                   help="measure nothing: re-render scaling.md/.png from a file written by --save-raw")
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        p.error("--threads and --repeats must be at least 1")
    if args.worker:
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args.repeats)))
        return 0
    sizes = sorted(set(args.sizes))
    command = ("python3 benchmarks/scaling.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    if args.load_raw:
        raw = json.loads(args.load_raw.read_text())
        sizes = sorted({int(r) for table in raw["gmacs"].values() for r in table})
        gmacs, results, skips = ({n: {int(r): v for r, v in raw[key].get(n, {}).items()} for n in MODELS}
                                 for key in ("gmacs", "results", "skips"))
        args.threads, args.models = raw.get("threads", args.threads), raw.get("models", args.models)
        command = f"{raw.get('command', '(unknown command)')}` on {raw.get('machine', '?')}, re-rendered by `{command}"
    else:
        try:
            gmacs = gmac_table(sizes)
        except ValueError as exc:
            p.error(str(exc))
        results, skips = measure_all(args, sizes, gmacs)
    if args.save_raw:
        raw = {"command": command, "machine": machine_description(), "threads": args.threads,
               "models": args.models, "gmacs": gmacs, "results": results, "skips": skips}
        args.save_raw.parent.mkdir(parents=True, exist_ok=True)
        args.save_raw.write_text(json.dumps(raw, indent=1, default=str))
    checks = run_checks(gmacs, results)
    breakdown = {}
    if "hdit" in args.models:
        breakdown = {r: (level_gmacs(r), results["hdit"].get(r, {}).get("level_forward_cpu_s", {})) for r in sizes}
    args.out.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out / "scaling.md", gmacs, results, skips, checks, command, args, breakdown)
    if not args.no_plot:
        write_plot(args.out / "scaling.png", gmacs, results)
    print()
    print((args.out / "scaling.md").read_text())
    for label, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL' if ok is not None else 'N/A '} {label}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
