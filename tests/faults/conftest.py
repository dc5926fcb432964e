"""Shared helpers of the fault-injection suite: a tiny recipe, CLI runners and a forking supervisor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hourglass.train.checkpoint import read_checkpoint
from tests._tiny import tiny_recipe_text

REPO = Path(__file__).resolve().parents[2]

TINY_RECIPE = tiny_recipe_text(checkpoint_every=1, sample_steps=1, sample_n=1)


def child_env() -> dict[str, str]:
    """Environment of a CLI subprocess: one thread, no progress bar, the repository importable."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HOURGLASS_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    """The tiny recipe as a file."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path


def run_cli(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m hourglass ARGS`` in a subprocess (text output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "hourglass", *args], capture_output=True, text=True, timeout=timeout,
        env=child_env(), cwd=cwd or REPO,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit status 2, no traceback, and every needle (case-insensitive) in stderr."""
    text = proc.stderr
    assert "Traceback" not in text and "Traceback" not in proc.stdout, text
    assert proc.returncode == 2, (proc.returncode, proc.stdout, text)
    for needle in needles:
        assert needle.lower() in text.lower(), (needle, text)


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Model, EMA and optimizer tensors of a checkpoint, flat."""
    data = read_checkpoint(path)
    out = {f"model.{k}": v for k, v in data.model.items()}
    out.update({f"ema.{k}": v for k, v in data.ema.items()})
    for pid, entries in (data.optimizer or {"state": {}})["state"].items():
        out.update({f"opt.{pid}.{k}": v for k, v in entries.items() if isinstance(v, torch.Tensor)})
    return out


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Same names, dtypes, shapes and bytes."""
    assert sorted(a) == sorted(b)
    different = [k for k in a if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


class Zygote:
    """Talks to ``tests/faults/_zygote.py``: forks CLI runs from a pre-imported process, kills on cue."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults._zygote"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=child_env(), cwd=REPO,
        )

    def run(self, argv: list[str], run_dir: Path, log: Path, kill: dict | None = None,
            slow_write: float = 0.0, timeout: float = 120, fail_write_after: int | None = None) -> dict:
        """Fork ``hourglass.cli.main(argv)``; returns ``{"rc", "killed", "signal", ...}``."""
        request = {"argv": argv, "run_dir": str(run_dir), "log": str(log), "kill": kill,
                   "slow_write": slow_write, "timeout": timeout,
                   "fail_write_after": fail_write_after}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died (exit status {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        """End the zygote (closing its stdin ends its loop)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def zygote():
    """One forking supervisor per test module."""
    z = Zygote()
    yield z
    z.close()
