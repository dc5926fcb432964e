"""The training loop: learning, exact resume, NaN handling, class dropout, SIGTERM, the CLI."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hourglass.recipe import loads_recipe
from hourglass.train import Trainer, TrainingDiverged, list_checkpoints, read_checkpoint, read_metrics, train
from tests._tiny import tiny_recipe_text

REPO = Path(__file__).resolve().parents[1]

TINY_RECIPE = tiny_recipe_text()


def tiny_recipe(*overrides: str):
    """The tiny test recipe (16 px, 2 levels of global attention, shapes data) with ``--set`` overrides."""
    return loads_recipe(TINY_RECIPE, list(overrides))


def quiet(message: str) -> None:
    pass


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a busy 2-core machine) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _states(path: Path) -> dict[str, torch.Tensor]:
    data = read_checkpoint(path)
    out = {f"model.{k}": v for k, v in data.model.items()}
    out.update({f"ema.{k}": v for k, v in data.ema.items()})
    for pid, entries in data.optimizer["state"].items():
        out.update({f"opt.{pid}.{k}": v for k, v in entries.items()})
    return out


def test_loss_decreases(tmp_path):
    recipe = tiny_recipe("train.steps=60", "train.checkpoint_every=1000", "data.batch_size=16")
    result = train(recipe, tmp_path, report=quiet)
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    assert result.step == 60 and result.checkpoint == tmp_path / "checkpoints" / "step_00000060.safetensors"
    assert (tmp_path / "recipe.toml").read_text().count("[train]") == 1
    assert loads_recipe((tmp_path / "recipe.toml").read_text()) == recipe
    assert (tmp_path / "samples" / "final.png").is_file()


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_is_bitwise_identical(tmp_path, accum):
    # dropout, class dropout, sigma, noise and data order must all replay after the restart
    common = ["model.levels[1].dropout=0.2", "train.class_dropout=0.5", f"train.grad_accum={accum}",
              "data.augment.p=0.5", "train.lr_schedule=\"linear_warmup\"", "train.warmup_steps=3"]
    train(tiny_recipe(*common, "train.steps=5"), tmp_path / "straight", report=quiet)
    train(tiny_recipe(*common, "train.steps=3"), tmp_path / "resumed", report=quiet)
    messages: list[str] = []
    result = train(tiny_recipe(*common, "train.steps=5"), tmp_path / "resumed", report=messages.append)
    assert any("resuming from" in m and "step_00000003" in m for m in messages)
    assert result.step == 5
    a = _states(tmp_path / "straight" / "checkpoints" / "step_00000005.safetensors")
    b = _states(tmp_path / "resumed" / "checkpoints" / "step_00000005.safetensors")
    assert a.keys() == b.keys() and len(a) > 40
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    # the metrics read like one run: no duplicated steps
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5]


def test_different_seed_gives_different_weights(tmp_path):
    train(tiny_recipe("train.steps=2"), tmp_path / "a", report=quiet)
    train(tiny_recipe("train.steps=2", "train.seed=1"), tmp_path / "b", report=quiet)
    a = read_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000002.safetensors").model
    b = read_checkpoint(tmp_path / "b" / "checkpoints" / "step_00000002.safetensors").model
    assert any(not torch.equal(a[k], b[k]) for k in a)


class _Flaky(Trainer):
    """A trainer whose loss is NaN at the steps in ``bad``."""

    bad: set[int] = set()
    seen_labels: list[torch.Tensor] = []

    def _compute_loss(self, x0, noise, sigma, cond):
        self.seen_labels.append(cond["class_cond"].clone())
        loss = super()._compute_loss(x0, noise, sigma, cond)
        return loss * math.nan if self.step in self.bad else loss


def test_nan_step_is_skipped(tmp_path):
    _Flaky.bad = {1}
    trainer = _Flaky(tiny_recipe(), tmp_path, report=quiet)
    batches = trainer.loader.iterate()
    trainer.train_step([next(batches)])
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in trainer.ema.model.state_dict().items()}
    opt_before = trainer.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    out = trainer.train_step([next(batches)])
    assert not out["ok"] and math.isnan(out["loss"])
    assert trainer.bad_steps == 1 and trainer.step == 2
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert all(torch.equal(ema_before[k], v) for k, v in trainer.ema.model.state_dict().items())
    assert torch.equal(opt_before, trainer.optimizer.state_dict()["state"][0]["exp_avg"])
    out = trainer.train_step([next(batches)])
    assert out["ok"] and trainer.consecutive_bad == 0
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(before[k], v)]
    assert "patch_in.proj.weight" in changed or len(changed) > len(before) // 2, changed


def test_consecutive_nan_steps_stop_the_run(tmp_path):
    _Flaky.bad = set(range(2, 100))
    messages: list[str] = []
    trainer = _Flaky(tiny_recipe("train.steps=20"), tmp_path, max_bad_steps=3, report=messages.append)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps.*step_00000002.safetensors.*Lower train.lr"):
        trainer.fit()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    assert read_checkpoint(tmp_path / "checkpoints" / "step_00000002.safetensors").step == 2
    assert sum("not finite; skipped the update" in m for m in messages) == 3
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records[-1]["bad_steps"] == 3 and records[-1]["loss"] == "nan"


def test_class_dropout_uses_the_null_class(tmp_path):
    _Flaky.bad, _Flaky.seen_labels = set(), []
    trainer = _Flaky(tiny_recipe("train.class_dropout=0.5", "data.batch_size=64"), tmp_path, report=quiet)
    trainer.train_step([next(trainer.loader.iterate())])
    labels = _Flaky.seen_labels[-1]
    dropped = (labels == 6).float().mean().item()
    assert 0.25 < dropped < 0.75
    assert labels[labels != 6].max() < 6
    _Flaky.seen_labels = []
    no_drop = _Flaky(tiny_recipe("train.class_dropout=0.0"), tmp_path / "b", report=quiet)
    no_drop.train_step([next(no_drop.loader.iterate())])
    assert (_Flaky.seen_labels[-1] < 6).all()


def test_sample_grid_every_n_steps(tmp_path):
    train(tiny_recipe("train.sample_every=2"), tmp_path, report=quiet)
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == ["final.png", "step_000002.png"]
    from PIL import Image

    with Image.open(tmp_path / "samples" / "final.png") as im:
        assert im.size == (6 * 18 + 2, 18 + 2)  # one row: the 6 classes side by side


def test_keep_last_prunes_old_checkpoints(tmp_path):
    train(tiny_recipe("train.steps=6", "train.checkpoint_every=1", "train.keep_last=2"), tmp_path, report=quiet)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 6]


def test_batch_that_does_not_split_is_refused(tmp_path):
    from hourglass.train import TrainConfigError

    recipe = tiny_recipe()
    # model_copy skips the recipe's own rule, leaving the trainer's (which adds the world size)
    bad = recipe.model_copy(update={
        "data": recipe.data.model_copy(update={"batch_size": 9}),
        "train": recipe.train.model_copy(update={"grad_accum": 2}),
    })
    with pytest.raises(TrainConfigError, match="data.batch_size 9 does not split.*multiple of 2"):
        Trainer(bad, tmp_path, report=quiet)


def _write_recipe(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "tiny.toml"
    text = TINY_RECIPE
    for line in lines:
        section, assignment = line.split(":", 1)
        text = text.replace(f"[{section}]\n", f"[{section}]\n{assignment}\n", 1)
    path.write_text(text)
    return path


def test_cli_train_and_sigterm(tmp_path):
    recipe = _write_recipe(tmp_path)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hourglass", "train", str(recipe), "--run-dir", str(run_dir),
         "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000", "--set", "train.log_every=5"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 10/"):
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, "".join(lines)
    text = "".join(lines)
    assert "received SIGTERM" in text and "stopped by SIGTERM" in text
    (step, path), = list_checkpoints(run_dir)
    assert step >= 10 and read_checkpoint(path).step == step
