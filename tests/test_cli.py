"""The ``hourglass`` command line: paper numbers, error handling, every command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hourglass.cli import COMMANDS, main
from hourglass.recipe import toml
from tests._tiny import SMALL_RECIPE

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

TINY = SMALL_RECIPE


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- help -----------------------------------------------------------------------------------------
def test_python_m_hourglass_help():
    proc = subprocess.run([sys.executable, "-m", "hourglass", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("build", "validate", "list", "show", "flops", "convert", "plugins", "--strict-plugins"):
        assert command in proc.stdout


def test_every_command_has_help_with_examples(capsys):
    from hourglass.cli import build_parser

    parser = build_parser()
    names = [a for a in parser._subparsers._group_actions[0].choices]  # noqa: SLF001 - argparse has no public API
    assert len(names) == len(COMMANDS)
    for name in names:
        code, out, _ = run(capsys, name, "--help")
        assert code == 0 and "examples:" in out and "hourglass " + name in out


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "commands" in out


# -- build: the paper's numbers -------------------------------------------------------------------
@pytest.mark.parametrize("name, params_m, gmacs", [
    ("hdit_ffhq1024", 85.1, 206.1),
    ("hdit_imagenet256", 557.4, 197.6),
    ("hdit_imagenet128", 117.0, 31.4),
])
def test_build_json_reproduces_table_7(capsys, name, params_m, gmacs):
    code, out, err = run(capsys, "build", str(RECIPES / f"{name}.toml"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert isinstance(report["params"], int) and isinstance(report["gmacs"], float)
    assert abs(report["params"] / 1e6 - params_m) / params_m < 0.005
    assert abs(report["gmacs"] - gmacs) / gmacs < 0.02
    levels = report["levels"]
    assert [lv["level"] for lv in levels] == list(range(len(levels)))
    assert sum(lv["params"] for lv in levels) + sum(p["params"] for p in report["other"]) == report["params"]
    assert abs(sum(lv["gmacs"] for lv in levels) + sum(p["gmacs"] for p in report["other"]) - report["gmacs"]) < 1e-6


def test_build_table_for_a_preset_at_another_resolution(capsys):
    code, out, err = run(capsys, "build", "hdit_test", "--resolution", "64")
    assert code == 0, err
    assert "64x64" in out and "16x16" in out and "neighborhood k3" in out and "global" in out
    assert "total" in out and "GMACs" in out


def test_build_set_override_changes_the_model(capsys, tmp_path):
    path = write(tmp_path, TINY)
    _, out1, _ = run(capsys, "build", path, "--json")
    _, out2, _ = run(capsys, "build", path, "--json", "--set", "model.levels[0].depth=3")
    assert json.loads(out2)["params"] > json.loads(out1)["params"]
    assert json.loads(out2)["levels"][0]["layers"] == 6


def test_build_reports_backend_choice(capsys, tmp_path):
    path = write(tmp_path, TINY + '\n[runtime]\ndevice = "cpu"\nbackends = { global = "torch" }\n')
    code, out, err = run(capsys, "build", path, "--json")
    assert code == 0, err
    assert json.loads(out)["levels"][1]["backend"] == "torch"


def test_build_unknown_target(capsys):
    code, _, err = run(capsys, "build", "hdit_tset")
    assert code == 2 and "Did you mean 'hdit_test'" in err and "Traceback" not in err


# -- errors: exit 2, the path, no traceback -------------------------------------------------------
BROKEN = {
    "wrong type": (TINY.replace("depth = 1\nwidth = 32", 'depth = "one"\nwidth = 32'), "model.levels[0].depth"),
    "missing field": (TINY.replace("depth = 1\nwidth = 64", "width = 64"), "model.levels[1].depth"),
    "unknown component": (TINY.replace('type = "global"', 'type = "globl"'), "model.levels[1].attention"),
    "unknown key": (TINY.replace("batch_size = 8", "batchsize = 8"), "data.batchsize"),
    "impossible shape": (TINY.replace("kernel_size = 3", "kernel_size = 11"), "model.levels[0].attention.kernel_size"),
    "indivisible width": (TINY.replace("width = 64", "width = 72"), "model.levels[1].width"),
    "indivisible image": (TINY.replace("input_size = 32", "input_size = 36"), "model.input_size"),
    "bad toml": (TINY.replace("[data]", "[data"), "line 17, column 6"),
}


@pytest.mark.parametrize("command", ["build", "validate"])
@pytest.mark.parametrize("mistake", sorted(BROKEN))
def test_broken_recipes_exit_2_with_the_path(capsys, tmp_path, command, mistake):
    text, where = BROKEN[mistake]
    code, _, err = run(capsys, command, write(tmp_path, text))
    assert code == 2
    assert where in err
    assert "Traceback" not in err and "pydantic" not in err.lower().replace("pydantic_core", "")


def test_validate_reports_every_problem_of_every_file(capsys, tmp_path):
    bad = write(tmp_path, TINY.replace("batch_size = 8", "batch_size = 0\nnum_workers = -1"), "bad.toml")
    good = write(tmp_path, TINY, "good.toml")
    code, out, err = run(capsys, "validate", good, bad)
    assert code == 2
    assert "ok   " in out and "data.batch_size" in err and "data.num_workers" in err and "2 problems" in err
    code, out, _ = run(capsys, "validate", good, bad, "--json")
    results = json.loads(out)["results"]
    assert [r["ok"] for r in results] == [True, False] and len(results[1]["problems"]) == 2


def test_validate_every_shipped_recipe(capsys):
    paths = [str(p) for p in sorted(RECIPES.glob("**/*.toml"))]
    code, out, err = run(capsys, "validate", *paths, "--no-data-check")  # their image folders live elsewhere
    assert code == 0, err
    assert f"{len(paths)} of {len(paths)} recipes valid" in out


def test_validate_looks_for_the_data(capsys, tmp_path):
    imagenet = str(RECIPES / "hdit_imagenet128.toml")
    code, out, err = run(capsys, "validate", imagenet)
    assert code == 2 and "data.dataset.root = '/path/to/imagenet/train': folder '/path/to/imagenet/train' " \
        "does not exist" in err and "--set data.dataset.root=" in err
    (tmp_path / "train").mkdir()
    code, out, err = run(capsys, "validate", imagenet, "--set", f"data.dataset.root={tmp_path / 'train'}")
    assert code == 2 and "holds no image inside a class subfolder" in err
    code, out, err = run(capsys, "validate", imagenet, "--no-data-check")
    assert code == 0 and out.startswith("ok ")


def test_validate_print_writes_loadable_toml(capsys, tmp_path):
    code, out, _ = run(capsys, "validate", write(tmp_path, TINY), "--print")
    assert code == 0
    text = out.split("\n", 1)[1]
    assert toml.loads(text)["train"]["lr"] == 5e-4


def test_bad_set_expression(capsys, tmp_path):
    code, _, err = run(capsys, "validate", write(tmp_path, TINY), "--set", "train.lr")
    assert code == 2 and "key=value" in err and "Traceback" not in err


def test_set_of_a_component_type_prints_what_it_keeps_and_drops(capsys, tmp_path):
    path = write(tmp_path, TINY)
    code, out, err = run(capsys, "validate", path, "--set", "model.levels[0].attention.type=shifted_window",
                         "--set", "model.levels[0].attention.window_size=4")
    assert code == 0, err
    assert err.splitlines() == ["note: model.levels[0].attention: type neighborhood -> shifted_window keeps d_head; "
                                "drops kernel_size (not options of shifted_window)"]
    code, out, err = run(capsys, "build", path, "--json", "--set", "model.levels[0].attention.type=global")
    assert code == 0 and "keeps d_head; drops kernel_size" in err


def test_warnings_print_as_one_line_during_a_command(capsys, tmp_path):
    import warnings

    from hourglass.cli import _warning_line

    line = _warning_line("train")("skipped 2 of 9 images:\n  a.png (bad)", UserWarning, "x.py", 3, "code")
    assert line == "hourglass train: warning: skipped 2 of 9 images: a.png (bad)\n"
    import hourglass.cli.validate as validate_command

    before = warnings.formatwarning
    seen = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validate_command, "run", lambda args: seen.append(warnings.formatwarning) or 0)
        assert run(capsys, "validate", write(tmp_path, TINY))[0] == 0
    assert seen[0]("a\nb", UserWarning, "x.py", 1) == "hourglass validate: warning: a b\n"  # while the command runs
    assert warnings.formatwarning is before  # restored after it


# -- flops ----------------------------------------------------------------------------------------
def _gmacs(capsys, *argv) -> list[float]:
    code, out, err = run(capsys, "flops", *argv, "--json")
    assert code == 0, err
    return [row["gmacs"] for row in json.loads(out)["rows"]]


def test_flops_grow_matches_the_paper_ladder(capsys):
    got = _gmacs(capsys, str(RECIPES / "hdit_imagenet128.toml"), "--resolution", "128", "256", "512", "--grow")
    for value, paper in zip(got, (31, 65, 198), strict=True):
        assert abs(value - paper) / paper < 0.03
    # the global-only rung grows global levels: quadratic cost (arXiv 2401.11605, Table 1, step A: 32 / 114 / 1060)
    got = _gmacs(capsys, str(RECIPES / "ablation" / "1_global_only.toml"), "-r", "128", "256", "512", "--grow")
    for value, paper in zip(got, (32, 114, 1060), strict=True):
        assert abs(value - paper) / paper < 0.03


def test_flops_without_grow_keeps_the_model(capsys):
    code, out, _ = run(capsys, "flops", "hdit_imagenet128", "--resolution", "128", "256", "--json")
    rows = json.loads(out)["rows"]
    assert code == 0 and rows[0]["params"] == rows[1]["params"] and rows[0]["levels"] == rows[1]["levels"] == 2
    assert rows[1]["gmacs"] > 4 * rows[0]["gmacs"]  # global attention at 4x the tokens


def test_flops_table_and_impossible_sizes(capsys):
    code, out, err = run(capsys, "flops", "hdit_test", "-r", "32", "36")
    assert code == 2 and "does not fit" in out and "input_size" in out
    code, _, err = run(capsys, "flops", "hdit_test", "-r", "96", "--grow")
    assert code == 2 and "power of two" in err


# -- list, show, plugins --------------------------------------------------------------------------
def test_list_all_and_one_family(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for family in ("attention", "ffn", "sampler", "dataset", "preset"):
        assert family in out
    code, out, _ = run(capsys, "list", "attention", "--json")
    entries = json.loads(out)["attention"]
    assert {"name": "neighborhood", "provider": "hourglass"} in entries
    code, _, err = run(capsys, "list", "atention")
    assert code == 2 and "Did you mean 'attention'" in err


def test_show_preset_is_loadable_toml(capsys):
    from hourglass.models import model_spec
    from hourglass.registry import MODEL

    code, out, _ = run(capsys, "show", "hdit_imagenet128")
    assert code == 0 and out.startswith("#")
    assert MODEL.validate(toml.loads(out)["model"]) == model_spec("hdit_imagenet128")


def test_show_component_fields(capsys):
    code, out, _ = run(capsys, "show", "neighborhood")
    assert code == 0 and "kernel_size" in out and "7" in out and "backends of its kernel: torch" in out and "provided by hourglass" in out
    code, out, _ = run(capsys, "show", "hdit")  # a model and a mapping network share the name
    assert "model 'hdit'" in out and "mapping 'hdit'" in out
    code, out, _ = run(capsys, "show", "mapping:hdit", "--json")
    assert json.loads(out)["family"] == "mapping"
    code, _, err = run(capsys, "show", "neighbourhood")
    assert code == 2 and "neighborhood" in err


def test_plugins_and_strict_mode(capsys, monkeypatch):
    from hourglass import registry

    code, out, _ = run(capsys, "plugins")
    assert code == 0
    code, _, _ = run(capsys, "--strict-plugins", "list", "ffn")
    assert code == 0
    registry.load_plugins()
    broken = registry.PluginStatus("broken_plugin", "broken-dist", "0.1", "failed", "ImportError: no module x")
    monkeypatch.setattr(registry, "_plugin_statuses", [*registry._plugin_statuses, broken])
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0 and json.loads(out)[-1]["status"] == "failed"
    code, out, _ = run(capsys, "plugins")
    assert "broken_plugin" in out and "ImportError" in out
    code, _, err = run(capsys, "--strict-plugins", "list", "ffn")
    assert code == 2 and "broken_plugin" in err and "Traceback" not in err
