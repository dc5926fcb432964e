"""Experiment trackers (``[train] trackers``): what each built-in writes, resume without duplicated
steps, only rank 0 logging, and the error when a tracker's package is missing.

Nothing goes over the network: W&B runs offline into the run directory (``WANDB_MODE=offline``) and
MLflow writes to a ``file:`` store under the test's temporary directory.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from hourglass.recipe import RecipeError, loads_recipe
from hourglass.registry import TRACKER
from hourglass.trackers import TrackerError, open_trackers
from hourglass.train import TrainConfigError, Trainer, read_metrics, train
from tests._tiny import tiny_recipe_text

#: the built-ins that need an optional package, and that package
OPTIONAL = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network: W&B offline and quiet, MLflow's file store allowed (MLflow 3 refuses it by default)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _needs(name: str) -> None:
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name], reason=f"the {name} tracker needs the {OPTIONAL[name]} package "
                            f'(pip install "hourglass-diffusion[{name}]")')


def _tracker(name: str, tmp_path) -> str:
    """The TOML of tracker ``name`` (mlflow with a file store under ``tmp_path``)."""
    if name == "mlflow":
        return f'{{type = "mlflow", tracking_uri = "{(tmp_path / "mlruns").as_uri()}", experiment = "tiny"}}'
    return f'"{name}"'


def _recipe(name: str, tmp_path, *overrides: str):
    """The tiny recipe logging every step to ``jsonl`` and ``name``."""
    trackers = '"jsonl"' if name == "jsonl" else f'"jsonl", {_tracker(name, tmp_path)}'
    return loads_recipe(tiny_recipe_text(), [f"train.trackers=[{trackers}]", "train.log_every=1", *overrides])


def _quiet(message: str) -> None:
    pass


# -- reading back what each tracker wrote ---------------------------------------------------------------
def _logged(name: str, run_dir, tmp_path) -> tuple[dict[int, float], list[int]]:
    """``({step: loss}, [steps with a sample grid])`` as tracker ``name`` stored them; a step logged
    twice fails here."""
    losses: dict[int, float] = {}

    def add(step: int, value: float) -> None:
        assert step not in losses, f"{name} logged step {step} twice"
        losses[step] = value

    if name == "jsonl":
        for record in read_metrics(run_dir / "metrics.jsonl"):
            add(record["step"], record["loss"])
        return losses, []
    if name == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
        for event in events.Scalars("loss"):
            add(event.step, event.value)
        images = [e.step for e in events.Images("samples")] if "samples" in events.Tags()["images"] else []
        return losses, images
    if name == "wandb":
        from tests._wandb_log import wandb_history

        runs = sorted((run_dir / "wandb").glob("offline-run-*"))
        assert runs, f"no offline W&B run under {run_dir / 'wandb'}"
        images = []
        for run in runs:
            for row in wandb_history(next(run.glob("run-*.wandb"))):
                if "loss" in row:
                    add(row["_step"], row["loss"])
                if "samples/path" in row:  # a wandb.Image: its PNG is copied into the run's files
                    images.append(row["_step"])
                    assert (run / "files" / row["samples/path"]).is_file()
        return losses, images
    if name == "mlflow":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
        experiment = client.get_experiment_by_name("tiny")
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED" and run.data.params["train.log_every"] == "1"
        for metric in client.get_metric_history(run.info.run_id, "loss"):
            add(metric.step, metric.value)
        folders = [f.path for f in client.list_artifacts(run.info.run_id, "samples")]
        return losses, sorted(int(f.rsplit("_", 1)[1]) for f in folders)
    raise AssertionError(name)


def _jsonl_losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}


# -- tests ---------------------------------------------------------------------------------------------------
def test_default_is_jsonl_and_each_tracker_is_listed_once():
    assert [t.type for t in loads_recipe(tiny_recipe_text()).train.trackers] == ["jsonl"]
    assert loads_recipe(tiny_recipe_text(), ["train.trackers=[]"]).train.trackers == ()
    with pytest.raises(RecipeError, match="tracker 'jsonl' is listed 2 times"):
        loads_recipe(tiny_recipe_text(), ['train.trackers=["jsonl", {type = "jsonl"}]'])
    with pytest.raises(RecipeError, match="must be a folder inside the run directory"):
        loads_recipe(tiny_recipe_text(), ['train.trackers=[{type = "tensorboard", log_dir = "../elsewhere"}]'])
    assert sorted(TRACKER.names()) == ["jsonl", "mlflow", "tensorboard", "wandb"]


@pytest.mark.parametrize("name", ["jsonl", "tensorboard", "wandb", "mlflow"])
def test_two_steps_are_logged_with_the_sample_grids(tmp_path, name):
    _needs(name)
    run_dir = tmp_path / "run"
    train(_recipe(name, tmp_path, "train.steps=2", "train.sample_every=1"), run_dir, report=_quiet)
    losses, images = _logged(name, run_dir, tmp_path)
    expected = _jsonl_losses(run_dir)
    assert sorted(expected) == [1, 2]
    assert losses.keys() == expected.keys()
    assert all(math.isclose(losses[s], expected[s], rel_tol=1e-6) for s in expected)  # tensorboard: float32
    if name != "jsonl":  # the grid of step 1 (sample_every) and samples/final.png at step 2
        assert sorted(images) == [1, 2]


@pytest.mark.parametrize("name", ["jsonl", "tensorboard", "wandb", "mlflow"])
def test_a_resumed_run_logs_each_step_once(tmp_path, name):
    """Killed right after logging step 3 (the newest checkpoint is step 2), then resumed to step 4."""
    _needs(name)
    run_dir = tmp_path / "run"
    recipe = _recipe(name, tmp_path, "train.steps=4", "train.checkpoint_every=2")

    def killed_after_step_3(message: str) -> None:
        if message.startswith("step 3/"):  # said right after step 3 is logged
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(recipe, run_dir, report=killed_after_step_3)
    before, _ = _logged(name, run_dir, tmp_path)
    assert sorted(before) == [1, 2, 3]
    messages: list[str] = []
    train(recipe, run_dir, report=messages.append)
    assert any("resuming from" in m and "step_00000002" in m for m in messages)
    after, _ = _logged(name, run_dir, tmp_path)  # a step logged twice fails in _logged
    assert sorted(after) == [1, 2, 3, 4]
    if name == "wandb":  # the resumed session continued the same W&B run
        ids = {p.name.split("-")[3] for p in (run_dir / "wandb").glob("offline-run-*")}
        assert len(ids) == 1 and json.loads((run_dir / "trackers" / "wandb.json").read_text())["run_id"] in ids


def test_only_the_main_rank_logs(tmp_path):
    specs = loads_recipe(tiny_recipe_text(), ['train.trackers=["jsonl", "tensorboard"]']).train.trackers
    trackers = open_trackers(specs, tmp_path / "rank1", {}, enabled=False)
    trackers.log(1, loss=0.5)
    trackers.close()
    assert not (tmp_path / "rank1").exists()


@pytest.mark.parametrize("name", ["wandb", "mlflow", "tensorboard"])
def test_a_missing_tracker_package_is_one_line_naming_the_pip_command(tmp_path, monkeypatch, capsys, name):
    from hourglass.cli import main

    monkeypatch.setitem(sys.modules, OPTIONAL[name], None)  # importlib.util.find_spec now says: not installed
    hint = f'pip install "hourglass-diffusion[{name}]"'
    recipe = _recipe(name, tmp_path)
    with pytest.raises(TrainConfigError, match=r"train\.trackers\[1\]: the .* needs the .* package") as info:
        Trainer(recipe, tmp_path / "run")
    assert hint in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TrackerError, match=f"needs the {OPTIONAL[name]} package"):
        open_trackers(recipe.train.trackers, tmp_path / "run", {})
    path = tmp_path / "recipe.toml"
    path.write_text(recipe.to_toml())
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert hint in err and "train.trackers[1]" in err and "Traceback" not in err
    assert main(["validate", "--no-data-check", str(path)]) == 0


def test_a_tracker_that_cannot_start_is_a_one_line_cli_error(tmp_path, capsys):
    _needs("mlflow")
    from hourglass.cli import main

    path = tmp_path / "recipe.toml"
    path.write_text(tiny_recipe_text())
    status = main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--set", "train.steps=1",
                   "--set", 'train.trackers=[{type = "mlflow", tracking_uri = "nosuch://nowhere"}]'])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert "the mlflow tracker could not start its run at nosuch://nowhere" in err[0] and "Set tracking_uri" in err[0]
