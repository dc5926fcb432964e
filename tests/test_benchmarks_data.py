"""A smoke run of benchmarks/data.py: every kind it times is read, and the worker count follows from the rate."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load():
    spec = importlib.util.spec_from_file_location("bench_data", BENCH / "data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_data_benchmark_writes_one_row_per_kind_with_the_workers_a_gpu_needs(tmp_path):
    pytest.importorskip("webdataset")
    pytest.importorskip("datasets")
    bench = _load()
    out = tmp_path / "data.md"
    argv = [
        "--sizes",
        "256",
        "--images",
        "8",
        "--batch-size",
        "4",
        "--repeats",
        "1",
        "--samples-per-shard",
        "4",
        "--out",
        str(out),
    ]
    assert bench.main(argv) == 0
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| 256 ")]
    assert [r[1] for r in rows] == list(bench.KINDS)
    for row in rows:
        per_worker = float(row[4])
        need = int(re.match(r"(\d+) for hdit_imagenet256 \(300 img/s\)", row[5]).group(1))
        assert per_worker > 0 and need == math.ceil(300 / per_worker)
    a, b = bench.photo(64, 1), bench.photo(64, 2)
    assert a == bench.photo(64, 1) and a != b and a[:2] == b"\xff\xd8"  # deterministic JPEGs
