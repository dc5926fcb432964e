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
    assert names == ["final.png", "step_00000002.png"]  # named like the checkpoint of that step
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


# -- the progress bar, the final grid and finished runs -------------------------------------------------
class _FakeBar:
    """Stands in for ``tqdm.auto.tqdm``: records what each bar does into ``events``."""

    events: list[tuple] = []

    def __init__(self, total=None, initial=0, desc="", **kwargs):
        self.desc, self.total, self.n, self.closed = desc, total, initial, False
        self.events.append(("open", desc, total))

    def update(self, n=1):
        self.n += n

    def set_postfix(self, refresh=True, **values):
        self.events.append(("postfix", self.desc, values))

    def write(self, message):
        self.events.append(("say", message))

    def close(self):
        if not self.closed:
            self.closed = True
            self.events.append(("close", self.desc, self.n))


@pytest.fixture
def fake_bars(monkeypatch):
    import tqdm.auto

    import hourglass.train.trainer as trainer_module

    _FakeBar.events = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _FakeBar)
    monkeypatch.setattr(trainer_module, "progress_enabled", lambda: True)  # as on a terminal
    return _FakeBar.events


def test_bar_closes_before_the_final_grid_and_done_shows_its_last_loss(tmp_path, fake_bars, capsys):
    from hourglass.cli import main

    recipe = _write_recipe(tmp_path)
    code = main(["train", str(recipe), "--run-dir", str(tmp_path / "run"), "--set", "train.steps=5",
                 "--set", "train.log_every=2"])
    out = capsys.readouterr().out
    assert code == 0, out
    events = [e for e in fake_bars if e[0] != "postfix"]
    opened = [e[1] for e in events if e[0] == "open"]
    assert opened == ["train", "grid final"]
    train_closed = events.index(("close", "train", 5))  # closed at 5/5 ...
    status = next(i for i, e in enumerate(events) if e[0] == "say" or (e[0] == "open" and e[1] == "grid final"))
    assert train_closed < status  # ... before the final grid's status line and its own bar
    assert "sampling the final grid: 6 images, 2 steps" in out
    assert events[-1] == ("close", "grid final", 2)  # 6 images in one batch, 2 sampler steps
    # the loss the bar showed last, the last metrics record and the "done" line are one number
    shown = [e[2]["loss"] for e in fake_bars if e[0] == "postfix" and e[1] == "train"][-1]
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert logged["step"] == 5 and f"{logged['loss']:.4f}" == shown
    assert f"done: step 5, loss {shown}," in out


def test_bar_shows_the_mean_since_the_last_log_line(tmp_path, fake_bars):
    messages: list[str] = []
    result = train(tiny_recipe("train.steps=3", "train.log_every=3"), tmp_path, report=messages.append,
                   progress=True)
    shown = [float(e[2]["loss"]) for e in fake_bars if e[0] == "postfix" and e[1] == "train"]
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert len(shown) == 3 and len(losses) == 1  # one record at step 3: the mean of steps 1-3
    assert shown[-1] == pytest.approx(losses[0], abs=1e-4) and result.loss == losses[0]


class _NoGrid(Trainer):
    def sample_grid(self, name):
        raise AssertionError(f"drew a grid ({name}) on a finished run")


def test_a_finished_run_is_reported_and_left_alone(tmp_path, capsys):
    from hourglass.cli import main

    first = train(tiny_recipe("train.steps=2"), tmp_path, report=quiet)
    final = tmp_path / "samples" / "final.png"
    assert first.grid == final and not first.already_finished
    before = (final.stat().st_mtime_ns, final.read_bytes(), (tmp_path / "metrics.jsonl").read_text(),
              (tmp_path / "recipe.toml").read_text())
    messages: list[str] = []
    trainer = _NoGrid(tiny_recipe("train.steps=2", "sample.n=12"), tmp_path, report=messages.append, progress=True)
    result = trainer.fit()
    assert result.already_finished and result.step == 2 and result.checkpoint is None
    assert result.grid == final and result.loss == first.loss  # the run's last logged loss
    after = (final.stat().st_mtime_ns, final.read_bytes(), (tmp_path / "metrics.jsonl").read_text(),
             (tmp_path / "recipe.toml").read_text())
    assert after == before  # nothing redrawn or rewritten
    assert any("already trained (step 2 of train.steps 2)" in m and "--set train.steps=N" in m for m in messages)
    assert any(f"its final grid is {final}" in m for m in messages)
    # the CLI: the same report, exit status 0
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    assert main(["train", str(recipe), "--run-dir", str(tmp_path), "--set", "train.steps=2"]) == 0
    out = capsys.readouterr().out
    assert "already trained" in out and f"its final grid is {final}" in out and "done:" not in out
    assert final.stat().st_mtime_ns == before[0]


def test_a_finished_run_without_its_final_grid_draws_only_that(tmp_path):
    train(tiny_recipe("train.steps=2"), tmp_path, report=quiet)
    (tmp_path / "samples" / "final.png").unlink()  # e.g. stopped while the grid was drawn
    messages: list[str] = []
    result = train(tiny_recipe("train.steps=2"), tmp_path, report=messages.append)
    assert result.already_finished and result.grid == tmp_path / "samples" / "final.png" and result.grid.is_file()
    assert any("is missing" in m for m in messages) and any("sampling the final grid" in m for m in messages)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
