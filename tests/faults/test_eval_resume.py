"""kill -9 during a run with ``[eval]`` and resume: bitwise the same as uninterrupted, and as without ``[eval]``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hourglass.train.checkpoint import list_checkpoints, read_checkpoint
from hourglass.train.evaluate import best_checkpoint_path
from hourglass.train.metrics import read_metrics

from .conftest import Zygote, assert_bitwise_equal, checkpoint_tensors

EVAL = ["--set", "eval.every=2", "--set", "eval.n=4", "--set", 'eval.extractor="random-projection"',
        "--set", 'eval.best="fid"', "--set", "eval.n_reference=16", "--set", "eval.steps=2"]


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    """The forking supervisor, its children caching reference statistics in a temporary folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("fid_cache")))
    z = Zygote()
    mp.undo()
    yield z
    z.close()


def _argv(recipe: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", str(recipe), "--run-dir", str(run_dir), "--no-progress", *extra]


def _eval_rows(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "fid" in r]


def test_kill9_with_eval_then_resume_is_bitwise_identical(tmp_path, recipe_file, zygote):
    runs = {}
    for name, extra in (("plain", ()), ("reference", EVAL)):
        runs[name] = tmp_path / name
        out = zygote.run(_argv(recipe_file, runs[name], *extra), runs[name], tmp_path / f"{name}.log")
        assert out["rc"] == 0, (tmp_path / f"{name}.log").read_text()

    run_dir = tmp_path / "killed"
    kills = 0
    # kill right after the 1st new checkpoint of each start (steps 1, 2, 3: before, at and after an evaluation)
    for cycle in range(8):
        log = tmp_path / f"cycle{cycle}.log"
        newest = list_checkpoints(run_dir)[-1][0] if list_checkpoints(run_dir) else None
        kill = {"after_checkpoints": 1, "delay": 0.0} if kills < 3 else None
        out = zygote.run(_argv(recipe_file, run_dir, *EVAL), run_dir, log, kill=kill)
        text = log.read_text()
        assert "Traceback" not in text, text
        if newest is not None:  # resumed from the newest step file, never from best.safetensors
            assert re.findall(r"resuming from \S+/step_(\d+)\.safetensors", text) == [f"{newest:08d}"], text
        if out["killed"]:
            kills += 1
            continue
        assert out["rc"] == 0, text
        break
    assert kills == 3

    final = {name: list_checkpoints(path)[-1][1] for name, path in {**runs, "killed": run_dir}.items()}
    assert_bitwise_equal(checkpoint_tensors(final["reference"]), checkpoint_tensors(final["killed"]))
    assert_bitwise_equal(checkpoint_tensors(final["plain"]), checkpoint_tensors(final["killed"]))
    # the same evaluations, the same best checkpoint (its value and step, and its weights)
    assert _eval_rows(run_dir) == _eval_rows(runs["reference"]) and len(_eval_rows(run_dir)) == 2
    best, best_ref = best_checkpoint_path(run_dir), best_checkpoint_path(runs["reference"])
    assert read_checkpoint(best).extra["eval_best"] == read_checkpoint(best_ref).extra["eval_best"]
    assert_bitwise_equal(checkpoint_tensors(best), checkpoint_tensors(best_ref))
    assert not best_checkpoint_path(runs["plain"]).exists()
