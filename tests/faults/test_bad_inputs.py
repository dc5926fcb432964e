"""Bad CLI arguments and bad model inputs: one clear error naming the problem, never a traceback."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hourglass import create_model
from hourglass.cli import main

from .conftest import REPO, assert_clean_error, run_cli

QUICKSTART = str(REPO / "recipes" / "quickstart.toml")

CLI_CASES = [
    (["frobnicate"], ["invalid choice", "frobnicate"]),
    (["train", QUICKSTART, "--no-such-flag"], ["unrecognized arguments", "--no-such-flag"]),
    (["train", "/nonexistent/recipe.toml"], ["/nonexistent/recipe.toml"]),
    (["sample", "/nonexistent/run"], ["/nonexistent/run", "does not exist"]),
    (["validate", "/nonexistent.toml"], ["/nonexistent.toml"]),
    (["build", QUICKSTART, "--set", "model.levels[0].depth=-1"], ["model.levels[0].depth"]),
    (["build", QUICKSTART, "--set", "train.lr=abc"], ["train.lr"]),
    (["build", QUICKSTART, "--set", "novalue"], ["novalue"]),
    (["build", QUICKSTART, "--set", "model.no_such_field=1"], ["no_such_field"]),
    (["build", QUICKSTART, "--set", "model.levels[9].depth=1"], ["levels[9]"]),
    (["build", QUICKSTART, "--set", "diffusion.weighting=os.system"], ["diffusion.weighting"]),
    (["train", QUICKSTART, "--max-bad-steps", "0"], ["--max-bad-steps"]),
    (["train", QUICKSTART, "--max-bad-steps", "many"], ["--max-bad-steps"]),
    (["build", "no_such_preset"], ["no_such_preset"]),
    (["sample", QUICKSTART, "--n", "0"], ["--n"]),
    (["convert", "k-diffusion", "/nonexistent.json", "/nonexistent.pth", "/tmp/x"], ["/nonexistent"]),
]


def test_cli_bad_arguments_are_one_message_without_traceback(tmp_path, capsys, monkeypatch):
    """In-process (hourglass.cli.main): an exception escaping main() is what prints a traceback."""
    monkeypatch.chdir(tmp_path)
    failures = []
    for argv, needles in CLI_CASES:
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:  # would be a traceback on the command line
            failures.append(f"{argv}: escaped main() as {type(exc).__name__}: {exc}")
            continue
        err = capsys.readouterr().err
        missing = [n for n in needles if n.lower() not in err.lower()]
        if code != 2 or missing:
            failures.append(f"{argv}: exit {code}, missing {missing} in {err[:300]!r}")
    print(f"FAULTS cli: {len(CLI_CASES)} bad command lines, {len(CLI_CASES) - len(failures)} clean")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("argv", [["frobnicate"], ["train", "/nonexistent/recipe.toml"]])
def test_cli_subprocess_stderr_has_no_traceback(tmp_path, argv):
    assert_clean_error(run_cli(*argv, cwd=tmp_path), argv[-1])


def test_recipe_that_is_not_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\ntype = ")
    assert_clean_error(run_cli("validate", str(bad)), "bad.toml")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("hdit_test", num_classes=4, input_size=16).eval()


def _inputs(model, **change):
    h = w = 16
    args = {"x": torch.randn(2, 3, h, w), "sigma": torch.ones(2), "class_cond": torch.tensor([0, 1])}
    args.update(change)
    return args


BAD_MODEL_INPUTS = {
    "channels": ({"x": torch.randn(2, 4, 16, 16)}, ValueError, "channels"),
    "indivisible size": ({"x": torch.randn(2, 3, 15, 16)}, ValueError, "divisible"),
    "3d x": ({"x": torch.randn(3, 16, 16)}, ValueError, "(B, C, H, W)"),
    "integer dtype": ({"x": torch.zeros(2, 3, 16, 16, dtype=torch.int64)}, TypeError, "floating"),
    "nan sigma": ({"sigma": torch.tensor([1.0, math.nan])}, ValueError, "sigma"),
    "inf sigma": ({"sigma": torch.tensor([1.0, math.inf])}, ValueError, "sigma"),
    "zero sigma": ({"sigma": 0.0}, ValueError, "sigma"),
    "negative sigma": ({"sigma": -1.0}, ValueError, "sigma"),
    "sigma shape": ({"sigma": torch.ones(3)}, ValueError, "sigma"),
    "class too big": ({"class_cond": torch.tensor([0, 5])}, ValueError, "class_cond"),
    "class negative": ({"class_cond": torch.tensor([-1, 0])}, ValueError, "class_cond"),
    "class float": ({"class_cond": torch.tensor([0.0, 1.0])}, ValueError, "class_cond"),
    "class missing": ({"class_cond": None}, ValueError, "class_cond"),
    "class shape": ({"class_cond": torch.tensor([0])}, ValueError, "class_cond"),
    "aug_cond shape": ({"aug_cond": torch.zeros(2, 8)}, ValueError, "aug_cond"),
    "mapping_cond on a model without": ({"mapping_cond": torch.zeros(2, 4)}, ValueError, "mapping_cond"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODEL_INPUTS))
def test_bad_model_inputs_raise_one_clear_error(model, case):
    change, error, needle = BAD_MODEL_INPUTS[case]
    with pytest.raises(error) as info:
        with torch.no_grad():
            model(**_inputs(model, **change))
    assert needle.lower() in str(info.value).lower(), str(info.value)


def test_good_inputs_still_work(model):
    with torch.no_grad():
        out = model(**_inputs(model))
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


# -- wrong files, missing data, missing plugins, wrong types (issue #15) ---------------------------
def _one_line_error(argv, capsys, *needles):
    """In-process ``main(argv)``: exit 2, exactly one line on stderr naming the needles, no warning
    (on the command line each warning is a line of its own), no traceback."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    err = capsys.readouterr().err
    problems = []
    if code != 2:
        problems.append(f"exit {code}")
    if err.count("\n") != 1 or not err.startswith("hourglass "):
        problems.append(f"{err.count(chr(10))} lines")
    if caught:
        problems.append(f"warnings {[str(w.message)[:80] for w in caught]}")
    problems += [f"missing {n!r}" for n in needles if n.lower() not in err.lower()]
    return f"{argv}: {', '.join(problems)} in {err[:400]!r}" if problems else None


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A trained tiny run, and files and folders of every wrong kind."""
    import json
    import pickle

    from hourglass.recipe import loads_recipe
    from hourglass.train import train
    from hourglass.train.checkpoint import checkpoint_path, read_checkpoint, save_checkpoint

    from .conftest import TINY_RECIPE

    root = tmp_path_factory.mktemp("zoo")
    run = root / "run"
    train(loads_recipe(TINY_RECIPE, ["train.steps=1"]), run, report=lambda _: None)
    recipe = root / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "image.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "photo.jpg")
    torch.save({"w": torch.ones(2)}, root / "model.pth")
    torch.save({"w": torch.ones(2)}, root / "legacy.pt", _use_new_zipfile_serialization=False)
    (root / "pickled.ckpt").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    (root / "empty.safetensors").write_bytes(b"")
    (root / "random.bin").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    (root / "config.json").write_text(json.dumps({"model": {
        "type": "image_transformer_v2", "input_channels": 3, "input_size": [32, 32], "patch_size": [4, 4],
        "depths": [1, 1], "widths": [32, 64], "self_attns": [{"type": "global", "d_head": 16}] * 2,
        "mapping_depth": 1, "mapping_width": 64}}))
    (root / "notes.txt").write_text("just text\n")
    (root / "empty_dir").mkdir()
    (root / "empty_images").mkdir()
    (root / "broken_images").mkdir()
    (root / "broken_images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    # a run whose model needs an attention kind registered nowhere (as a plugin that is not installed)
    saved = read_checkpoint(checkpoint_path(run, 1))
    spec = saved.model_spec
    spec["levels"][0]["attention"]["type"] = "no_such_kind"
    save_checkpoint(checkpoint_path(root / "plugin_run", 1), step=1, model=saved.model, ema=saved.ema,
                    recipe_toml=saved.recipe_toml.replace('"global"', '"no_such_kind"', 1), model_spec=spec)
    return root


def _recipe_with(zoo, dataset: str, extra: str = "") -> str:
    import hashlib

    from .conftest import TINY_RECIPE

    path = zoo / f"recipe_{hashlib.sha1((dataset + extra).encode()).hexdigest()[:8]}.toml"
    text = TINY_RECIPE.replace('dataset = {type = "shapes", size = 64}', f"dataset = {dataset}") + extra
    if "imagefolder" in dataset:
        text = text.replace("num_classes = 6", "num_classes = 0")  # an unlabelled folder
    path.write_text(text)
    return str(path)


def wrong_input_cases(zoo):
    run, ckpt = zoo / "run", zoo / "run" / "checkpoints" / "step_00000001.safetensors"
    missing = _recipe_with(zoo, f'{{type = "imagefolder", root = "{zoo / "no_such_folder"}"}}')
    empty = _recipe_with(zoo, f'{{type = "imagefolder", root = "{zoo / "empty_images"}"}}')
    broken = _recipe_with(zoo, f'{{type = "imagefolder", root = "{zoo / "broken_images"}"}}')
    return [
        # files that are not checkpoints
        (["sample", zoo / "tiny.toml"], ["is a recipe, not a checkpoint", "hourglass train", "run directory"]),
        (["sample", zoo / "image.png"], ["is a PNG image, not a checkpoint", "run directory"]),
        (["sample", zoo / "photo.jpg"], ["is a JPEG image"]),
        (["sample", zoo / "model.pth"], ["is a PyTorch checkpoint", "safetensors", "hourglass convert k-diffusion"]),
        (["sample", zoo / "legacy.pt"], ["is a PyTorch pickle", "hourglass convert k-diffusion"]),
        (["sample", zoo / "pickled.ckpt"], ["is a PyTorch pickle"]),
        (["sample", zoo / "empty.safetensors"], ["is an empty file (0 bytes)"]),
        (["sample", zoo / "random.bin"], ["is not a safetensors checkpoint", "neither a safetensors header"]),
        (["sample", zoo / "config.json"], ["is a JSON file, not a checkpoint", "hourglass convert k-diffusion"]),
        (["sample", zoo / "notes.txt"], ["is a text file, not a checkpoint"]),
        (["sample", zoo / "empty_dir"], ["is a folder without checkpoints"]),
        (["sample", run / "samples"], ["is a folder of images", "not a run directory"]),
        (["sample", run / "checkpoints"], ["is the checkpoints folder of run directory", str(run)]),
        (["show", zoo / "random.bin"], ["is not a safetensors checkpoint"]),
        (["eval", "--checkpoint", zoo / "tiny.toml", "--val-loss"], ["is a recipe, not a checkpoint"]),
        (["eval", "--checkpoint", zoo / "image.png", "--val-loss"], ["is a PNG image"]),
        # files that are not recipes
        (["train", ckpt], ["a safetensors file (a checkpoint?), not a TOML recipe", "hourglass sample"]),
        (["train", run], ["a folder, not a recipe file", f"--run-dir {run}"]),
        (["validate", zoo / "model.pth", "--json"], []),  # (the report is JSON on stdout)
        (["train", zoo / "image.png"], ["a PNG image, not a TOML recipe"]),
        # convert given the wrong files
        (["convert", "k-diffusion", zoo / "model.pth", zoo / "config.json", zoo / "out"],
         ["not a k-diffusion config JSON", "the arguments are CONFIG.json CHECKPOINT OUT_DIR"]),
        (["convert", "k-diffusion", zoo / "tiny.toml", zoo / "model.pth", zoo / "out"], ["is an hourglass recipe"]),
        (["convert", "k-diffusion", zoo / "config.json", zoo / "image.png", zoo / "out"],
         ["is a PNG image, not a k-diffusion checkpoint"]),
        (["convert", "k-diffusion", zoo / "config.json", ckpt, zoo / "out"], ["already an hourglass checkpoint"]),
        (["convert", "k-diffusion", zoo / "config.json", zoo / "random.bin", zoo / "out"],
         ["neither a safetensors nor a PyTorch file"]),
        (["convert", "k-diffusion", zoo / "config.json", zoo / "model.pth", zoo / "notes.txt"], ["is a file"]),
        # data that is not there
        (["train", missing, "--run-dir", zoo / "r1"], ["data.dataset.root", "does not exist", "--set data.dataset.root"]),
        (["train", empty, "--run-dir", zoo / "r2"], ["data.dataset.root", "holds no image file"]),
        (["train", broken, "--run-dir", zoo / "r3"], ["none of the 1 image files", "a.png"]),
        (["eval", run / "samples", "--dataset", f'{{type = "imagefolder", root = "{zoo / "no_such_folder"}"}}'],
         ["dataset imagefolder", "does not exist"]),
        # a component nobody registered (a plugin that is not installed)
        (["sample", zoo / "plugin_run", "--n", "1"],
         ["needs attention 'no_such_kind' (model.levels[0].attention), not registered here", "install or enable"]),
        (["eval", "--checkpoint", zoo / "plugin_run", "--val-loss"], ["needs attention 'no_such_kind'"]),
        # wrong types
        (["train", zoo / "tiny.toml", "--set", "data.batch_size=true"],
         ["data.batch_size = True", "true/false is not a number"]),
        (["train", zoo / "tiny.toml", "--set", 'data.batch_size="32"'],
         ["data.batch_size = '32'", "write 32 without quotes"]),
        (["build", zoo / "tiny.toml", "--set", "runtime.compile=1"], ["runtime.compile = 1", "true or false"]),
        (["train", zoo / "tiny.toml", "--set", "data.dataset.channels=true"], ["data.dataset.channels = True"]),
        # classes
        (["sample", run, "--class", "lion"], ["'lion' is not a class", "0 circle", "5 ring"]),
        (["sample", run, "--class", "2.5"], ["'2.5' is not a class"]),
    ]


def test_wrong_inputs_are_one_line_exit_2_without_traceback(zoo, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = wrong_input_cases(zoo)
    failures = []
    for argv, needles in cases:
        if argv[0] == "validate":
            code = main([str(a) for a in argv])
            out, err = capsys.readouterr()
            if code != 2 or err or "not a TOML recipe" not in out:
                failures.append(f"{argv}: exit {code}, stderr {err!r}, stdout {out[:200]!r}")
            continue
        failure = _one_line_error(argv, capsys, *needles)
        if failure:
            failures.append(failure)
    print(f"FAULTS wrong inputs: {len(cases)} wrong files, folders, data, plugins and types, "
          f"{len(cases) - len(failures)} one-line errors")
    assert not failures, "\n".join(failures)
    assert not (zoo / "out").exists() and not (zoo / "r1").exists() and not (zoo / "r2").exists()


def test_validate_reports_missing_data_with_the_path_and_no_traceback(zoo, capsys):
    missing = _recipe_with(zoo, f'{{type = "imagefolder", root = "{zoo / "no_such_folder"}"}}')
    assert main(["validate", missing]) == 2
    err = capsys.readouterr().err
    assert f"data.dataset.root = '{zoo / 'no_such_folder'}': folder" in err and "does not exist" in err
    assert "Traceback" not in err
    assert main(["validate", missing, "--no-data-check"]) == 0


def test_missing_data_in_a_real_train_process_is_one_line(zoo, tmp_path):
    """The report of issue #15: on the command line, a missing image folder is one line, exit 2."""
    missing = _recipe_with(zoo, f'{{type = "imagefolder", root = "{zoo / "no_such_folder"}"}}')
    proc = run_cli("train", missing, "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert_clean_error(proc, "data.dataset.root", "does not exist")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_of_a_disabled_plugin_is_one_line_naming_it(tmp_path):
    """A dinat run sampled with HOURGLASS_DISABLE_PLUGINS=dinat: the component, the plugin, its state."""
    import os
    import subprocess
    import sys

    from hourglass.registry import ATTENTION

    if "dinat" not in ATTENTION:
        pytest.skip("the hourglass-dinat plugin is not installed")
    from hourglass.recipe import build_model, load_recipe
    from hourglass.train.checkpoint import checkpoint_path, save_checkpoint

    recipe = load_recipe(REPO / "plugins" / "hourglass-dinat" / "recipe.toml")
    model = build_model(recipe, device="cpu")
    save_checkpoint(checkpoint_path(tmp_path / "dn", 1), step=1, model=model.state_dict(), ema=model.state_dict(),
                    recipe_toml=recipe.to_toml(), model_spec=recipe.to_data()["model"])
    from .conftest import child_env

    env = child_env() | {"HOURGLASS_DISABLE_PLUGINS": "dinat"}
    proc = subprocess.run([sys.executable, "-m", "hourglass", "sample", str(tmp_path / "dn"), "--n", "1"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert_clean_error(proc, "needs attention 'dinat' (model.levels[0].attention)", "hourglass-dinat 0.1.0",
                       "disabled by HOURGLASS_DISABLE_PLUGINS: dinat")
    assert proc.stderr.count("\n") == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    assert os.listdir(tmp_path) == ["dn"]
