"""Follows ``docs/plugins.md`` step by step on a copy of ``plugins/template``.

The plugin is installed with ``pip install --target`` into a temporary folder that only a
subprocess puts on its path, so the test environment is left as it was.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "plugins.md"
NAME = "my_ffn"  # the name the tutorial uses
DIST = "hourglass-my-ffn"

# the tutorial's commands, in order
STEPS = [
    f"python plugins/new_plugin.py {NAME}",
    f"pip install -e plugins/{DIST}",
    "hourglass plugins",
    "hourglass list ffn",
    "hourglass show my_ffn_mlp",
    f"hourglass build plugins/{DIST}/recipe.toml",
    f"python -m pytest plugins/{DIST}/tests",
]


def _new_plugin_module():
    spec = importlib.util.spec_from_file_location("hourglass_new_plugin", ROOT / "plugins" / "new_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tutorial_shows_each_step_in_order():
    text = TUTORIAL.read_text()
    positions = [text.find(f"\n{step}\n") for step in STEPS]
    missing = [step for step, at in zip(STEPS, positions, strict=True) if at < 0]
    assert not missing, f"docs/plugins.md lacks the command lines {missing}"
    assert positions == sorted(positions), "the tutorial's steps are out of order"


def test_the_tutorial_code_matches_the_template():
    """The code the tutorial shows is the template's, renamed."""
    new_plugin = _new_plugin_module()
    source = (ROOT / "plugins" / "template" / "src" / "hourglass_myplugin" / "__init__.py").read_text()
    renamed = source
    for old, new in new_plugin.substitutions(NAME):
        renamed = renamed.replace(old, new)
    text = TUTORIAL.read_text()
    for snippet in ('class MyFfnMLPSpec(Spec):', 'type: Literal["my_ffn_mlp"] = "my_ffn_mlp"',
                    'register_component("ffn", "my_ffn_mlp", MyFfnMLP)',
                    "return self.down_proj(self.dropout(F.relu(self.up_proj(x))))"):
        assert snippet in renamed and snippet in text, snippet


def test_new_plugin_names_and_refusals(tmp_path):
    new_plugin = _new_plugin_module()
    assert new_plugin.substitutions("my_ffn") == [
        ("hourglass-myplugin", "hourglass-my-ffn"), ("MyPlugin", "MyFfn"), ("myplugin", "my_ffn")
    ]
    for bad, match in [("My-FFN", "must be snake_case"), ("my__ffn", "must be snake_case"),
                       ("1ffn", "must be snake_case"), ("hourglass_ffn", "leave out the 'hourglass' prefix")]:
        with pytest.raises(ValueError, match=match):
            new_plugin.substitutions(bad)
    new_plugin.create_plugin("abc", tmp_path)
    with pytest.raises(FileExistsError, match="already exists"):
        new_plugin.create_plugin("abc", tmp_path)
    assert new_plugin.main(["Bad Name", "--dest", str(tmp_path)]) == 2


def _offline_build_args() -> list[str]:
    """pip arguments for building the plugin: without build isolation (no download) when the installed
    setuptools can build wheels by itself (>= 70.1, or with ``wheel``), else an isolated build, which
    fetches setuptools from the package index."""
    try:
        import setuptools
    except ImportError:
        return []
    version = tuple(int(part) for part in setuptools.__version__.split(".")[:2] if part.isdigit())
    if version >= (70, 1) or importlib.util.find_spec("wheel") is not None:
        return ["--no-build-isolation", "--no-index"]
    return []


def test_follow_the_tutorial(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOURGLASS_")}
    env["HOURGLASS_NO_PROGRESS"] = "1"

    # 1. create (the tutorial's command, with --dest so the repository stays untouched)
    proc = subprocess.run([sys.executable, "plugins/new_plugin.py", NAME, "--dest", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plugin = tmp_path / DIST
    files = sorted(str(p.relative_to(plugin)) for p in plugin.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "recipe.toml", "src/hourglass_my_ffn/__init__.py",
                     "tests/test_my_ffn.py"]
    assert "myplugin" not in "".join(p.read_text() for p in plugin.rglob("*") if p.is_file()).lower()

    # 4. install: a real build of the distribution, into a folder only the subprocess sees
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *_offline_build_args(),
         "--disable-pip-version-check", "--target", str(site), str(plugin)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entry_points = next(site.glob("hourglass_my_ffn-*.dist-info")) / "entry_points.txt"
    assert "my_ffn = hourglass_my_ffn:register" in entry_points.read_text()

    # 4.-6. hourglass plugins / list / show / build, then the plugin's own tests, in one interpreter
    script = textwrap.dedent(f"""
        import contextlib, io, json, sys
        import pytest
        from hourglass.cli import main

        def cli(*args):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args))
            return [code, out.getvalue(), err.getvalue()]

        report = {{
            "plugins": cli("plugins"),
            "list": cli("list", "ffn"),
            "show": cli("show", "my_ffn_mlp"),
            "build": cli("build", {str(plugin / "recipe.toml")!r}),
        }}
        report["pytest"] = int(pytest.main(["-q", "-p", "no:cacheprovider", {str(plugin / "tests")!r}]))
        print(json.dumps(report))
    """)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    code, out, _ = report["plugins"]
    assert code == 0 and ["my_ffn", DIST, "0.1.0", "loaded", "ffn:my_ffn_mlp"] in [line.split() for line in out.splitlines()]
    code, out, _ = report["list"]
    assert code == 0 and ["my_ffn_mlp", DIST] in [line.split() for line in out.splitlines()]
    code, out, _ = report["show"]
    assert code == 0 and "zero_init" in out and "Two-layer ReLU MLP" in out
    code, out, err = report["build"]
    assert code == 0, err
    assert "hdit at 32x32" in out and "total" in out
    assert report["pytest"] == 0, proc.stdout
    assert "5 passed" in proc.stdout
