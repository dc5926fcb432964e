"""Every command the docs show is run here, or listed below with the reason it is not.

Commands are collected from ``README.md`` and ``docs/**/*.md`` (generated pages included):

* each line of a ``bash``/``sh``/``shell`` code block, and each ``$ `` line of a ``console``/``text``
  block (the generated command outputs), joined over trailing backslashes, with ``# comments``
  removed and ``&&`` chains split into their commands;
* inline code spans that are whole command lines: a program (``hourglass``, ``python``, ``pip``,
  ``mkdocs``, ``torchrun``, ``ruff``) with arguments and no placeholder (``NAME``, ``FILE...``,
  ``[FAMILY]``, ``<dir>``). ``hourglass build`` alone names a command; ``hourglass list ffn`` is one.

Each is run in one scratch folder set up like a reader's checkout (``recipes/``, ``benchmarks/`` and
``plugins/`` of the repository, and the files the docs take for granted: :data:`FIXTURES`), page by
page in :data:`PAGE_ORDER`, each distinct command once: ``hourglass ...`` through
``hourglass.cli.main`` in this process, ``python[3] SCRIPT ...`` through the script's ``main(argv)``,
``ruff`` as a subprocess in the repository. It must exit with status 0, or the one
:data:`EXPECTED_STATUS` documents. Long runs are shortened by :data:`SUBSTITUTIONS` (the one table of
them, a reason for each); commands that cannot run here are in :data:`NOT_RUN`, and those another test
runs in :data:`RUN_ELSEWHERE`. A command shown in the docs and in none of these fails
``test_every_shown_command_is_accounted_for``, and so does a table entry the docs no longer show.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: workflow pages first, in the order a reader follows them: the CLI reference's examples take a trained
#: quick-start run and a converted k-diffusion checkpoint for granted; then every other page, sorted
PAGE_ORDER = ["README.md", "docs/quickstart.md", "docs/k-diffusion.md", "docs/plugins.md"]

from tests.docs_command_tables import (  # noqa: E402 - the tables, kept in their own file
    EXPECTED_STATUS,
    IN_PROCESS_INSTALL,
    NOT_RUN,
    RUN_ELSEWHERE,
    SUBSTITUTIONS,
)

_PROGRAMS = ("hourglass", "python", "python3", "pip", "mkdocs", "torchrun", "ruff")
_SHELL_BLOCKS = {"bash", "sh", "shell"}
_PROMPT_BLOCKS = {"console", "text", ""}
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w-]*)")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
#: a word with a placeholder: NAME, plugins/NAME, FILE..., [FAMILY], <dir>, a | between alternatives
_PLACEHOLDER = re.compile(r"(?:^|[^A-Za-z])[A-Z][A-Z0-9_]*(?:[^a-z]|$)|\.\.\.|^\[|<.*>|^\|$")
_STATUS_REGION = re.compile(r"^<!-- docgen:begin command\[(\d+)\]: (.+?) -->$", flags=re.M)


@dataclass
class Shown:
    """A command as the docs show it, and where."""

    command: str
    where: list[str] = field(default_factory=list)


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _commands_of_line(line: str) -> list[str]:
    """The commands of one shell line: comment removed, whitespace normalised, ``&&`` chains split."""
    text = " ".join(_strip_comment(line).split())
    return [part.strip() for part in text.split(" && ") if part.strip()]


def _hourglass_commands() -> set[str]:
    """The sub-commands of ``hourglass``."""
    import argparse

    from hourglass.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {name for action in actions for name in action.choices}


def _is_inline_command(span: str, commands: set[str]) -> bool:
    words = span.split()
    if len(words) < 2 or words[0] not in _PROGRAMS or any(_PLACEHOLDER.search(w) for w in words[1:]):
        return False
    if words[0] == "hourglass":
        rest = [w for w in words[1:] if w != "--strict-plugins"]
        return len(rest) >= 2 and rest[0] in commands and not rest[1].startswith("-")
    if words[0] in ("python", "python3") and words[1] == "-m":
        return len(words) >= 4  # `python -m hourglass` names the program
    return True


def shown_commands(root: Path = ROOT) -> list[Shown]:
    """Every command the docs show, in :data:`PAGE_ORDER`, each once (with every place it is shown)."""
    commands = _hourglass_commands()
    pages = [root / p for p in PAGE_ORDER]
    pages += sorted(p for p in [root / "README.md", *(root / "docs").rglob("*.md")]
                    if p not in pages and "_gen" not in p.parts)
    found: dict[str, Shown] = {}

    def add(command: str, where: str) -> None:
        found.setdefault(command, Shown(command)).where.append(where)

    for page in pages:
        rel = page.relative_to(root)
        fence = lang = None
        pending = ""
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            match = _FENCE.match(line)
            if match:
                if fence is None:
                    fence, lang = match.group(1), match.group(2)
                elif match.group(1).startswith(fence[0]) and len(match.group(1)) >= len(fence):
                    fence = None
                continue
            if fence is not None:
                if lang in _SHELL_BLOCKS:
                    text = pending + line.strip()
                    if text.endswith("\\"):
                        pending = text[:-1] + " "
                        continue
                    pending = ""
                elif lang in _PROMPT_BLOCKS and line.startswith("$ "):
                    text = line[2:]
                else:
                    continue
                for command in _commands_of_line(text):
                    add(command, f"{rel}:{number}")
                continue
            for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", line):
                span = " ".join(span.split())
                if _is_inline_command(span, commands):
                    add(span, f"{rel}:{number}")
    return list(found.values())


def _runnable_here(command: str) -> bool:
    return command not in NOT_RUN and command not in RUN_ELSEWHERE


def _can_run(command: str) -> bool:
    """Whether :func:`_run` knows how to run ``command``."""
    if command.startswith(IN_PROCESS_INSTALL):
        return True
    words = [w for w in shlex.split(command) if not _ENV.match(w)]
    if not words:
        return False
    if words[0] in ("python", "python3"):
        return len(words) > 1 and words[1].endswith(".py")
    return words[0] in ("hourglass", "ruff")


# -- fast checks ----------------------------------------------------------------------------------------
def test_every_shown_command_is_accounted_for():
    """A command the docs show either runs here (hourglass, a Python script, ruff), or is listed as not run
    with a reason; every table entry is still shown somewhere; the tests named as running them exist."""
    shown = {s.command: s for s in shown_commands()}
    assert len(shown) > 60
    unknown = [f"{s.command}  ({', '.join(s.where)})" for s in shown.values()
               if _runnable_here(s.command) and not _can_run(SUBSTITUTIONS.get(s.command, (s.command,))[0])]
    assert unknown == [], ("commands in the docs that this test can neither run nor finds in NOT_RUN / RUN_ELSEWHERE "
                           "(add them, with the reason):\n" + "\n".join(unknown))
    for name, table in [("SUBSTITUTIONS", SUBSTITUTIONS), ("EXPECTED_STATUS", EXPECTED_STATUS),
                        ("NOT_RUN", NOT_RUN), ("RUN_ELSEWHERE", RUN_ELSEWHERE)]:
        stale = [c for c in table if c not in shown]
        assert stale == [], f"{name} lists commands the docs no longer show: {stale}"
    assert not set(SUBSTITUTIONS) & (set(NOT_RUN) | set(RUN_ELSEWHERE))
    assert all(reason.strip() for _, reason in SUBSTITUTIONS.values()) and all(r.strip() for r in NOT_RUN.values())
    for test, _ in RUN_ELSEWHERE.values():
        path, _, name = test.partition("::")
        assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), f"{test} does not exist"


def test_region_statuses_match_the_table():
    """A generated region that documents an error (``command[2]: ...``) is in EXPECTED_STATUS with that status."""
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for status, command in _STATUS_REGION.findall(page.read_text(encoding="utf-8")):
            assert EXPECTED_STATUS.get(command, (0,))[0] == int(status), (page, command)


def test_collector_reads_blocks_inline_spans_and_chains(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "Run `hourglass list ffn`, not `hourglass build` or `hourglass show NAME` or `hourglass flops --grow`;\n"
        "`pip install -e plugins/NAME`, `python -m hourglass`, `mkdocs serve`.\n\n"
        "```bash\npip install -e . && hourglass train r.toml   # a comment\n"
        "python3 x.py --a \\\n    --b 'q # not a comment'\n```\n\n"
        "```text\n$ hourglass build r.toml\noutput\n```\n\n```python\nhourglass = 1\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "PAGE_ORDER", ["README.md"])
    shown = {s.command: s.where for s in shown_commands(tmp_path)}
    assert shown == {
        "hourglass list ffn": ["README.md:1"], "mkdocs serve": ["README.md:2"], "pip install -e .": ["README.md:5"],
        "hourglass train r.toml": ["README.md:5"], "python3 x.py --a --b 'q # not a comment'": ["README.md:7"],
        "hourglass build r.toml": ["README.md:11"],
    }


# -- running them ---------------------------------------------------------------------------------------
def _make_fixtures(ws: Path) -> None:
    """The scratch folder: FIXTURES."""
    import numpy as np
    import safetensors.torch
    import torch
    from PIL import Image

    from hourglass.evaluation import to_uint8_rgb
    from hourglass.recipe import build_model, dump_recipe, load_recipe, plain_data
    from hourglass.registry import DATASET
    from hourglass.train.checkpoint import checkpoint_path, save_checkpoint
    from tests._reference import load_reference

    for name in ("recipes", "benchmarks"):
        (ws / name).symlink_to(ROOT / name, target_is_directory=True)
    (ws / "plugins").mkdir()
    for entry in (ROOT / "plugins").iterdir():
        if entry.name == "new_plugin.py":
            shutil.copy(entry, ws / "plugins" / entry.name)  # its plugins land beside it: in the scratch folder
        elif not entry.name.startswith("hourglass-my-ffn"):
            (ws / "plugins" / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (ws / "bench").mkdir()
    config, tensors = load_reference()
    state = {k[len("model."):]: v.contiguous() for k, v in tensors.items() if k.startswith("model.")}
    for name in ("config.json", "config_imagenet128.json"):
        (ws / name).write_text(json.dumps(config))
    for name in ("model.safetensors", "model_00400000.safetensors"):
        safetensors.torch.save_file({f"model.{k}": v for k, v in state.items()}, str(ws / name))
    torch.save({"model_ema": state}, ws / "ckpt.pth")
    shutil.copy(ROOT / "recipes" / "hdit_ffhq1024.toml", ws / "my.toml")
    shapes = DATASET.build({"type": "shapes", "size": 8}, resolution=32, split="train")
    for folder in ("data/ffhq256", "data/ffhq1024", "photos"):
        (ws / folder).mkdir(parents=True)
        for i in range(8 if folder.startswith("data") else 2):
            pixels = to_uint8_rgb(shapes[i]["image"][None])[0].permute(1, 2, 0).numpy()
            Image.fromarray(np.ascontiguousarray(pixels)).save(ws / folder / f"{i:06d}.png")
    shutil.copy(ws / "photos" / "000000.png", ws / "photo.png")
    for i in range(8):  # data/imagenet/train: 2 class subfolders of 4 images (FIXTURES)
        (ws / "data/imagenet/train" / f"n0{i // 4}").mkdir(parents=True, exist_ok=True)
        shutil.copy(ws / "data/ffhq256" / f"{i:06d}.png", ws / "data/imagenet/train" / f"n0{i // 4}" / f"{i}.png")
    hole = np.zeros((32, 32), dtype=np.uint8)
    hole[8:24, 8:24] = 255
    Image.fromarray(hole).save(ws / "hole.png")
    recipe = load_recipe(ROOT / "plugins" / "hourglass-extras" / "axial.toml", ["sample.steps=2"])
    torch.manual_seed(0)
    model = build_model(recipe, device="cpu")
    weights = model.state_dict()
    save_checkpoint(checkpoint_path(ws / "runs" / "axial", 0), step=0, model=weights, ema=weights,
                    recipe_toml=dump_recipe(recipe), model_spec=plain_data(model.spec.model_dump()))
    from tests._vae import docs_recipe_text, docs_vae_cache

    (ws / "latent.toml").write_text(docs_recipe_text())
    docs_vae_cache(ws / "hub", ws.parent)
    from hourglass.interop.uvit import RELEASES
    from tests.test_interop_dit_uvit import RefDiT, RefUViT

    torch.save(RefDiT().randomize().state_dict(), ws / "DiT-XL-2-256x256.pt")
    nnet = {**RELEASES["imagenet256_uvit_huge"].nnet, "depth": 2, "embed_dim": 32, "num_heads": 2}
    torch.save(RefUViT(**nnet).randomize().state_dict(), ws / "imagenet256_uvit_huge.pth")


def _install_in_process(ws: Path, folder: str) -> tuple[int, str]:
    """Put the plugin's src/ on sys.path and run its entry points, as an installed plugin's would run."""
    import tomllib

    plugin = ws / folder
    points = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]["entry-points"]["hourglass.plugins"]
    sys.path.insert(0, str(plugin / "src"))  # the test puts sys.path back afterwards
    for value in points.values():
        module, _, attr = value.partition(":")
        getattr(importlib.import_module(module), attr)()
    return 0, f"registered {', '.join(points.values())}"


def _run_script(ws: Path, words: list[str]) -> tuple[int, str]:
    script = (ws / words[0]).resolve()
    if str(script.parent) not in sys.path:
        sys.path.insert(0, str(script.parent))  # benchmarks import their _common
    spec = importlib.util.spec_from_file_location(f"docs_command_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return int(module.main(words[1:]) or 0), ""
    except SystemExit as exc:  # argparse: --help, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1), ""


def _run(ws: Path, command: str) -> tuple[int, str]:
    """Run one command in ``ws``: ``(exit status, what it printed)``."""
    import glob

    import torch

    from hourglass.cli import main

    if command.startswith(IN_PROCESS_INSTALL):
        return _install_in_process(ws, command[len(IN_PROCESS_INSTALL):].strip())
    words = shlex.split(command)
    env = dict(w.split("=", 1) for w in words if _ENV.match(w))
    words = [w for w in words if not _ENV.match(w)]
    program, args = words[0], []
    for word in words[1:]:  # the shell's globs
        args += sorted(glob.glob(word, root_dir=ws)) if any(c in word for c in "*?") else [word]
    if program == "ruff":  # lints the repository's own files
        proc = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        return proc.returncode, proc.stdout + proc.stderr
    out = io.StringIO()
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.chdir(ws)
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            if program == "hourglass":
                status = int(main(args) or 0)
            elif program in ("python", "python3"):
                status, _ = _run_script(ws, args)
            else:
                raise AssertionError(f"no way to run {program!r} here: add `{command}` to NOT_RUN with the reason")
        finally:
            torch.set_num_threads(threads)  # --threads of a benchmark is process-wide
    return status, out.getvalue()


def _git_status() -> str | None:
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


@pytest.mark.slow
def test_every_shown_command_runs(tmp_path, monkeypatch):
    """Each command of the docs (SUBSTITUTIONS applied) exits 0, or with its EXPECTED_STATUS; the repository is
    left as it was."""
    from hourglass.registry import ATTENTION, REGISTRIES

    if "axial" not in ATTENTION:
        pytest.skip("the docs' plugin examples need the example plugin: pip install -e plugins/hourglass-extras")
    pytest.importorskip("ruff")
    ws = tmp_path / "checkout"
    ws.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # FID reference statistics
    monkeypatch.setenv("HOURGLASS_NO_PROGRESS", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(ws / "hub"))  # docs/vae.md's VAE (FIXTURES)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing is downloaded here: the cache's stand-ins are read
    pytest.importorskip("diffusers", reason="docs/vae.md's commands need the [vae] extra (diffusers)")
    _make_fixtures(ws)
    before_git = _git_status()
    registered = {family: set(registry.names()) for family, registry in REGISTRIES.items()}
    modules, path, failures, ran = set(sys.modules), list(sys.path), [], 0
    try:
        for shown in shown_commands():
            if not _runnable_here(shown.command):
                continue
            command = SUBSTITUTIONS.get(shown.command, (shown.command,))[0]
            expected = EXPECTED_STATUS.get(shown.command, (0,))[0]
            try:
                status, output = _run(ws, command)
            except Exception as exc:  # noqa: BLE001 - reported with the command below
                status, output = -1, f"{type(exc).__name__}: {exc}"
            ran += 1
            if status != expected:
                tail = "\n    ".join(output.strip().splitlines()[-12:])
                failures.append(f"`{command}` ({', '.join(shown.where)}): exit {status}, expected {expected}\n    {tail}")
    finally:
        for family, registry in REGISTRIES.items():  # undo the in-process plugin install
            for name in set(registry.names()) - registered[family]:
                registry.unregister(name)
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name.startswith(("hourglass_my_ffn", "docs_command_")):
                del sys.modules[name]
    assert failures == [], f"{len(failures)} of {ran} documented commands failed:\n" + "\n".join(failures)
    assert ran > 50
    assert (ws / "runs" / "quickstart" / "samples" / "final.png").is_file()
    assert _git_status() == before_git, "running the documented commands changed the repository"
