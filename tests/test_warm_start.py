"""``[train] init_from``: warm starts from a run, a pretrained folder or a Hub id, with the load report's counts."""

from __future__ import annotations

import pytest
import torch

import hourglass
from hourglass.cli import main
from hourglass.models import grow
from hourglass.recipe import loads_recipe, recipe_from_data
from hourglass.train import TrainConfigError, Trainer, read_checkpoint, train
from hourglass.train.warm_start import WarmStartError, adapt_weights
from tests._tiny import tiny_recipe_text
from tests.test_train_loop import one_thread, quiet  # noqa: F401 (fixture)

SOURCE_CLASSES = ["circle", "square", "triangle"]


def recipe(*overrides: str):
    return loads_recipe(tiny_recipe_text(), ["train.steps=2", *overrides])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 16 px run of 3 steps on 3 shapes (circle, square, triangle): the weights to start from."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("source")
    train(recipe("train.steps=3", "train.checkpoint_every=3", "model.num_classes=3",
                 f"data.dataset.classes={SOURCE_CLASSES}"), path, report=quiet)
    torch.set_num_threads(threads)
    data = read_checkpoint(path / "checkpoints" / "step_00000003.safetensors")
    return path, data


def _fresh(r, run_dir, lines=None):
    return Trainer(r, run_dir, report=(lines.append if lines is not None else quiet), progress=False)


def test_same_model_loads_every_tensor_into_model_and_ema(source, tmp_path):
    path, data = source
    lines: list[str] = []
    trainer = _fresh(recipe("model.num_classes=3", f"data.dataset.classes={SOURCE_CLASSES}",
                            f"train.init_from='{path}'"), tmp_path / "run", lines)
    n = len(data.ema)
    assert trainer.init_report.counts() == {"loaded": n, "reshaped": 0, "new": 0, "skipped": 0, "renamed": 0}
    assert n == 40  # the tiny recipe's HDiT: 40 tensors (parameters and persistent buffers)
    assert lines[0] == (f"init_from {path}: the EMA weights of step 3; loaded 40 tensors, reshaped 0, newly "
                        "initialised 0, skipped 0")
    for module in (trainer.model, trainer.ema.model):
        assert all(torch.equal(module.state_dict()[k], v) for k, v in data.ema.items())
    assert trainer.step == 0 and not trainer.optimizer.state  # a fresh run: step 0, fresh optimizer
    result = trainer.fit()
    assert result.step == 2 and result.loss is not None
    raw = _fresh(recipe("model.num_classes=3", f"data.dataset.classes={SOURCE_CLASSES}", f"train.init_from='{path}'",
                        "train.init_weights='raw'"), tmp_path / "raw")
    assert raw.init_report.weights == "raw"
    assert all(torch.equal(raw.model.state_dict()[k], v) for k, v in data.model.items())


def test_other_classes_keep_the_no_class_row_and_same_named_rows(source, tmp_path):
    path, data = source
    new_classes = ["square", "star", "circle", "ring"]  # square and circle were trained; star and ring are new
    overrides = ["model.num_classes=4", f"data.dataset.classes={new_classes}", f"train.init_from='{path}'"]
    with pytest.raises(TrainConfigError) as refused:
        _fresh(recipe(*overrides), tmp_path / "refused")
    message = str(refused.value)
    assert "has 3 classes and the recipe's model 4" in message
    assert "mapping.class_emb.weight (4, 32) vs (5, 32)" in message
    assert 'set train.init_allow = ["classes"]' in message
    torch.manual_seed(0)
    fresh = hourglass.create_model(recipe(*overrides).model)  # what the new rows start from (seeded like the run)
    trainer = _fresh(recipe(*overrides, "train.init_allow=['classes']"), tmp_path / "run")
    report = trainer.init_report
    assert report.counts() == {"loaded": 39, "reshaped": 1, "new": 0, "skipped": 0, "renamed": 0}
    assert report.reshaped == ["mapping.class_emb.weight"]
    assert report.details["mapping.class_emb.weight"] == ("3 -> 4 classes: the no-class row kept, 2 class row(s) kept "
                                                          "by name, 2 re-initialised")
    rows, saved = trainer.model.state_dict()["mapping.class_emb.weight"], data.ema["mapping.class_emb.weight"]
    assert torch.equal(rows[0], saved[1]) and torch.equal(rows[2], saved[0])  # square, circle: by name
    assert torch.equal(rows[4], saved[3])  # the "no class" row: the last one
    assert torch.equal(rows[1], fresh.state_dict()["mapping.class_emb.weight"][1])  # star: freshly initialised
    assert trainer.fit().step == 2


def test_class_rows_without_names_are_all_reinitialised(source):
    _, data = source
    torch.manual_seed(0)
    model = hourglass.create_model(data.model_spec, num_classes=5)
    state, report = adapt_weights(data.ema, data.model_spec, model, allow=["classes"])
    assert report.counts() == {"loaded": 39, "reshaped": 1, "new": 0, "skipped": 0, "renamed": 0}
    assert torch.equal(state["mapping.class_emb.weight"][5], data.ema["mapping.class_emb.weight"][3])
    assert torch.equal(state["mapping.class_emb.weight"][:5], model.state_dict()["mapping.class_emb.weight"][:5])
    # unconditional: the class table is skipped
    state, report = adapt_weights(data.ema, data.model_spec, hourglass.create_model(data.model_spec, num_classes=0),
                                  allow=["classes"])
    assert report.counts() == {"loaded": 39, "reshaped": 0, "new": 0, "skipped": 1, "renamed": 0}


def test_another_resolution(source, tmp_path):
    path, data = source
    overrides = ["model.num_classes=3", f"data.dataset.classes={SOURCE_CLASSES}", f"train.init_from='{path}'",
                 "model.input_size=32"]
    with pytest.raises(TrainConfigError, match=r"trained at 16x16 and the recipe's model is 32x32; no weight changes "
                                               r"shape; set train.init_allow = \[\"resolution\"\]"):
        _fresh(recipe(*overrides), tmp_path / "refused")
    trainer = _fresh(recipe(*overrides, "train.init_allow=['resolution']"), tmp_path / "run")
    assert trainer.init_report.counts() == {"loaded": 40, "reshaped": 0, "new": 0, "skipped": 0, "renamed": 0}
    assert trainer.fit().step == 2


def test_another_resolution_resizes_a_learned_position_table(tmp_path):
    """U-ViT's learned table (8x8 tokens at 16 px) is resized to 16x16 tokens for 32 px, as LearnedPosEmb does."""
    uvit = ["model.preset='uvit_test'", "model.num_classes=6", "model.input_size=16", "data.augment.p=0.0"]
    src_recipe = loads_recipe(tiny_recipe_text().replace("preset = \"hdit_test\"", "preset = \"uvit_test\"").replace(
        "levels = [\n  {depth = 1, width = 32, attention = {type = \"global\", d_head = 16}},\n  {depth = 1, width = 64, "
        "attention = {type = \"global\", d_head = 16}},\n]\n", ""), ["train.steps=2", *uvit[1:]])
    train(src_recipe, tmp_path / "src", report=quiet)
    data = read_checkpoint(tmp_path / "src" / "checkpoints" / "step_00000002.safetensors")
    target = recipe_from_data({**src_recipe.to_data(), "model": {**src_recipe.to_data()["model"], "input_size": 32},
                               "train": {**src_recipe.to_data()["train"], "init_from": str(tmp_path / "src"),
                                         "init_allow": ["resolution"]}})
    trainer = _fresh(target, tmp_path / "run")
    n = len(data.ema)
    assert trainer.init_report.counts() == {"loaded": n - 1, "reshaped": 1, "new": 0, "skipped": 0, "renamed": 0}
    assert trainer.init_report.reshaped == ["abs_pos_emb.weight"]
    table = trainer.model.state_dict()["abs_pos_emb.weight"]
    assert table.shape == (16, 16, 32)
    from hourglass.nn.pos_emb import LearnedPosEmb

    resized = LearnedPosEmb(width=32, grid_size=(8, 8))
    resized.weight.data.copy_(data.ema["abs_pos_emb.weight"])
    assert torch.allclose(table, resized.table(16, 16), atol=1e-6)
    assert trainer.fit().step == 2


def test_a_grown_model_starts_from_the_smaller_one(source, tmp_path):
    path, data = source
    small = recipe("model.num_classes=3", f"data.dataset.classes={SOURCE_CLASSES}")
    grown = {**small.to_data(), "model": grow(small.model, 32)}  # one more outer level, 32 px
    grown["train"] = {**grown["train"], "init_from": str(path)}
    with pytest.raises(TrainConfigError) as refused:
        _fresh(recipe_from_data(grown), tmp_path / "refused")
    assert "the recipe's model has 3 levels and " in str(refused.value) and "35 not in" in str(refused.value)
    assert 'set train.init_allow = ["grow"]' in str(refused.value)
    grown["train"]["init_allow"] = ["grow"]
    lines: list[str] = []
    trainer = _fresh(recipe_from_data(grown), tmp_path / "run", lines)
    report = trainer.init_report
    moved = [k for k in data.ema if k.split(".")[0] in ("encoder", "decoder", "merges", "splits")]
    new = [k for k in trainer.model.state_dict() if k.split(".")[:2] in
           (["encoder", "0"], ["decoder", "0"], ["merges", "0"], ["splits", "0"])]
    assert report.counts() == {"loaded": 40, "reshaped": 0, "new": len(new), "skipped": 0, "renamed": len(moved)}
    assert (len(new), len(moved)) == (35, 19)  # a depth-2 level of width 32 (16 + 16), its merge (1) and split (2)
    state = trainer.model.state_dict()
    assert torch.equal(state["encoder.1.0.ffn.up_proj.weight"], data.ema["encoder.0.0.ffn.up_proj.weight"])
    assert torch.equal(state["middle.0.ffn.up_proj.weight"], data.ema["middle.0.ffn.up_proj.weight"])
    assert torch.equal(state["patch_in.proj.weight"], data.ema["patch_in.proj.weight"])  # pixels -> tokens, copied
    assert lines[1] == "  newly initialised: encoder.0.* (16), decoder.0.* (16), merges.0.proj.weight, splits.0.* (2)"
    assert trainer.fit().step == 2


def test_a_mismatch_no_option_covers_is_refused_naming_it(source, tmp_path, capsys):
    path, _ = source
    r = tmp_path / "r.toml"
    r.write_text(tiny_recipe_text())
    code = main(["train", str(r), "--run-dir", str(tmp_path / "run"), "--set", "model.num_classes=3",
                 "--set", f"data.dataset.classes={SOURCE_CLASSES}", "--set", f"train.init_from='{path}'",
                 "--set", "model.levels[0].width=48", "--set", "train.init_allow=['classes', 'resolution', 'grow']"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "patch_in.proj.weight (32, 48) vs (48, 48)" in err and "no init_allow option covers that" in err
    assert "levels[0].width 32 -> 48" in err
    with pytest.raises(WarmStartError, match="holds a hdit model and the recipe's is a dit model"):
        adapt_weights(read_checkpoint(path / "checkpoints" / "step_00000003.safetensors").ema,
                      read_checkpoint(path / "checkpoints" / "step_00000003.safetensors").model_spec,
                      hourglass.create_model("dit_test"))


def test_resume_wins_over_init_from(source, tmp_path):
    path, _ = source
    overrides = ["model.num_classes=3", f"data.dataset.classes={SOURCE_CLASSES}", f"train.init_from='{path}'"]
    train(recipe(*overrides), tmp_path / "run", report=quiet)
    lines: list[str] = []
    trainer = _fresh(recipe(*overrides, "train.steps=4"), tmp_path / "run", lines)
    assert trainer.init_report is None and trainer.step == 2
    assert any("is ignored" in line and "resuming wins" in line for line in lines)


def test_init_from_a_pretrained_folder_and_a_hub_id(source, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from tests.test_hub import lay_out

    path, data = source
    assert main(["export", str(path), str(tmp_path / "exported")]) == 0
    cache = tmp_path / "cache"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    lay_out(cache, "owner/shapes", tmp_path / "exported", commit="c" * 40, skip=("model.safetensors",))
    base = ["model.num_classes=3", f"data.dataset.classes={SOURCE_CLASSES}"]
    for i, where in enumerate((str(tmp_path / "exported"), "owner/shapes")):
        trainer = _fresh(recipe(*base, f"train.init_from='{where}'"), tmp_path / f"run{i}")
        assert trainer.init_report.counts()["loaded"] == 40 and trainer.init_report.weights == "ema"
        assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in data.ema.items())
    with pytest.raises(hourglass.train.CheckpointError, match="owner/other does not exist here"):
        _fresh(recipe(*base, "train.init_from='owner/other'"), tmp_path / "run9")
