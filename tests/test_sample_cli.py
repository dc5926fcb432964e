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
        (["--device", "cuda:7"], "'cuda:7' was requested but this machine has no cuda device"),
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


def test_one_image_is_singular(run_dir, tmp_path, capsys):
    assert main(["sample", str(run_dir), "--n", "1", "--steps", "1", "--out", str(tmp_path / "one")]) == 0
    text = capsys.readouterr().out
    assert text.startswith("sampling 1 image at 16x16") and "wrote 1 image " in text and "1 images" not in text


@pytest.fixture
def pictures(tmp_path):
    """Two 24x40 RGB inputs in a folder, and a mask of the same size: white (generate) on the right 40%."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(folder / name)
    mask = np.zeros((24, 40), dtype=np.uint8)
    mask[:, 24:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return folder, tmp_path / "mask.png"


def test_image_to_image_writes_results_and_a_grid(run_dir, pictures, tmp_path, capsys):
    folder, _ = pictures
    out = tmp_path / "i2i"
    args = ["sample", str(run_dir), "--init", str(folder), "--strength", "0.5", "--steps", "4", "--n", "3",
            "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "image-to-image on 3 images at 16x16" in text and "strength 0.5 (2 of 4 steps), euler, 4 steps, no class" in text
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png", "grid.png"]
    grid = _pixels(out / "grid.png")
    assert grid.shape == (2 * 18 + 2, 3 * 18 + 2, 3)  # a row of inputs (a, b, a), a row of results
    assert np.array_equal(grid[2:18, 2:18], grid[2:18, 38:54])  # input 0 shown again for the third image
    assert np.array_equal(grid[20:36, 2:18], _pixels(out / "000000.png"))
    # the default output folder is named after the edit
    assert main(["sample", str(run_dir), "--init", str(folder / "a.png"), "--steps", "2", "--no-images"]) == 0
    assert (run_dir / "samples" / "step_00000003-img2img" / "grid.png").is_file()


def test_inpaint_keeps_the_black_part_of_the_mask(run_dir, pictures, tmp_path, capsys):
    folder, mask = pictures
    out = tmp_path / "fill"
    assert main(["sample", str(run_dir), "--init", str(folder), "--mask", str(mask), "--steps", "3",
                 "--out", str(out), "--class", "2", "--cfg", "2"]) == 0
    text = capsys.readouterr().out
    assert "inpainting 2 images" in text and "strength 1.0 (3 of 3 steps), euler, 3 steps, cfg 2.0," in text
    grid = _pixels(out / "grid.png")
    assert grid.shape == (3 * 18 + 2, 2 * 18 + 2, 3)  # inputs, masks, results
    # 24x40 -> 16x27 (cover), centre crop of columns 5..20: mask columns >= 24 are crop columns >= 11 (+- blend)
    shown_mask = grid[20:36, 2:18]
    assert (shown_mask[:, :9] == 0).all() and (shown_mask[:, 12:] == 255).all()
    for i in range(2):
        result, given = _pixels(out / f"{i:06d}.png"), grid[2:18, 2 + 18 * i : 18 + 18 * i]
        assert np.array_equal(result[:, :9], given[:, :9])  # kept exactly
        assert not np.array_equal(result[:, 12:], given[:, 12:])  # generated


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--init", "{tmp}/missing.png"], "--init: image {tmp}/missing.png does not exist"),
        (["--init", "{tmp}/notes.txt"], "--init: {tmp}/notes.txt is not an image file: expected one of .png"),
        (["--init", "{tmp}/broken.png"], "--init: cannot read {tmp}/broken.png as an image"),
        (["--init", "{tmp}/empty"], "--init: folder {tmp}/empty holds no image files"),
        (["--init", "{inputs}", "--strength", "0"], "--strength must be in (0, 1]"),
        (["--init", "{inputs}", "--strength", "1.01"], "--strength must be in (0, 1]"),
        (["--strength", "0.5"], "--strength edits images: give the images with --init"),
        (["--mask", "{mask}"], "--mask edits images: give the images with --init"),
        (["--init", "{inputs}", "--mask", "{tmp}/missing.png"], "--mask: image {tmp}/missing.png does not exist"),
        (["--init", "{inputs}", "--mask", "{masks}"], "--mask gives 3 masks for 2 images of --init"),
        (["--init", "{inputs}", "--class", "hexagon"], "--class hexagon: 'hexagon' is not a class of this model"),
    ],
)
def test_bad_edit_arguments_give_one_line_errors(run_dir, pictures, tmp_path, capsys, extra, message):
    folder, mask = pictures
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "empty").mkdir()
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(3):
        Image.new("L", (8, 8)).save(masks / f"{i}.png")
    fill = {"tmp": str(tmp_path), "inputs": str(folder), "mask": str(mask), "masks": str(masks)}
    args = [a.format(**fill) for a in extra]
    assert main(["sample", str(run_dir), "--steps", "1", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hourglass sample: error: ") and message.format(**fill) in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_edit_errors_without_a_traceback_in_a_subprocess(run_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "bad.png").write_bytes(b"not an image")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-m", "hourglass", "sample", str(run_dir), "--init",
                             str(tmp_path / "bad.png")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"hourglass sample: error: --init: cannot read {tmp_path / 'bad.png'} as an image: "
        f"cannot identify image file '{tmp_path / 'bad.png'}'"
    ]


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
