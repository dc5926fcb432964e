"""kill -9 while training on streamed shards (WebDataset tars, Parquet files) and resume: bitwise the same run.

Each dataset holds one record that does not decode, so the streams' saved positions (not the step
alone) are what puts a resumed run on the very next batch.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hourglass.train.checkpoint import list_checkpoints
from hourglass.train.metrics import read_metrics
from tests._shards import image_folder, parquet_files, webdataset_shards

from .conftest import assert_bitwise_equal, checkpoint_tensors

STEPS = 6


def _data(kind: str, root: Path) -> list[str]:
    if kind == "webdataset":
        pytest.importorskip("webdataset")
        folder = image_folder(root / "images", n=16)
        (folder / "dogs" / "005.png").write_bytes(b"not a png")
        shards = webdataset_shards(folder, root / "tars", per_shard=2)
        spec = f'{{type = "webdataset", root = "{shards}", classes = "cls", crop = "random", hflip = 0.5}}'
        classes = 2
    else:
        pytest.importorskip("datasets")
        files = parquet_files(root / "parquet", files=4, rows=4, num_classes=3, corrupt=6)
        spec = f'{{type = "hf_datasets", path = "{files}", label_column = "label", streaming = true, hflip = 0.5}}'
        classes = 3
    return ["--set", f"data.dataset={spec}", "--set", f"model.num_classes={classes}", "--set", f"train.steps={STEPS}"]


@pytest.mark.parametrize("kind", ["webdataset", "hf_datasets"])
def test_kill9_on_streamed_shards_then_resume_is_bitwise_identical(kind, tmp_path, recipe_file, zygote):
    extra = _data(kind, tmp_path)

    def argv(run_dir: Path) -> list[str]:
        return ["train", str(recipe_file), "--run-dir", str(run_dir), "--no-progress", *extra]

    reference = tmp_path / "reference"
    out = zygote.run(argv(reference), reference, tmp_path / "reference.log")
    assert out["rc"] == 0, (tmp_path / "reference.log").read_text()

    rng = random.Random(18)
    run_dir, kills = tmp_path / "killed", 0
    for cycle in range(10):
        log = tmp_path / f"cycle{cycle}.log"
        kill = {"after_checkpoints": rng.randint(1, 2), "delay": rng.uniform(0.0, 0.05)} if kills < 2 else None
        out = zygote.run(argv(run_dir), run_dir, log, kill=kill)
        text = log.read_text()
        assert "Traceback" not in text and "derived from the step" not in text, text
        if out["killed"]:
            kills += 1
            continue
        assert out["rc"] == 0, text
        break
    assert kills == 2
    last, ref = list_checkpoints(run_dir)[-1], list_checkpoints(reference)[-1]
    assert last[0] == ref[0] == STEPS
    assert_bitwise_equal(checkpoint_tensors(ref[1]), checkpoint_tensors(last[1]))
    losses = [
        [(r["step"], r["loss"]) for r in read_metrics(d / "metrics.jsonl") if "loss" in r] for d in (reference, run_dir)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == STEPS
