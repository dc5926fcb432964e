"""kill -9 at random moments (mid-step and mid-checkpoint-write) and resume: bitwise the same run."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from hourglass.train.checkpoint import list_checkpoints, read_checkpoint

from .conftest import assert_bitwise_equal, checkpoint_tensors

STEPS = 24
KILLS = 12  # at least 10 kill -9; a third of them while a checkpoint file is half written


def _train_argv(recipe: Path, run_dir: Path) -> list[str]:
    return ["train", str(recipe), "--run-dir", str(run_dir), "--no-progress", "--set", f"train.steps={STEPS}"]


@pytest.mark.slow
def test_kill9_at_random_moments_then_resume_is_bitwise_identical(tmp_path, recipe_file, zygote):
    reference = tmp_path / "reference"
    out = zygote.run(_train_argv(recipe_file, reference), reference, tmp_path / "reference.log")
    assert out["rc"] == 0, (tmp_path / "reference.log").read_text()

    rng = random.Random(20240607)
    run_dir = tmp_path / "killed"
    kills = mid_write = 0
    resumes: list[int] = []
    for cycle in range(KILLS + 20):
        log = tmp_path / f"cycle{cycle}.log"
        newest_before = list_checkpoints(run_dir)[-1][0] if list_checkpoints(run_dir) else None
        if kills < KILLS:
            if kills % 3 == 2:  # land inside a half-written checkpoint file
                kill = {"mid_write": 1}
                slow = 0.4
            else:  # somewhere in a training step or between steps
                kill = {"after_checkpoints": 1, "delay": rng.uniform(0.0, 0.08)}
                slow = 0.0
        else:
            kill, slow = None, 0.0
        out = zygote.run(_train_argv(recipe_file, run_dir), run_dir, log, kill=kill, slow_write=slow)
        text = log.read_text()
        assert "Traceback" not in text, text
        # it resumed from the newest complete checkpoint there was, never from a partial file
        found = re.findall(r"resuming from \S+step_(\d+)\.safetensors \(step (\d+)\)", text)
        if newest_before is None:
            assert not found, text
        else:
            assert found and int(found[0][0]) == newest_before == int(found[0][1]), (newest_before, text)
            resumes.append(newest_before)
        if out["killed"]:
            assert not out.get("timeout"), text
            kills += 1
            if kill and "mid_write" in kill:
                assert out.get("temp_files"), f"the kill missed the write window: {out}"
                mid_write += 1
            # every step_*.safetensors file is complete: atomic rename, never a partial file
            for _, path in list_checkpoints(run_dir):
                read_checkpoint(path)
            continue
        assert out["rc"] == 0, text
        break
    else:
        pytest.fail("the run never finished")

    assert kills >= 10 and mid_write >= 3, (kills, mid_write)
    assert len(resumes) == kills
    assert not list(run_dir.glob("checkpoints/.step_*")), "a stale temp file was left behind"
    last = list_checkpoints(run_dir)[-1]
    assert last[0] == STEPS
    assert_bitwise_equal(checkpoint_tensors(list_checkpoints(reference)[-1][1]), checkpoint_tensors(last[1]))
    print(f"FAULTS kill9: {kills} kills ({mid_write} mid-write), {len(resumes)} resumes, all bitwise equal")
