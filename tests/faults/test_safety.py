"""Nothing executes code from a checkpoint or a recipe: safetensors / weights_only loads only."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest

from .conftest import REPO, assert_clean_error, run_cli

PACKAGE = REPO / "hourglass"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _code_lines(path: Path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.split("#", 1)[0]
        if stripped.strip():
            yield number, stripped


def test_torch_load_always_passes_weights_only_true():
    offenders = []
    for path in SOURCES:
        text = path.read_text()
        for m in re.finditer(r"(?<![\w.])torch\.load\(", text):
            call = text[m.start(): m.start() + 300]
            depth, end = 0, None
            for i, ch in enumerate(call):  # the call's own parentheses
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0 and ch == ")":
                    end = i
                    break
            args = call[: end or len(call)]
            if "weights_only=True" not in args:
                line = text[: m.start()].count("\n") + 1
                if not text.splitlines()[line - 1].lstrip().startswith(("#", '"', "`", "-", "*")):
                    offenders.append(f"{path.relative_to(REPO)}:{line}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


#: reviewed dynamic imports whose argument is a constant of the package, never recipe text
#: (registry.py: a loop over the literal tuple of built-in subpackages)
# module names read from the package folders (the built-in component modules), never from user input
REVIEWED_IMPORTS = {("hourglass/_builtins.py", "name"), ("hourglass/_builtins.py", "f\"{name}.{info.name}\"")}


def test_no_pickle_eval_exec_or_dynamic_import_of_recipe_strings():
    banned = re.compile(r"\b(pickle\.loads?|cPickle|dill|eval|exec)\s*\(|\bimport\s+pickle\b|__import__\s*\(")
    dynamic = re.compile(r"importlib\.import_module\((?P<arg>[^)]*)\)")
    offenders = []
    for path in SOURCES:
        for number, line in _code_lines(path):
            if banned.search(line) and ".eval()" not in line.replace(" ", ""):
                if re.search(r"(?<![\w.])(eval|exec)\s*\(", line) or "pickle" in line or "__import__" in line:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
            m = dynamic.search(line)
            if m:
                # only constant module names or names built from the package's own command list
                arg = m.group("arg")
                rel = str(path.relative_to(REPO))
                if not arg.startswith(("'", '"', 'f"{__name__}', "f'{__name__}")) and (rel, arg) not in REVIEWED_IMPORTS:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the marker file proves the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious(tmp_path: Path, name: str) -> tuple[Path, Path]:
    marker = tmp_path / f"PWNED-{name}"
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": _Payload(marker)}}, f)
    return path, marker


def test_the_payload_works_when_unpickled(tmp_path):
    path, marker = _malicious(tmp_path, "probe.pkl")
    with open(path, "rb") as f:
        pickle.load(f)  # noqa: S301 - proves the marker test can fail
    assert marker.exists()


@pytest.mark.parametrize("name", ["evil.pth", "evil.safetensors", "evil.ckpt"])
def test_sample_refuses_a_malicious_pickle(tmp_path, name):
    path, marker = _malicious(tmp_path, name)
    proc = run_cli("sample", str(path), "--n", "1", "--steps", "1", "--out", str(tmp_path / "out"))
    assert_clean_error(proc, name)
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.parametrize("name", ["evil.pth", "evil.ckpt", "evil.safetensors"])
def test_convert_refuses_a_malicious_pickle(tmp_path, name):
    path, marker = _malicious(tmp_path, name)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {
        "type": "image_transformer_v2", "input_channels": 3, "input_size": [32, 32], "patch_size": [4, 4],
        "depths": [1, 1], "widths": [32, 64], "self_attns": [{"type": "global", "d_head": 16}] * 2,
        "mapping_depth": 1, "mapping_width": 64}}))
    proc = run_cli("convert", "k-diffusion", str(config), str(path), str(tmp_path / "out"))
    assert_clean_error(proc, name)
    assert not marker.exists(), "the pickle payload ran"
    assert not (tmp_path / "out" / "model.safetensors").exists()
    assert not os.path.exists(tmp_path / "out" / "recipe.toml")
