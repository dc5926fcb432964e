"""The Python examples of README.md and docs/python-api.md run as written.

Examples that load ``runs/quickstart`` run in a temporary folder holding that run: the quick-start recipe
trained for two steps (its ``[sample]`` section trimmed so that the end-of-training grid and the examples'
default steps are quick). README blocks run one by one, each in a fresh namespace; the guide's blocks run in
order in one namespace, as a reader would type them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "python-api.md"


def python_blocks(page: Path) -> list[str]:
    """Every fenced ```python block of ``page``, in order."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.fixture(scope="module")
def quickstart_folder(tmp_path_factory):
    """A folder holding ``runs/quickstart``: the quick-start recipe after two training steps."""
    from hourglass.recipe import load_recipe
    from hourglass.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("readme")
    recipe = load_recipe(ROOT / "recipes" / "quickstart.toml", [
        "train.steps=2", "train.checkpoint_every=2", "train.sample_every=0", "train.log_every=1",
        "data.batch_size=8", "data.dataset.size=64", "sample.n=6", "sample.steps=4",
    ])
    train(recipe, root / "runs" / "quickstart", report=lambda message: None)
    yield root
    torch.set_num_threads(threads)


def _readme_params() -> list:
    return [pytest.param(i, block, id=f"block{i}") for i, block in enumerate(python_blocks(README))]


def test_readme_has_a_sampling_example():
    blocks = python_blocks(README)
    assert any("hourglass.load(" in b and ".sample(" in b and ".inpaint(" in b for b in blocks)
    assert "## Sampling from Python" in README.read_text(encoding="utf-8")


@pytest.mark.parametrize(("index", "block"), _readme_params())
def test_readme_block_runs(index, block, quickstart_folder, monkeypatch):
    monkeypatch.chdir(quickstart_folder)
    exec(compile(block, f"README.md (python block {index})", "exec"), {"__name__": "__readme__"})  # noqa: S102


def test_python_api_guide_runs(quickstart_folder, monkeypatch):
    blocks = python_blocks(GUIDE)
    assert len(blocks) >= 6
    monkeypatch.chdir(quickstart_folder)
    namespace: dict = {"__name__": "__guide__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/python-api.md (python block {i})", "exec"), namespace)  # noqa: S102
    assert (quickstart_folder / "grid.png").is_file() and (quickstart_folder / "inputs" / "000002.png").is_file()
