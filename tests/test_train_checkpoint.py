"""Checkpoints: round trip, atomic writes under SIGKILL, corrupt files skipped, inference loading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from hourglass.train import (
    CheckpointError,
    Trainer,
    checkpoint_path,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    train,
)
from hourglass.train.checkpoint import (
    flatten_optimizer_state,
    prune_checkpoints,
    remove_stale_temp_files,
    unflatten_optimizer_state,
)
from tests.test_train_loop import REPO, one_thread, quiet, tiny_recipe  # noqa: F401 (fixture)


def _small_state() -> dict[str, torch.Tensor]:
    return {
        "w": torch.randn(4, 3),
        "b": torch.zeros(3, dtype=torch.bfloat16),
        "i": torch.arange(5),
        "s": torch.tensor(2.5),
    }


def test_round_trip_keeps_every_tensor_and_field(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    state = _small_state()
    path = save_checkpoint(
        checkpoint_path(tmp_path, 7), step=7, model=model.state_dict(), ema=state, optimizer=opt.state_dict(),
        rng={"torch_cpu": torch.get_rng_state()}, data={"consumed_batches": torch.tensor(14)},
        recipe_toml="[train]\nsteps = 7\n", model_spec={"type": "x"}, extra={"bad_steps": 1},
    )
    assert path.name == "step_00000007.safetensors"
    got = read_checkpoint(path)
    assert got.step == 7 and got.extra == {"bad_steps": 1} and got.model_spec == {"type": "x"}
    assert got.recipe_toml == "[train]\nsteps = 7\n"
    for k, v in state.items():
        assert torch.equal(got.ema[k], v) and got.ema[k].dtype == v.dtype
    assert torch.equal(got.rng["torch_cpu"], torch.get_rng_state())
    assert int(got.data["consumed_batches"]) == 14
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(got.optimizer)
    old_state, new_state = opt.state_dict()["state"], fresh.state_dict()["state"]
    assert old_state.keys() == new_state.keys()
    for pid, entries in old_state.items():
        assert all(torch.equal(v, new_state[pid][k]) for k, v in entries.items())
    assert fresh.param_groups[0]["betas"] == (0.9, 0.95)


def test_optimizer_flattening_is_lossless():
    sd = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2), "note": 5}},
          "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0], "name": "main_wd"}]}
    tensors, meta = flatten_optimizer_state(sd)
    assert set(tensors) == {"optimizer.state.0.step", "optimizer.state.0.exp_avg"}
    back = unflatten_optimizer_state(tensors, meta)
    assert back["state"][0]["note"] == 5 and torch.equal(back["state"][0]["exp_avg"], torch.ones(2))
    assert back["param_groups"] == sd["param_groups"]


def test_truncated_or_corrupt_newest_checkpoint_is_skipped(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(checkpoint_path(tmp_path, step), step=step, model=_small_state())
    newest = checkpoint_path(tmp_path, 3)
    newest.write_bytes(newest.read_bytes()[:-7])  # truncated
    middle = checkpoint_path(tmp_path, 2)
    raw = bytearray(middle.read_bytes())
    raw[-3] ^= 0xFF  # one flipped bit pattern inside the tensor data
    middle.write_bytes(bytes(raw))
    messages: list[str] = []
    found = find_latest_checkpoint(tmp_path, report=messages.append)
    assert found is not None and found.step == 1
    assert len(messages) == 2
    assert "step_00000003.safetensors" in messages[0] and "truncated" in messages[0]
    assert "step_00000002.safetensors" in messages[1] and "checksum" in messages[1]
    with pytest.raises(CheckpointError, match="truncated or corrupt|truncated"):
        read_checkpoint(newest)


def test_trainer_resumes_from_the_last_valid_checkpoint(tmp_path):
    train(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path, report=quiet)
    bad = checkpoint_path(tmp_path, 4)
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    messages: list[str] = []
    trainer = Trainer(tiny_recipe("train.steps=4"), tmp_path, report=messages.append)
    assert trainer.step == 2
    assert any("skipping checkpoint step_00000004.safetensors" in m for m in messages)
    trainer.fit()
    assert read_checkpoint(checkpoint_path(tmp_path, 4)).step == 4  # rewritten, valid again


def test_not_a_checkpoint_is_refused(tmp_path):
    import safetensors.torch

    other = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({"w": torch.ones(2)}, str(other))
    with pytest.raises(CheckpointError, match="not an hourglass training checkpoint"):
        read_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_prune_and_stale_temp_files(tmp_path):
    for step in range(1, 6):
        save_checkpoint(checkpoint_path(tmp_path, step), step=step, model=_small_state())
    stale = tmp_path / "checkpoints" / ".step_00000009.safetensors.tmp-123"
    stale.write_bytes(b"half")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2, 3, 4, 5]
    deleted = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in deleted] == [f"step_0000000{i}.safetensors" for i in (1, 2, 3)]
    assert remove_stale_temp_files(tmp_path) == [stale] and not stale.exists()
    assert prune_checkpoints(tmp_path, 0) == []


_SLOW_WRITER = """
import sys, time
import torch
import hourglass.train.checkpoint as c

def slow(f, data):
    f.write(data[: len(data) // 2])
    f.flush()
    print("half written", flush=True)
    time.sleep(60)
    f.write(data[len(data) // 2 :])

c._write_chunks = slow
c.save_checkpoint(sys.argv[1], step=2, model={"w": torch.full((256, 256), 2.0)})
"""


def test_killed_writer_leaves_the_previous_checkpoint_intact(tmp_path):
    path = checkpoint_path(tmp_path, 1)
    save_checkpoint(path, step=1, model={"w": torch.full((256, 256), 1.0)})
    before = path.read_bytes()
    # the writer targets the very same file name: the worst case for a non-atomic write
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_SLOW_WRITER), str(path)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half written"
        temps = [p for p in path.parent.iterdir() if p.name.startswith(".step_")]
        assert temps and temps[0].stat().st_size > 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.read_bytes() == before
    found = find_latest_checkpoint(tmp_path, report=None)
    assert found.step == 1 and torch.equal(found.model["w"], torch.full((256, 256), 1.0))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert remove_stale_temp_files(tmp_path)


def test_save_renames_the_fully_written_temp_file_into_place(tmp_path, monkeypatch):
    """A save is atomic: the final file is the fully written temp file of the same folder, renamed (same inode),
    never a copy of it, and a previous checkpoint at that path is replaced, never truncated or rewritten."""
    import hourglass.train.checkpoint as ckpt_module

    original, written = ckpt_module._write_chunks, []

    def recording(f, data):
        original(f, data)
        f.flush()
        st = os.fstat(f.fileno())
        written.append((Path(f.name), st.st_ino, st.st_size, len(data)))

    monkeypatch.setattr(ckpt_module, "_write_chunks", recording)
    path, keep = checkpoint_path(tmp_path, 1), tmp_path / "keep"
    keep.mkdir()
    before = None
    for step in (1, 2):  # the first save creates the file, the second replaces it
        if path.exists():
            os.link(path, keep / "previous")  # a second name for the old file's inode
            before = path.read_bytes()
        save_checkpoint(path, step=step, model={"w": torch.full((64, 64), float(step))})
        assert len(written) == step
        temp, inode, size, length = written[-1]
        assert temp.parent == path.parent and temp != path, f"not written through a temp file beside it: {temp}"
        assert size == length
        assert os.stat(path).st_ino == inode, "the checkpoint is not the renamed temp file (copied into place?)"
        assert not temp.exists() and [p.name for p in path.parent.iterdir()] == [path.name]
        assert read_checkpoint(path).step == step
    assert (keep / "previous").read_bytes() == before, "the previous checkpoint was rewritten in place"


def test_load_checkpoint_for_inference(tmp_path):
    recipe = tiny_recipe("train.steps=2")
    train(recipe, tmp_path, report=quiet)
    model, ema_model, loaded_recipe, step = load_checkpoint(tmp_path)
    assert step == 2 and loaded_recipe == recipe
    assert not model.training and not any(p.requires_grad for p in ema_model.parameters())
    saved = read_checkpoint(checkpoint_path(tmp_path, 2))
    assert all(torch.equal(v, saved.ema[k]) for k, v in ema_model.state_dict().items())
    assert any(not torch.equal(v, saved.ema[k]) for k, v in model.state_dict().items())
    x, sigma = torch.randn(2, 3, 16, 16), torch.ones(2)
    assert ema_model(x, sigma, class_cond=torch.tensor([0, 6])).shape == (2, 3, 16, 16)
    with pytest.raises(CheckpointError, match=r"samples is a folder of images \(e.g. final.png\), not a run directory"):
        load_checkpoint(tmp_path / "samples")


def test_resume_refuses_a_different_model(tmp_path):
    from hourglass.train import TrainConfigError

    train(tiny_recipe("train.steps=1"), tmp_path, report=quiet)
    with pytest.raises(TrainConfigError, match="different model"):
        Trainer(tiny_recipe("model.levels[0].width=48"), tmp_path, report=quiet)


def test_checkpoint_loading_never_unpickles(tmp_path):
    # A pickle bomb renamed to .safetensors must be refused as a corrupt file, never executed.
    marker = tmp_path / "pwned"
    payload = f"import os\nos.system('touch {marker}')".encode()
    import pickle

    class Bomb:
        def __reduce__(self):
            return (exec, (payload.decode(),))

    path = checkpoint_path(tmp_path, 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(Bomb()))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert find_latest_checkpoint(tmp_path, report=None) is None
    time.sleep(0.05)
    assert not marker.exists()
    assert os.listdir(tmp_path / "checkpoints") == ["step_00000001.safetensors"]


def test_read_class_names_from_metadata_classes_json_or_the_recipe(tmp_path):
    from hourglass.recipe import dump_recipe
    from hourglass.train import read_class_names

    shapes = ["circle", "square", "triangle", "cross", "star", "ring"]
    recipe = tiny_recipe()
    path = save_checkpoint(checkpoint_path(tmp_path / "named", 1), step=1, model=_small_state(),
                           recipe_toml=dump_recipe(recipe), class_names=["a", "b"])
    assert read_class_names(path) == read_class_names(tmp_path / "named") == ["a", "b"]  # metadata wins
    assert read_class_names(read_checkpoint(path)) == ["a", "b"]
    # no metadata: the run's classes.json, else what the recipe's dataset spec names (shapes: its classes)
    old = save_checkpoint(checkpoint_path(tmp_path / "old", 1), step=1, model=_small_state(),
                          recipe_toml=dump_recipe(recipe))
    assert read_checkpoint(old, tensors=False).class_names is None
    assert read_class_names(old) == read_class_names(tmp_path / "old") == shapes
    (tmp_path / "old" / "classes.json").write_text('["x", "y"]')
    assert read_class_names(tmp_path / "old") == read_class_names(old) == ["x", "y"]
    (tmp_path / "old" / "classes.json").write_text('{"x": 1}')
    with pytest.raises(CheckpointError, match=r"classes.json: the class names are not a JSON list of strings"):
        read_class_names(tmp_path / "old")
    bare = save_checkpoint(checkpoint_path(tmp_path / "bare", 1), step=1, model=_small_state())
    assert read_class_names(bare) is None
    with pytest.raises(CheckpointError, match="does not exist"):
        read_class_names(tmp_path / "missing")


def test_header_only_reading_skips_the_tensors(tmp_path):
    path = save_checkpoint(checkpoint_path(tmp_path, 7), step=7, model=_small_state(), model_spec={"type": "x"})
    info = read_checkpoint(path, tensors=False)
    assert info.step == 7 and info.model == {} and info.model_spec == {"type": "x"} and info.plugins == {}
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # damaged tensor data: only a full read notices
    path.write_bytes(bytes(raw))
    assert read_checkpoint(path, tensors=False).step == 7
    with pytest.raises(CheckpointError, match="checksum"):
        read_checkpoint(path)


def test_trainer_finds_missing_data_before_building_anything(tmp_path, monkeypatch):
    from hourglass.train import TrainConfigError
    from hourglass.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "build_model", None)  # never reached
    recipe = tiny_recipe(f"data.dataset={{type = 'imagefolder', root = '{tmp_path / 'nope'}'}}", "model.num_classes=0")
    with pytest.raises(TrainConfigError, match=r"data.dataset.root = .*nope.*: folder .* does not exist"):
        Trainer(recipe, tmp_path / "run", report=quiet)
    assert not (tmp_path / "run").exists()


def test_a_model_needing_an_unregistered_component_is_one_clear_error(tmp_path):
    from hourglass.recipe import dump_recipe

    recipe = tiny_recipe("train.steps=1")
    train(recipe, tmp_path / "run", report=quiet)
    saved = read_checkpoint(checkpoint_path(tmp_path / "run", 1))
    spec = saved.model_spec
    spec["levels"][1]["attention"]["type"] = "no_such_kind"
    save_checkpoint(checkpoint_path(tmp_path / "other", 1), step=1, model=saved.model, ema=saved.ema,
                    recipe_toml=dump_recipe(recipe).replace('"global"', '"no_such_kind"'), model_spec=spec)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "other")
    text = str(info.value)
    assert "needs attention 'no_such_kind' (model.levels[1].attention), not registered here" in text
    assert "install or enable the plugin that provides it" in text and "\n" not in text


def test_checkpoints_record_the_plugin_components_of_their_model(tmp_path):
    from hourglass.recipe import load_recipe
    from hourglass.registry import ATTENTION

    if "dinat" not in ATTENTION:
        pytest.skip("the hourglass-dinat plugin is not installed")
    recipe = load_recipe(REPO / "plugins" / "hourglass-dinat" / "recipe.toml")
    path = save_checkpoint(checkpoint_path(tmp_path, 1), step=1, model={}, model_spec=recipe.to_data()["model"])
    assert read_checkpoint(path, tensors=False).plugins == {"attention:dinat": f"hourglass-dinat {_dinat_version()}"}
    built_in = save_checkpoint(checkpoint_path(tmp_path, 2), step=2, model={}, model_spec=tiny_recipe().to_data()["model"])
    assert read_checkpoint(built_in, tensors=False).plugins == {}


def _dinat_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("hourglass-dinat")
