"""Smoke tests of benchmarks/ablation.py and benchmarks/train_throughput.py with tiny settings."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import ablation  # noqa: E402
import train_throughput  # noqa: E402


def _diff(a, b, path=""):
    """Dotted paths where two plain-data trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("global", "neighborhood", {"levels[0].attention"}),
        ("neighborhood", "geglu", {"ffn", "levels[0].d_ff", "levels[1].d_ff"}),
        ("geglu", "rope", {"pos_emb"}),
    ],
)
def test_consecutive_rungs_change_only_what_their_recipes_change(before, after, expected):
    a = ablation.rung_recipe(before, batch_size=4, steps=1).model.model_dump(mode="python")
    b = ablation.rung_recipe(after, batch_size=4, steps=1).model.model_dump(mode="python")
    changed = {p.split(".type")[0] for p in _diff(a, b)}
    assert {c for c in changed if not any(c.startswith(e) for e in expected)} == set()
    assert all(any(c.startswith(e) for c in changed) for e in expected)


def test_hdit_rung_differs_from_rope_only_in_weighting():
    a = ablation.rung_recipe("rope", batch_size=4, steps=1)
    b = ablation.rung_recipe("hdit", batch_size=4, steps=1)
    assert a.model == b.model
    assert (a.diffusion.weighting.type, b.diffusion.weighting.type) == ("edm", "soft_min_snr")


def test_rungs_are_cpu_sized_and_cheaper_hourglass():
    from hourglass.flops import count_gmacs

    dit = ablation.rung_recipe("dit", batch_size=4, steps=1)
    hdit = ablation.rung_recipe("hdit", batch_size=4, steps=1)
    assert dit.model.input_size == 32 and dit.data.dataset.type == "shapes"
    assert count_gmacs(dit.model) > 2 * count_gmacs(hdit.model)  # the paper's 106 vs 31 GMAC, shrunk


def test_unknown_rung_is_rejected():
    with pytest.raises(ValueError, match="unknown rung"):
        ablation.rung_recipe("nope", batch_size=4, steps=1)
    with pytest.raises(SystemExit):
        ablation.main(["--rungs", "nope"])


def test_ablation_script_end_to_end(tmp_path):
    import torch

    threads = torch.get_num_threads()
    try:
        rc = ablation.main([
            "--budget-gmacs", "0.8", "--rungs", "dit,hdit", "--batch-size", "2", "--val", "4", "--samples", "4",
            "--reference", "4", "--sample-steps", "2", "--extractor", "random-projection", "--threads", "1",
            "--out", str(tmp_path),
        ])
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide; leave other tests as they were
    assert rc == 0
    text = (tmp_path / "ablation.md").read_text()
    assert (tmp_path / "ablation.png").stat().st_size > 1000
    rows = [ln for ln in text.splitlines() if ln.startswith("| DiT") or ln.startswith("| + Soft")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        val_loss, fid = float(cells[7]), float(cells[8])
        assert math.isfinite(val_loss) and val_loss > 0 and math.isfinite(fid)
    assert "random-projection" in text and "--budget-gmacs 0.8" in text


def test_throughput_script_writes_its_row(tmp_path):
    out = tmp_path / "tp.md"
    assert train_throughput.main(["--steps", "1", "--warmup", "0", "--batch-size", "2", "--out", str(out)]) == 0
    text = out.read_text()
    rows = [ln for ln in text.splitlines() if "`recipes/quickstart.toml`" in ln]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert float(cells[5]) > 0 and cells[8].endswith("%") and "measured" in cells[7]
    assert "hdit_imagenet256" in text and "hdit_ffhq1024" in text


def test_throughput_rows_are_replaced_by_key(tmp_path):
    out = tmp_path / "tp.md"
    key = "| dev | `r.toml` | bf16 |"
    train_throughput.write_row(out, key, key + " 1 | 1 | 1.0 | 1 | 1 (x) | 1.00% |", "cmd a")
    train_throughput.write_row(out, "| dev | `other.toml` | bf16 |", "| dev | `other.toml` | bf16 | 2 |", "cmd b")
    train_throughput.write_row(out, key, key + " 1 | 1 | 9.0 | 1 | 1 (x) | 9.00% |", "cmd a")
    rows = [ln for ln in out.read_text().splitlines() if ln.startswith("| dev |")]
    assert rows == ["| dev | `other.toml` | bf16 | 2 |", key + " 1 | 1 | 9.0 | 1 | 1 (x) | 9.00% |"]
    assert out.read_text().count("- `cmd a`") == 1


def test_throughput_mfu_peak_sources():
    import torch

    assert train_throughput.device_peak_tflops(torch.device("cpu"), 10.0) == (10.0, "--peak-tflops")
    peak, source = train_throughput.device_peak_tflops(torch.device("cpu"))
    assert peak > 0 and source.startswith("measured")
    with pytest.raises(SystemExit):
        train_throughput.main(["--backend", "natten"])
