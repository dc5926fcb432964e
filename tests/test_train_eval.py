"""``[eval]`` during training: metrics rows, the best checkpoint, untouched training state, validation."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from hourglass.evaluation import METRIC_NAMES, MetricsResult
from hourglass.recipe import EVAL_METRICS, RecipeError, loads_recipe, recipe_from_data, toml
from hourglass.train import train
from hourglass.train.checkpoint import list_checkpoints, read_checkpoint, resolve_checkpoint
from hourglass.train.evaluate import best_checkpoint_path
from hourglass.train.metrics import read_metrics
from tests._tiny import tiny_recipe_text

EVAL = ['eval.every=2', 'eval.n=4', 'eval.extractor="random-projection"', 'eval.best="fid"', 'eval.n_reference=16',
        'eval.steps=2']


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # reference statistics land here


def _recipe(*overrides: str):
    return loads_recipe(tiny_recipe_text(checkpoint_every=1, sample_steps=1, sample_n=1), list(overrides))


def _all_tensors(path):
    data = read_checkpoint(path)
    out = {f"{part}.{k}": v for part in ("model", "ema", "rng", "data") for k, v in getattr(data, part).items()}
    for pid, entries in data.optimizer["state"].items():
        out.update({f"opt.{pid}.{k}": v for k, v in entries.items() if isinstance(v, torch.Tensor)})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny recipe trained 4 steps with [eval] (every 2 steps, n = 4) and without."""
    root = tmp_path_factory.mktemp("eval_runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
    try:
        with_eval = train(_recipe(*EVAL), root / "eval", report=lambda m: None, progress=False)
        without = train(_recipe(), root / "plain", report=lambda m: None, progress=False)
    finally:
        mp.undo()
    return with_eval, without


def test_eval_metrics_are_hourglass_eval_metrics_and_their_values_are_result_fields():
    assert tuple(EVAL_METRICS) == METRIC_NAMES
    fields = set(MetricsResult.__dataclass_fields__)
    for values in EVAL_METRICS.values():
        assert all(v in fields or v == "is" for v in values)


def test_pr_and_is_are_logged_and_best_precision_keeps_the_highest(tmp_path):
    out = train(_recipe(*EVAL[:3], 'eval.metrics=["is", "pr"]', 'eval.best="precision"', "eval.pr_k=1",
                        "eval.is_splits=2", "eval.n_reference=16", "eval.steps=2", "train.steps=4"),
                tmp_path / "run", report=lambda m: None, progress=False)
    rows = [r for r in read_metrics(out.run_dir / "metrics.jsonl") if "precision" in r]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(set(r) == {"step", "is", "precision", "recall"} and r["is"] >= 1.0 for r in rows)
    kept = read_checkpoint(best_checkpoint_path(out.run_dir), tensors=False).extra["eval_best"]
    assert kept["metric"] == "precision" and kept["value"] == max(r["precision"] for r in rows)


@pytest.mark.parametrize(("metric", "values", "kept"), [
    ("fid", [5.0, 3.0, 4.0], [5.0, 3.0, 3.0]),
    ("kid", [0.2, 0.3, 0.1], [0.2, 0.2, 0.1]),
    ("precision", [0.5, 0.7, 0.6], [0.5, 0.7, 0.7]),
    ("recall", [0.5, 0.4, 0.9], [0.5, 0.5, 0.9]),
    ("is", [2.0, 1.5, 2.5], [2.0, 2.0, 2.5]),
])
def test_best_is_the_lowest_distance_and_the_highest_score(metric, values, kept, tmp_path):
    from types import SimpleNamespace

    from hourglass.train.evaluate import Evaluator

    saved = []
    trainer = SimpleNamespace(step=0, run_dir=tmp_path, say=lambda m: None,
                              save_checkpoint=lambda path: saved.append(trainer.step) or path)
    evaluator = Evaluator.__new__(Evaluator)
    evaluator.trainer, evaluator.spec, evaluator.best = trainer, SimpleNamespace(best=metric), None
    for step, value in enumerate(values, 1):
        trainer.step = step
        evaluator._keep_best({metric: value})
        assert evaluator.best["value"] == kept[step - 1]
    assert saved == sorted({values.index(k) + 1 for k in kept})


def test_eval_rows_are_logged_at_every_eval_step_and_the_end(runs):
    with_eval, _ = runs
    rows = [r for r in read_metrics(with_eval.run_dir / "metrics.jsonl") if "fid" in r]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert set(r) == {"step", "fid", "kid"} and r["fid"] > 0
    assert [r["step"] for r in read_metrics(with_eval.run_dir / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]


def test_eval_does_not_change_weights_rng_or_data_state(runs):
    with_eval, without = runs
    a, b = _all_tensors(with_eval.checkpoint), _all_tensors(without.checkpoint)
    assert sorted(a) == sorted(b)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_best_checkpoint_is_the_lowest_fid_and_never_the_newest(runs):
    with_eval, _ = runs
    rows = [r for r in read_metrics(with_eval.run_dir / "metrics.jsonl") if "fid" in r]
    lowest = min(rows, key=lambda r: r["fid"])
    assert rows[0]["fid"] != rows[1]["fid"]  # the test tells min from max
    best = read_checkpoint(best_checkpoint_path(with_eval.run_dir))
    assert best.extra["eval_best"] == {"metric": "fid", "value": lowest["fid"], "step": lowest["step"]}
    assert best.step == lowest["step"]
    final = read_checkpoint(with_eval.checkpoint)
    assert final.extra["eval_best"] == best.extra["eval_best"]  # restored from here on resume
    # the run's newest checkpoint is a step file; the best is used only when passed itself
    assert [p.name for _, p in list_checkpoints(with_eval.run_dir)][-1] == "step_00000004.safetensors"
    assert resolve_checkpoint(with_eval.run_dir, report=None).path.name == "step_00000004.safetensors"
    assert resolve_checkpoint(best_checkpoint_path(with_eval.run_dir)).step == lowest["step"]
    assert not list((with_eval.run_dir / "checkpoints").glob(".best*"))


def test_same_images_every_time_for_the_same_weights(runs, tmp_path):
    with_eval, _ = runs
    from hourglass.train import Trainer

    recipe = _recipe(*EVAL)
    trainer = Trainer(recipe, with_eval.run_dir, report=lambda m: None, progress=False)  # resumes at step 4
    try:
        state = torch.get_rng_state()
        first, second = trainer.evaluator.evaluate(), trainer.evaluator.evaluate()
        assert torch.equal(torch.get_rng_state(), state)
        assert first == second
        rows = [r for r in read_metrics(with_eval.run_dir / "metrics.jsonl") if r.get("step") == 4 and "fid" in r]
        assert first["fid"] == rows[0]["fid"]
        assert trainer.evaluator.best["step"] == read_checkpoint(best_checkpoint_path(with_eval.run_dir)).step
    finally:
        trainer.close()


def test_a_fresh_run_drops_another_runs_best_file(tmp_path):
    best = best_checkpoint_path(tmp_path / "run")
    best.parent.mkdir(parents=True)
    best.write_bytes(b"stale")
    train(_recipe(*EVAL, "train.steps=1", "eval.best=\"kid\""), tmp_path / "run", report=lambda m: None,
          progress=False)
    assert read_checkpoint(best).extra["eval_best"]["metric"] == "kid"


def test_eval_without_best_writes_no_best_file(tmp_path):
    out = train(_recipe(*EVAL[:-3], "eval.metrics=[\"kid\"]", "train.steps=2"), tmp_path / "run",
                report=lambda m: None, progress=False)
    assert not best_checkpoint_path(out.run_dir).exists()
    assert [set(r) for r in read_metrics(out.run_dir / "metrics.jsonl") if "kid" in r] == [{"step", "kid"}]


def test_a_folder_reference_is_read(tmp_path):
    from PIL import Image

    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(folder / f"{i}.png")
    out = train(_recipe(*EVAL[:-2], f"eval.reference={json.dumps(str(folder))}", "train.steps=2"), tmp_path / "run",
                report=lambda m: None, progress=False)
    assert [r["step"] for r in read_metrics(out.run_dir / "metrics.jsonl") if "fid" in r] == [2]


def test_missing_dinov2_weights_fail_before_training_and_name_the_file(tmp_path, monkeypatch):
    from hourglass.train.trainer import TrainConfigError

    monkeypatch.delenv("HOURGLASS_DINOV2", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(TrainConfigError, match="eval: .*vit_large_patch14_dinov2"):
        train(_recipe(*EVAL[:3], 'eval.metrics=["fd_dinov2"]'), tmp_path / "run", report=lambda m: None,
              progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_missing_reference_folder_fails_before_training(tmp_path):
    from hourglass.train.trainer import TrainConfigError

    with pytest.raises(TrainConfigError, match="eval"):
        train(_recipe(*EVAL, f"eval.reference={json.dumps(str(tmp_path / 'nope'))}"), tmp_path / "run",
              report=lambda m: None, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


BASE = toml.loads(tiny_recipe_text())


@pytest.mark.parametrize(("table", "path", "needle"), [
    ({"every": 0}, "eval.every", "greater than or equal to 1"),
    ({"n": 1}, "eval.n", "FID needs at least 2"),
    ({"metrics": ["fid", "inception"]}, "eval.metrics", "unknown metric"),
    ({"metrics": []}, "eval.metrics", ""),
    ({"metrics": ["kid"], "best": "fid"}, "eval.best", "not among the logged values"),
    ({"metrics": ["pr"], "best": "pr"}, "eval.best", "'precision', 'recall'"),
    ({"pr_k": 0}, "eval.pr_k", ""),
    ({"metrics": ["is"], "n": 4}, "eval.n", "Inception Score splits"),
    ({"metrics": ["pr"], "n": 3, "pr_k": 3}, "eval.n", "k=3"),
    ({"extractor": "inception-v9"}, "eval.extractor", "random-projection"),
    ({"reference": ""}, "eval.reference", "folder"),
    ({"reference": {"type": "nope"}}, "eval.reference", "unknown dataset"),
    ({"steps": 0}, "eval.steps", ""),
    ({"batch_size": 0}, "eval.batch_size", ""),
    ({"n_reference": 1}, "eval.n_reference", ""),
    ({"every": "2"}, "eval.every", ""),
])
def test_bad_eval_sections_are_refused_at_their_path(table, path, needle):
    data = copy.deepcopy(BASE)
    data["eval"] = table
    with pytest.raises(RecipeError) as info:
        recipe_from_data(data)
    assert [p.path for p in info.value.problems] == [path], info.value
    assert needle in str(info.value)


def test_eval_guidance_needs_classes_and_latent_data_needs_a_reference():
    data = copy.deepcopy(BASE)
    data["model"]["num_classes"] = 0
    data["eval"] = {"cfg_scale": 2.0}
    with pytest.raises(RecipeError, match="eval.cfg_scale"):
        recipe_from_data(data)
    data["eval"] = {}
    assert recipe_from_data(data).eval.every == 5000
    assert recipe_from_data(copy.deepcopy(BASE)).eval is None
