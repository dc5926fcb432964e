"""SIGINT/SIGTERM stop cleanly with a checkpoint; a failing write keeps the previous checkpoint."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import hourglass.train.checkpoint as ckpt_module
from hourglass.recipe import loads_recipe
from hourglass.train import Trainer
from hourglass.train.checkpoint import list_checkpoints, read_checkpoint

from .conftest import REPO, TINY_RECIPE, child_env


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_step_writes_a_checkpoint_and_exits_0(tmp_path, recipe_file, sig):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hourglass", "train", str(recipe_file), "--run-dir", str(run_dir), "--no-progress",
         "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait until training runs
        lines.append(line)
        if line.startswith("step 3/"):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    text = "".join(lines) + out
    assert proc.returncode == 0, (proc.returncode, text, err)
    assert "Traceback" not in err, err
    assert f"received {sig.name}" in text and f"stopped by {sig.name}" in text, text
    saved = list_checkpoints(run_dir)
    assert len(saved) == 1, saved
    step = saved[0][0]
    assert step >= 3 and f"after step {step}" in text
    assert read_checkpoint(saved[0][1]).step == step  # complete, verified file of the step it reports


def _trainer(run_dir: Path, steps: int) -> Trainer:
    recipe = loads_recipe(TINY_RECIPE, [f"train.steps={steps}"])
    return Trainer(recipe, run_dir, report=lambda m: None, progress=False)


def test_enospc_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    _trainer(run_dir, 2).fit()
    good = list_checkpoints(run_dir)[-1][1]
    before = good.read_bytes()
    original = ckpt_module._write_chunks

    def full_disk(f, data):
        original(f, data[: len(data) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_module, "_write_chunks", full_disk)
    with pytest.raises(OSError) as info:
        _trainer(run_dir, 3).fit()
    assert info.value.errno == errno.ENOSPC and "No space left" in str(info.value)
    assert [s for s, _ in list_checkpoints(run_dir)] == [1, 2]
    assert good.read_bytes() == before
    assert not list((run_dir / "checkpoints").glob(".step_*")), "the temp file of the failed write was left"
    monkeypatch.undo()
    resumed = _trainer(run_dir, 3)
    assert resumed.step == 2 and resumed.resumed_from == good


def test_enospc_in_the_cli_is_one_clear_message(tmp_path, recipe_file, zygote):
    run_dir, log = tmp_path / "run", tmp_path / "log"
    out = zygote.run(["train", str(recipe_file), "--run-dir", str(run_dir), "--no-progress"], run_dir, log,
                     fail_write_after=2)
    text = log.read_text()
    assert [s for s, _ in list_checkpoints(run_dir)] == [1, 2]
    read_checkpoint(list_checkpoints(run_dir)[-1][1])
    assert out["rc"] not in (0, None), text
    assert "No space left" in text, text
    assert out["rc"] == 1 and "Traceback" not in text, text
    assert "run the same command again to resume" in text, text
