"""Bad CLI arguments and bad model inputs: one clear error naming the problem, never a traceback."""

from __future__ import annotations

import math

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
