"""Follows ``docs/plugins.md`` step by step on a copy of ``plugins/template``, and checks that the
guide's code is real: titled blocks are the example plugins' own code, untitled ones run (and the
components they define pass the component contract), shown command output is what the command prints.

The plugin is installed with ``pip install --target`` into a temporary folder that only a
subprocess puts on its path, so the test environment is left as it was.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
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


# -- every code block of the guide is real code ----------------------------------------------------------
_BLOCK = re.compile(r'^```(\w+)(?: title="([^"]+)")?\n(.*?)^```$', flags=re.S | re.M)
WALKTHROUGH = "## Walk-through: an attention kind with its own kernel and backends"


def _blocks(text: str) -> list[tuple[str, str | None, str, int]]:
    """``(language, title, code, offset)`` of every fenced block of ``text``."""
    return [(m.group(1), m.group(2), m.group(3), m.start()) for m in _BLOCK.finditer(text)]


def _sources() -> dict[str, list[tuple[str, str]]]:
    """Title -> ``[(where, text)]``: the template's files renamed as the tutorial names them, then the
    files of every example plugin under their path inside the plugin."""
    new_plugin = _new_plugin_module()
    out: dict[str, list[tuple[str, str]]] = {}
    template = ROOT / "plugins" / "template"
    for path in sorted(p for p in template.rglob("*") if p.is_file() and p.suffix in {".py", ".toml"}):
        rel, text = str(path.relative_to(template)), path.read_text()
        for old, new in new_plugin.substitutions(NAME):
            rel, text = rel.replace(old, new), text.replace(old, new)
        out.setdefault(rel, []).append((f"plugins/template/{path.relative_to(template)} (renamed)", text))
    for plugin in sorted((ROOT / "plugins").glob("hourglass-*")):
        for path in sorted(p for p in plugin.rglob("*") if p.is_file() and p.suffix in {".py", ".toml"}):
            rel = str(path.relative_to(plugin))
            if rel not in out:  # a tutorial title (pyproject.toml, recipe.toml) means the template's
                out.setdefault(rel, []).append((str(path.relative_to(ROOT)), path.read_text()))
    return out


def _paragraphs(code: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", code.strip("\n")) if p.strip()]


def test_titled_code_blocks_are_the_plugins_own_code():
    """A ``python title="PATH"`` block is that file's code: its paragraphs (blank-line separated) appear
    verbatim and in order in the file (whole paragraphs may be left out). A titled TOML block's lines
    are lines of the file (comments aside)."""
    sources = _sources()
    checked = set()
    for lang, title, code, _ in _blocks(TUTORIAL.read_text()):
        if title is None or lang not in {"python", "toml"}:
            continue
        found = sources.get(title)
        assert found and len(found) == 1, f"docs/plugins.md: no single plugin file for the block titled {title!r}"
        where, text = found[0]
        if lang == "python":
            at = 0
            for para in _paragraphs(code):
                position = text.find(para, at)
                assert position >= 0, f"docs/plugins.md block {title!r}: not in {where} (in this order):\n{para}"
                at = position + len(para)
        else:
            lines = {line.split("#")[0].rstrip() for line in text.splitlines()}
            missing = [line for line in code.splitlines() if line.strip() and line.rstrip() not in lines]
            assert not missing, f"docs/plugins.md block {title!r}: lines not in {where}: {missing}"
        checked.add(title)
    assert {"src/hourglass_my_ffn/__init__.py", "src/hourglass_dinat/__init__.py", "src/hourglass_extras/axial.py",
            "src/hourglass_extras/__init__.py", "tests/test_axial.py", "pyproject.toml"} <= checked


def test_toml_blocks_parse():
    tomllib = pytest.importorskip("tomllib")
    for lang, _title, code, _ in _blocks(TUTORIAL.read_text()):
        if lang == "toml":
            tomllib.loads(code)


def test_untitled_python_blocks_run_and_their_components_pass_the_contract():
    """Each untitled block runs on its own; every component class it defines that subclasses a family's
    contract is registered for the duration of the test and passes ``check_component``."""
    from hourglass.registry import ATTENTION, REGISTRIES
    from hourglass.testing import check_component

    if "axial" not in ATTENTION:
        pytest.skip("hourglass-extras is not installed: pip install -e plugins/hourglass-extras")
    checked = []
    for index, (lang, title, code, _) in enumerate(_blocks(TUTORIAL.read_text())):
        if lang != "python" or title is not None:
            continue
        module = f"docs_plugins_block_{index}"
        namespace: dict = {"__name__": module}
        exec(compile(code, f"docs/plugins.md block {index}", "exec", dont_inherit=True), namespace)  # noqa: S102
        for obj in list(namespace.values()):
            if not (isinstance(obj, type) and obj.__module__ == module and hasattr(obj, "Spec")):
                continue
            family = next(f for f, r in REGISTRIES.items() if r.contract is not None and issubclass(obj, r.contract))
            name = obj.Spec.model_fields["type"].default
            registry = REGISTRIES[family]
            assert name not in registry, f"docs/plugins.md: example {family} {name!r} clashes with a registered one"
            registry.add(name, obj)
            try:
                assert check_component(family, name)[0] == "spec"
            finally:
                registry.unregister(name)
            checked.append(f"{family}:{name}")
    assert sorted(checked) == ["dataset:stripes", "norm:scale_norm", "schedule:cosine_log", "weighting:x0_mse"]


def test_the_walkthrough_shows_real_output(monkeypatch):
    """In the walk-through of a kind with its own kernel, and after it, a one-line ``hourglass ...`` command
    followed by a text block: the text is a run of the lines that command prints."""
    from hourglass.registry import ATTENTION

    if "axial" not in ATTENTION:
        pytest.skip("hourglass-extras is not installed: pip install -e plugins/hourglass-extras")
    from hourglass.cli import main

    text = TUTORIAL.read_text()
    start = text.index(WALKTHROUGH)
    blocks = [b for b in _blocks(text) if b[3] > start]
    monkeypatch.chdir(ROOT)
    shown = 0
    for (lang, _, code, _), (next_lang, _, output, _) in zip(blocks, blocks[1:], strict=False):
        command = code.strip()
        if lang != "bash" or next_lang != "text" or "\n" in command or not command.startswith("hourglass "):
            continue
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(shlex.split(command)[1:])
        printed = [line.rstrip() for line in (out.getvalue() + err.getvalue()).splitlines()]
        expected = [line.rstrip() for line in output.strip("\n").splitlines()]
        runs = [printed[i:i + len(expected)] for i in range(len(printed) - len(expected) + 1)]
        assert expected in runs, f"docs/plugins.md: `{command}` prints\n" + "\n".join(printed)
        shown += 1
    assert shown >= 4


def test_the_api_table_names_only_what_hourglass_plugin_exports():
    import hourglass.plugin as hp

    table = TUTORIAL.read_text().split("\n## API reference\n")[1].split("\nUsers (not plugins)")[0]
    named = set(re.findall(r"`(\w+)`", table))
    assert len(named) >= 40 and sorted(named - set(hp.__all__)) == []
