"""Benchmark every registered attention kind on every backend of its kernel: time, GFLOP/s, memory.

Usage::

    python3 benchmarks/attention.py                      # CPU, grids 16..128, ~1-2 minutes
    python3 benchmarks/attention.py --max-grid 256 --all # also 256^2 tokens and global above 64^2
    python3 benchmarks/attention.py --device cuda
    python3 benchmarks/attention.py --clock cpu          # one thread, CPU time: for shared machines

Every registered kind that mixes tokens is measured (plugin kinds included), built from its default
spec with ``d_head = --dim`` and dot-product scaling; ``--option KIND.FIELD=VALUE`` changes its spec.
A grid the kind's own grid rule refuses is skipped. Useful FLOPs are twice the multiply-accumulates
the kind declares (``attention_macs``: ``q k^T`` and ``a v``): ``4 * B * heads * N * keys_per_query * D``
forward, three times that for forward + backward, with ``keys_per_query`` = ``k^2`` (neighborhood),
``s^2`` (shifted window) or ``N`` (global). A kernel that computes masked-out scores gets no credit
for them.

Memory: on CUDA the peak allocated during forward + backward (above the inputs). On CPU there
is no allocator statistic, so the column is the bytes autograd keeps for the backward pass
(unique storages saved via ``saved_tensors_hooks``, inputs included) plus the output: it shows
whether a backend stores O(N) or O(N^2) state. Times are the best of several runs. When other
processes share the CPUs, multi-threaded wall times of kernels made of many small ops are
inflated by OpenMP barrier stalls; ``--clock cpu`` (one thread, its CPU time) is then the
stable measure of a kernel's efficiency.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_description  # noqa: E402

from hourglass.backends import BACKEND, available_backends  # noqa: E402
from hourglass.recipe.toml import parse_value  # noqa: E402
from hourglass.registry import ATTENTION  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def best_time(fn, device: torch.device, budget_s: float, clock: str, min_runs: int = 3, max_runs: int = 50) -> float:
    """Best time of ``fn`` in seconds over runs that fit ``budget_s`` (after one warm-up).

    ``clock="cpu"`` counts the CPU time of the calling thread only (use with one thread): on a
    machine shared with other processes it excludes the time the thread was not running.
    """
    now = CLOCKS[clock]
    fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t = now()
        fn()
        _sync(device)
        times.append(now() - t)
    return min(times)


def saved_bytes(fn) -> int:
    """Bytes of the unique storages autograd saves during ``fn()``, plus its output."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    s = out.untyped_storage()
    storages[s.data_ptr()] = s.nbytes()
    return sum(storages.values())


def cuda_peak_bytes(fn, device: torch.device) -> int:
    """Peak CUDA memory allocated during ``fn()`` above what was allocated before."""
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def measure(call, flops_fwd: float, shape, device, dtype, train: bool, budget_s: float, clock: str) -> dict:
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=train) for _ in range(3))

    def fwd():
        with torch.no_grad():
            return call(q, k, v)

    def fwd_bwd():
        out = call(q, k, v)
        out.backward(torch.ones_like(out))
        for t in (q, k, v):
            t.grad = None
        return out

    row = {"fwd_ms": best_time(fwd, device, budget_s, clock) * 1e3}
    row["fwd_gflops"] = flops_fwd / row["fwd_ms"] / 1e6
    if train:
        row["fb_ms"] = best_time(fwd_bwd, device, budget_s, clock) * 1e3
        row["fb_gflops"] = 3 * flops_fwd / row["fb_ms"] / 1e6
        if device.type == "cuda":
            row["mem_mb"] = cuda_peak_bytes(fwd_bwd, device) / 2**20
        else:
            row["mem_mb"] = saved_bytes(lambda: call(q, k, v)) / 2**20
    return row


def build_kinds(only: str | None, options: list[str], d_head: int, width: int) -> dict[str, tuple]:
    """``{kind: (module, label)}`` for every registered kind that mixes tokens (or those in ``only``).

    Each module is built from the kind's default spec with ``d_head``, dot-product scaling and the
    ``--option`` overrides, at ``layer_index`` 1 (so shifted windows are shifted).
    """
    overrides: dict[str, dict] = {}
    for item in options:
        key, _, value = item.partition("=")
        kind, _, field = key.partition(".")
        if not field or not value:
            raise SystemExit(f"--option {item!r}: write KIND.FIELD=VALUE, e.g. neighborhood.kernel_size=9")
        overrides.setdefault(kind, {})[field] = parse_value(value)
    names = only.split(",") if only else [n for n in ATTENTION.names() if ATTENTION.get(n).mixes_tokens()]
    kinds = {}
    for name in names:
        cls = ATTENTION.get(name)
        fields = cls.Spec.model_fields
        spec = ATTENTION.validate({"type": name, **({"d_head": d_head} if "d_head" in fields else {}),
                                   **({"qk_norm": "none"} if "qk_norm" in fields else {}), **overrides.get(name, {})})
        kinds[name] = (ATTENTION.build(spec, width=width, layer_index=1), cls.label(spec))
    return kinds


def _attend(module, backend: str):
    """``(q, k, v) -> out`` of the kind's token mixing on ``backend``, scaled by ``1/sqrt(D)``."""
    module.backend = backend
    return lambda q, k, v: module.attend(q, k, v, q.shape[-1] ** -0.5)


def _fmt(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--grids", default="16,32,64,128", help="token grid sides (square grids)")
    p.add_argument("--max-grid", type=int, help="also run the doublings of the largest grid up to this side (256)")
    p.add_argument("--all", action="store_true", help="run kinds that connect all tokens above 64x64, and on CPU "
                   "the backends auto never picks there (eager flex/natten) above 32x32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=64, help="head dim D")
    p.add_argument("--option", action="append", default=[], metavar="KIND.FIELD=VALUE",
                   help="set a spec field of one kind, e.g. neighborhood.kernel_size=9 (default: each kind's defaults)")
    p.add_argument("--kinds", help="comma-separated kinds to measure (default: every registered kind that mixes tokens)")
    p.add_argument("--budget", type=float, default=0.4, help="seconds of repeats per measurement")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for the run (default: torch's choice)")
    p.add_argument(
        "--clock",
        default="wall",
        choices=sorted(CLOCKS),
        help="wall: elapsed time; cpu: CPU time of the calling thread (CPU device, forces --threads 1; "
        "robust when other processes share the machine)",
    )
    p.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if args.clock == "cpu":
        if device.type != "cpu":
            p.error("--clock cpu measures CPU time; use it with --device cpu")
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available")
    dtype = getattr(torch, args.dtype)
    grids = [int(g) for g in args.grids.split(",")]
    g = max(grids) * 2
    while args.max_grid and g <= args.max_grid:
        grids.append(g)
        g *= 2
    grids = sorted(set(grids))
    b, h, d = args.batch, args.heads, args.dim
    kinds = build_kinds(args.kinds, args.option, d, h * d)
    results: dict[tuple[str, str, int], dict] = {}
    lines = [
        f"# attention backends on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}"
        f" ({torch.get_num_threads()} threads, {args.clock} clock), torch {torch.__version__}, {args.dtype}, "
        f"B={b} heads={h} D={d}; " + "; ".join(f"{name}: {label}" for name, (_, label) in kinds.items()),
        "",
        f"Made by `python3 benchmarks/attention.py {' '.join(sys.argv[1:] if argv is None else argv)}` on "
        f"{machine_description()}.",
        "",
        "| kind | kernel backend | grid | tokens | fwd ms | fwd GFLOP/s | fwd+bwd ms | fwd+bwd GFLOP/s | "
        + ("peak MB" if device.type == "cuda" else "saved+out MB")
        + " |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for kind, (module, _) in kinds.items():
        cls = type(module)
        usable_fwd = available_backends(cls.kernel, device, dtype, requires_grad=False)
        usable_train = available_backends(cls.kernel, device, dtype, requires_grad=True)
        for name, why in usable_fwd.items():
            if why is not None:
                print(f"| {kind} | {name} | - | - | unavailable: {why} |||||", flush=True)
                continue
            train = usable_train[name] is None
            never_auto_here = BACKEND.get(f"{cls.kernel}:{name}").rank(device.type) is None
            for n in grids:
                if cls.grid_problems(module.spec, (n, n), (module.layer_index,)):
                    continue  # the kind's own grid rule refuses this grid
                if cls.connects_all_tokens and n > 64 and not args.all:
                    continue  # quadratic: seconds per call
                if device.type == "cpu" and never_auto_here and n > 32 and not args.all:
                    continue  # e.g. eager CPU flex / natten materialise N x N scores
                tokens = n * n
                flops = 2 * module.attention_macs(b, n, n)
                try:
                    row = measure(_attend(module, name), flops, (b, n, n, h, d), device, dtype, train, args.budget,
                                  args.clock)
                except (RuntimeError, torch.OutOfMemoryError) as exc:  # e.g. out of memory: report, go on
                    line = (
                        f"| {kind} | {name} | {n}x{n} | {tokens} | failed: {type(exc).__name__}: {str(exc)[:120]} |||||"
                    )
                    lines.append(line)
                    print(line, flush=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                results[(kind, name, n)] = row
                line = (
                    f"| {kind} | {name} | {n}x{n} | {tokens} | {_fmt(row['fwd_ms'], '.2f')} | "
                    f"{_fmt(row['fwd_gflops'], '.1f')} | {_fmt(row.get('fb_ms'), '.2f')} | "
                    f"{_fmt(row.get('fb_gflops'), '.1f')} | {_fmt(row.get('mem_mb'), '.1f')} |"
                )
                lines.append(line)
                print(line, flush=True)

    summary = [
        "",
        "## neighborhood (`torch` backend) vs global (`sdpa` backend) at the same grid",
        "",
        "| grid | NA torch / SDPA GFLOP/s fwd | fwd+bwd | NA torch ms fwd+bwd | SDPA ms fwd+bwd | NA faster |",
        "|---|---|---|---|---|---|",
    ]
    faster = {}
    for n in grids:
        na, sd = results.get(("neighborhood", "torch", n)), results.get(("global", "sdpa", n))
        if na is None or sd is None:
            continue
        key = "fb" if "fb_ms" in na and "fb_ms" in sd else "fwd"
        faster[n] = na[f"{key}_ms"] < sd[f"{key}_ms"]
        summary.append(
            f"| {n}x{n} | {na['fwd_gflops'] / sd['fwd_gflops']:.3f} | "
            f"{_fmt(na.get('fb_gflops', float('nan')) / sd.get('fb_gflops', float('nan')), '.3f')} | "
            f"{_fmt(na.get('fb_ms'), '.2f')} | {_fmt(sd.get('fb_ms'), '.2f')} | {'yes' if faster[n] else 'no'} |"
        )
    crossover = next((n for n in sorted(faster) if all(faster[m] for m in faster if m >= n)), None)
    summary += [
        "",
        f"crossover: neighborhood `torch` is faster than global `sdpa` from "
        f"{f'{crossover}x{crossover}' if crossover else '(no measured grid)'} up "
        f"(measured grids: {', '.join(f'{n}x{n}' for n in sorted(faster))})",
    ]
    if device.type == "cpu":
        one = b * max(grids) ** 2 * h * d * torch.finfo(dtype).bits // 8 / 2**20
        summary += [
            "",
            f"Memory on CPU (`saved+out MB`): what autograd keeps for the backward pass plus the output. At "
            f"{max(grids)}x{max(grids)} tokens each of q, k, v and the output is {one:.1f} MB, so a backend whose "
            f"column reads about {4 * one:.0f} MB there keeps nothing beyond its inputs and output (no N x N state).",
        ]
    print("\n".join(summary), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines + summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
