"""Smoke runs of benchmarks/scaling.py and benchmarks/sampling.py with tiny settings (seconds)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


scaling = _load("scaling")
sampling = _load("sampling")
common = sys.modules["_common"]


def test_ladder_adds_one_na7_level_per_doubling():
    for r, n_levels in ((128, 2), (256, 3), (512, 4), (1024, 5)):
        levels = common.hdit_ladder_data(r)["levels"]
        assert len(levels) == n_levels
        assert [lv["width"] for lv in levels] == [384] * (n_levels - 1) + [768]
        assert [lv["depth"] for lv in levels] == [2] * (n_levels - 1) + [11]
        for lv in levels[:-1]:
            assert lv["attention"]["type"] == "neighborhood" and lv["attention"]["kernel_size"] == 7
        assert levels[-1]["attention"]["type"] == "global"
    with pytest.raises(ValueError, match="power of two|128"):
        common.hdit_ladder_data(384)
    with pytest.raises(ValueError, match="starts at 128"):
        common.hdit_ladder_data(64)


def test_estimate_flatness_marginal():
    assert scaling._estimate([], 256) is None
    assert scaling._estimate([(128, 10.0)], 256) == pytest.approx(40.0)  # linear by default
    # quadratic in pixels between the last two points -> x16 per doubling
    assert scaling._estimate([(128, 1.0), (256, 16.0)], 512) == pytest.approx(256.0)
    # growth below linear is extrapolated linearly (never under-estimated)
    assert scaling._estimate([(128, 4.0), (256, 8.0)], 512) == pytest.approx(32.0)
    assert scaling.flatness({128: 1.0, 256: 1.3}, 128, 256) == pytest.approx(1.3)
    assert scaling.flatness({128: 1.0, 256: None}, 128, 256) is None
    m = scaling.marginal({128: 10.0, 256: 10.0 + 3 * 128**2, 512: 10.0 + 15 * 128**2})
    assert m[256] == pytest.approx(1.0) and m[512] == pytest.approx(1.0)


def test_checks_pass_and_fail_on_synthetic_numbers():
    sizes = [128, 256, 512]
    gmacs = {"hdit": {128: 31.4, 256: 64.7, 512: 198.1}, "dit": {128: 106.4, 256: 657.5, 512: 6340.6}}
    linear = {r: {"cpu_s": r * r * 1e-4, "wall_s": r * r * 2e-4, "peak_bytes": r * r * 1000,
                  "saved_bytes": r * r * 900} for r in sizes}
    checks = {label.split(" (")[0]: ok for label, ok, _ in scaling.run_checks(gmacs, {"hdit": linear})}
    assert checks["hdit GMAC reproduces the paper within 3%"] is True
    assert checks["dit GMAC reproduces the paper within 3%"] is True
    assert checks["HDiT CPU time/pixel flat within 35% from 128 to 512 px"] is True
    assert checks["HDiT memory/pixel flat within 35% from 128 to 512 px"] is True
    quad = {r: {**linear[r], "cpu_s": (r * r) ** 2 * 1e-9} for r in sizes}
    checks = {label.split(" (")[0]: ok for label, ok, _ in scaling.run_checks(gmacs, {"hdit": quad})}
    assert checks["HDiT CPU time/pixel flat within 35% from 128 to 512 px"] is False
    bad = {"hdit": {**gmacs["hdit"], 256: 80.0}, "dit": gmacs["dit"]}
    checks = {label.split(" (")[0]: ok for label, ok, _ in scaling.run_checks(bad, {})}
    assert checks["hdit GMAC reproduces the paper within 3%"] is False


def test_measure_tiny_model_in_process():
    res = scaling.measure("hdit_test", 32, repeats=1)
    assert res["cpu_s"] > 0 and res["wall_s"] > 0 and len(res["cpu_runs"]) == 1
    assert res["saved_bytes"] > 0 and res["params"] > 0
    assert res["peak_bytes"] is None or res["peak_bytes"] >= 0
    assert set(res["level_forward_cpu_s"]) == {"level0", "level1", "total"}


def test_worker_subprocess_and_gmacs_only_report(tmp_path):
    res = scaling.run_worker("hdit_test", 32, threads=1, repeats=1, memory_limit=8 * 2**30, timeout=120)
    assert "error" not in res, res
    assert res["model"] == "hdit_test" and res["resolution"] == 32 and res["worker_peak_rss_bytes"] > 0
    killed = scaling.run_worker("hdit_test", 32, threads=1, repeats=1, memory_limit=1, timeout=120)
    assert "limit" in killed["error"]
    raw = tmp_path / "raw.json"
    assert scaling.main(["--sizes", "128", "--gmacs-only", "--out", str(tmp_path), "--save-raw", str(raw)]) == 0
    text = (tmp_path / "scaling.md").read_text()
    assert "PASS** hdit GMAC reproduces the paper" in text and "| 31.4 |" in text
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    again = tmp_path / "again"
    assert scaling.main(["--load-raw", str(raw), "--out", str(again), "--no-plot"]) == 0
    rendered = (again / "scaling.md").read_text()
    assert "re-rendered by" in rendered and "--save-raw" in rendered
    assert rendered.split("\n")[4:] == text.split("\n")[4:]  # same table and checks


def test_sampling_smoke(tmp_path):
    setup = sampling.build_setup(None, "hdit_test")
    setup["steps"] = 4
    r = sampling.measure_sampler("heun", setup, batch=2, repeats=1)
    assert r["evals"] == 2 * 4 - 1  # the last step (to sigma 0) is an Euler step
    assert r["forward_s"] > 0 and r["null_s"] > 0 and math.isfinite(r["diff_pct"])
    assert r["null_s"] < r["real_s"]
    argv = ["--preset", "hdit_test", "--steps", "3", "--repeats", "1", "--batch", "2",
            "--samplers", "euler", "dpmpp_3m_sde", "--out", str(tmp_path)]
    assert sampling.main(argv) == 0
    text = (tmp_path / "sampling.md").read_text()
    assert "| euler | 2 |" in text and "| dpmpp_3m_sde | 2 |" in text and "## Checks" in text
    with pytest.raises(SystemExit):
        sampling.main(["--preset", "hdit_test", "--samplers", "no_such_sampler", "--out", str(tmp_path)])
