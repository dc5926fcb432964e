"""Tests of hourglass-myplugin: hourglass's component contract, the maths, and the example recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hourglass.plugin import FFN
from hourglass.testing import check_component

if "myplugin_mlp" not in FFN:
    pytest.skip("hourglass-myplugin is not installed: pip install -e <this folder>", allow_module_level=True)

RECIPE = Path(__file__).resolve().parents[1] / "recipe.toml"


def test_registered_by_this_distribution():
    assert FFN.provider("myplugin_mlp") == "hourglass-myplugin"


@pytest.mark.parametrize("options", [{}, {"bias": True, "zero_init": False}])
def test_passes_hourglass_component_checks(options):
    checks = check_component("ffn", "myplugin_mlp", options=options)
    assert checks == ["spec", "forward", "gradients", "state_dict", "meta"]


def test_computes_a_relu_mlp():
    ffn = FFN.build({"type": "myplugin_mlp", "zero_init": False}, width=8, d_ff=16)
    x = torch.randn(2, 3, 3, 8)
    expected = torch.relu(x @ ffn.up_proj.weight.T) @ ffn.down_proj.weight.T
    torch.testing.assert_close(ffn(x), expected)


def test_example_recipe_builds_and_runs():
    from hourglass.recipe import build_model, load_recipe

    recipe = load_recipe(RECIPE)
    model = build_model(recipe, device="cpu")
    assert any(getattr(getattr(m, "spec", None), "type", None) == "myplugin_mlp" for m in model.modules())
    size = recipe.model.input_size
    out = model(torch.randn(1, 3, size, size), torch.tensor([1.0]), class_cond=torch.tensor([0]))
    assert out.shape == (1, 3, size, size)
