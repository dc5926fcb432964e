"""``hourglass sample``: grids and images from a tiny training run, seeds, and the error messages."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from hourglass.cli import main
from hourglass.train import train
from tests.test_train_loop import one_thread, quiet, tiny_recipe  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("run")
    train(tiny_recipe("train.steps=3", "train.checkpoint_every=3"), path, report=quiet)
    torch.set_num_threads(threads)
    return path


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_sample_writes_images_and_a_grid(run_dir, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["sample", str(run_dir), "--n", "7", "--batch-size", "3", "--steps", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "EMA weights" in text and "from step 3" in text and "euler, 2 steps" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:06d}.png" for i in range(7)] + ["grid.png"]
    grid = _pixels(out / "grid.png")
    assert grid.shape == (2 * 18 + 2, 6 * 18 + 2, 3)  # 6 classes per row, 7 images -> 2 rows
    first = _pixels(out / "000000.png")
    assert first.shape == (16, 16, 3) and first.std() > 0
    assert np.array_equal(grid[2:18, 2:18], first)


def test_same_seed_same_images_whatever_the_batch_size(run_dir, tmp_path):
    common = ["sample", str(run_dir), "--n", "4", "--steps", "2", "--sampler", "euler_ancestral", "--seed", "5"]
    assert main(common + ["--batch-size", "1", "--out", str(tmp_path / "b1"), "--no-grid"]) == 0
    assert main(common + ["--batch-size", "4", "--out", str(tmp_path / "b4"), "--no-grid"]) == 0
    for i in range(4):
        a, b = _pixels(tmp_path / "b1" / f"{i:06d}.png"), _pixels(tmp_path / "b4" / f"{i:06d}.png")
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert main(common[:-1] + ["6", "--batch-size", "4", "--out", str(tmp_path / "s6"), "--no-grid"]) == 0
    assert not np.array_equal(_pixels(tmp_path / "b4" / "000000.png"), _pixels(tmp_path / "s6" / "000000.png"))


def test_no_ema_class_cfg_and_grid_only(run_dir, tmp_path, capsys):
    ckpt = run_dir / "checkpoints" / "step_00000003.safetensors"
    out = tmp_path / "c"
    args = ["sample", str(ckpt), "--n", "3", "--steps", "2", "--no-ema", "--class", "2", "--cfg", "2.0",
            "--no-images", "--out", str(out), "--resolution", "24", "--dtype", "float32", "--device", "cpu"]
    assert main(args) == 0
    assert "raw trained weights" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"]
    assert _pixels(out / "grid.png").shape == (2 * 26 + 2, 2 * 26 + 2, 3)


def test_default_output_folder_is_in_the_run(run_dir):
    assert main(["sample", str(run_dir), "--n", "2", "--steps", "1", "--class", "none"]) == 0
    assert (run_dir / "samples" / "step_00000003" / "grid.png").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sampler", "eular"], "unknown sampler 'eular'; known samplers: dpm_2, "),
        (["--steps", "0"], "--steps must be a positive integer, got 0"),
        (["--n", "-2"], "--n must be a positive integer"),
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--class", "6"], "--class 6: '6' is not a class of this model; its classes (id name): 0 circle, 1 square, "
                           "2 triangle, 3 cross, 4 star, 5 ring, or 'none'"),
        (["--class", "circle,hexagon"], "--class circle,hexagon: 'hexagon' is not a class of this model; its classes"),
        (["--resolution", "20"], "--resolution 20x20 does not fit this model"),
        (["--cfg", "nan"], "--cfg must be a finite number"),
        (["--device", "cuda:7"] , "CUDA is not available"),
    ],
)
def test_bad_arguments_give_one_line_errors(run_dir, capsys, extra, message):
    import torch

    if extra[0] == "--device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["sample", str(run_dir), "--n", "2", "--steps", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hourglass sample: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_or_empty_checkpoint(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nope.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sample", str(tmp_path)]) == 2
    assert "is a folder without checkpoints" in capsys.readouterr().err


def test_class_names_are_saved_listed_and_accepted_by_class(run_dir, tmp_path, capsys):
    import json

    from hourglass.train.checkpoint import read_checkpoint, read_class_names

    shapes = ["circle", "square", "triangle", "cross", "star", "ring"]
    assert json.loads((run_dir / "classes.json").read_text()) == shapes
    ckpt = run_dir / "checkpoints" / "step_00000003.safetensors"
    assert read_checkpoint(ckpt, tensors=False).class_names == shapes
    assert read_class_names(run_dir) == read_class_names(ckpt) == shapes
    assert main(["sample", str(run_dir), "--list-classes"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{i}\t{n}" for i, n in enumerate(shapes)]
    out = tmp_path / "named"
    args = ["sample", str(ckpt), "--n", "3", "--steps", "1", "--no-grid", "--out", str(out)]
    assert main([*args, "--class", "star,Ring,0"]) == 0
    by_name = [_pixels(out / f"{i:06d}.png") for i in range(3)]
    assert main([*args, "--class", "4,5,circle"]) == 0
    assert all(np.array_equal(a, _pixels(out / f"{i:06d}.png")) for i, a in enumerate(by_name))


def test_show_a_run_prints_its_recipe_step_and_class_names(run_dir, capsys):
    import json

    assert main(["show", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert f"{run_dir}: checkpoint {run_dir / 'checkpoints' / 'step_00000003.safetensors'}, step 3" in text
    assert "model: hdit at 16x16, 3 channel(s), 6 classes" in text and "data: shapes" in text
    assert "classes (6, id name): 0 circle, 1 square, 2 triangle, 3 cross, 4 star, 5 ring" in text
    assert main(["show", str(run_dir / "checkpoints" / "step_00000003.safetensors"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["step"] == 3 and shown["class_names"][4] == "star" and shown["model"]["num_classes"] == 6


def test_class_ids_take_names_then_ids():
    from hourglass.train.sampling import class_ids

    names = ["circle", "square", "Star", "star2"]
    assert class_ids("circle,3, square ,STAR,none", 4, names) == [0, 3, 1, 2, 4]
    assert class_ids(["star2", 1], 4, names) == [3, 1]
    assert class_ids("7,3", 2, ["3", "7"]) == [1, 0]  # a name wins over the id it spells
    assert class_ids("0,1", 2, None) == [0, 1]
    for bad, needle in [("hexagon", "'hexagon' is not a class of this model; its classes (id name): 0 circle"),
                        ("4", "'4' is not a class"), ("1.5", "'1.5' is not a class"), ("", "'' is not a class")]:
        with pytest.raises(ValueError, match=re.escape(needle)):
            class_ids(bad, 4, names)
    with pytest.raises(ValueError, match=r"give class ids 0\.\.1 \(this run recorded no class names\)"):
        class_ids("x", 2, None)
    with pytest.raises(ValueError, match="has no classes"):
        class_ids("0", 0)
