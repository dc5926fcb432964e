"""Tests of hourglass-dinat: the component contract, the dilation schedule, the maths against a
brute-force oracle, clamping, spec errors and the example recipe."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hourglass_dinat import DilatedNeighborhoodAttention
from pydantic import ValidationError

from hourglass.plugin import ATTENTION, check_component, neighborhood_attention

if "dinat" not in ATTENTION:
    pytest.skip("hourglass-dinat is not installed: pip install -e plugins/hourglass-dinat", allow_module_level=True)

RECIPE = Path(__file__).resolve().parents[1] / "recipe.toml"


def _dense_dilated_neighborhood(q, k, v, kernel_size, dilation, scale):
    """Oracle: NATTEN-semantics dilated neighborhood attention via an explicit (H W) x (H W) mask.

    Along each axis a query at ``i`` lives in the sub-grid ``i mod d`` of length ``L``; its window
    is ``kernel_size`` consecutive sub-grid positions starting at
    ``clamp(i // d - kernel_size // 2, 0, L - kernel_size)`` (odd kernel sizes).
    """
    b, h, w, nh, e = q.shape

    def allowed(n):
        mask = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            residue, pos = i % dilation, i // dilation
            length = len(range(residue, n, dilation))
            start = min(max(pos - kernel_size // 2, 0), length - kernel_size)
            for t in range(start, start + kernel_size):
                mask[i, residue + t * dilation] = True
        return mask

    rows, cols = allowed(h), allowed(w)
    mask = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(h * w, h * w)
    qf, kf, vf = (t.reshape(b, h * w, nh, e).transpose(1, 2) for t in (q, k, v))
    logits = (qf @ kf.transpose(-1, -2)) * scale
    logits = logits.masked_fill(~mask, -math.inf)
    out = logits.softmax(dim=-1) @ vf
    return out.transpose(1, 2).reshape(b, h, w, nh, e)


def test_registered_by_this_distribution():
    assert ATTENTION.provider("dinat") == "hourglass-dinat"
    info = ATTENTION.describe("dinat")
    assert info["fields"]["dilations"]["default"] == (1, 2)
    assert info["facts"]["kernel"] == "neighborhood" and "torch" in info["facts"]["backends"]
    assert info["facts"]["connects_all_tokens"] is False


@pytest.mark.parametrize(
    "options,grid",
    [({}, (8, 8)), ({"dilations": [1, 3], "kernel_size": 5, "qk_norm": "none", "d_head": 32}, (16, 16))],
)
def test_passes_hourglass_component_checks(options, grid):
    """Defaults on the grid hourglass's own component tests use (dilation 2 clamps to 1 there), and
    a configuration whose dilation 3 really applies (5 * 3 = 15 <= 16)."""
    assert check_component("attention", "dinat", options=options, grid=grid, width=64) == [
        "spec", "forward", "gradients", "state_dict", "meta"
    ]


@pytest.mark.parametrize("dilations,expected", [((1, 2), [1, 2, 1, 2, 1]), ((1, 2, 4), [1, 2, 4, 1, 2]), ((3,), [3] * 5)])
def test_dilation_cycles_over_layers(dilations, expected):
    spec = {"type": "dinat", "dilations": list(dilations), "d_head": 16}
    got = [ATTENTION.build(spec, width=32, layer_index=i).dilation for i in range(5)]
    assert got == expected


@pytest.mark.parametrize("grid,kernel_size,dilation", [((12, 12), 3, 2), ((13, 10), 3, 3), ((16, 16), 5, 3)])
def test_matches_a_brute_force_dilated_neighborhood_oracle(grid, kernel_size, dilation):
    attn = ATTENTION.build(
        {"type": "dinat", "kernel_size": kernel_size, "dilations": [1, dilation], "d_head": 8}, width=16, layer_index=1
    )
    q, k, v = (torch.randn(2, *grid, 2, 8, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(attn.attend(q, k, v, 0.5), _dense_dilated_neighborhood(q, k, v, kernel_size, dilation, 0.5))


def test_layer_equals_neighborhood_attention_with_that_layers_dilation():
    """Same weights, same maths as the built-in `neighborhood` kind at the layer's dilation."""
    x = torch.randn(2, 16, 16, 64)
    pos = torch.rand(16, 16, 2) * 2 - 1
    for layer_index, dilation in [(0, 1), (1, 2), (2, 1), (3, 2)]:
        dinat = ATTENTION.build({"type": "dinat", "dilations": [1, 2], "zero_init": False, "d_head": 32},
                                width=64, layer_index=layer_index, pos_emb={"type": "axial_rope"})
        plain = ATTENTION.build({"type": "neighborhood", "dilation": dilation, "zero_init": False, "d_head": 32},
                                width=64, layer_index=layer_index, pos_emb={"type": "axial_rope"})
        plain.load_state_dict(dinat.state_dict())
        torch.testing.assert_close(dinat(x, pos), plain(x, pos))


def test_natten_is_an_independent_oracle_when_installed():
    natten = pytest.importorskip("natten")
    q, k, v = (torch.randn(1, 14, 14, 2, 16) for _ in range(3))
    attn = ATTENTION.build({"type": "dinat", "kernel_size": 5, "dilations": [2], "d_head": 16}, width=32)
    try:
        expected = natten.na2d(q, k, v, kernel_size=5, dilation=2, scale=0.25)
    except Exception as exc:  # NATTEN without a CPU backend for this build
        pytest.skip(f"natten.na2d cannot run here: {exc}")
    torch.testing.assert_close(attn.attend(q, k, v, 0.25), expected, atol=1e-5, rtol=1e-4)


def test_too_large_a_dilation_is_clamped_to_the_grid_or_refused():
    q, k, v = (torch.randn(1, 8, 8, 1, 16) for _ in range(3))
    spec = {"type": "dinat", "kernel_size": 3, "dilations": [4], "d_head": 16}
    clamped = ATTENTION.build(spec, width=16)
    assert clamped.dilation == 4 and clamped.dilation_at(8, 8) == 2 and clamped.dilation_at(12, 40) == 4
    torch.testing.assert_close(clamped.attend(q, k, v, 1.0), neighborhood_attention(q, k, v, 3, dilation=2))
    strict = ATTENTION.build({**spec, "clamp_dilation": False}, width=16)
    with pytest.raises(ValueError, match="kernel_size \\* dilation = 3 \\* 4 = 12 exceeds the 8 x 8 token grid"):
        strict.attend(q, k, v, 1.0)
    too_big = ATTENTION.build({**spec, "kernel_size": 9}, width=16)
    with pytest.raises(ValueError, match="exceeds the 8 x 8 token grid"):
        too_big.attend(q, k, v, 1.0)


def test_macs_do_not_depend_on_the_dilation():
    a = ATTENTION.build({"type": "dinat", "dilations": [1], "d_head": 16}, width=32)
    b = ATTENTION.build({"type": "dinat", "dilations": [3], "d_head": 16}, width=32)
    assert a.attention_macs(2, 16, 16) == b.attention_macs(2, 16, 16) == 2 * 2 * 16 * 16 * 49 * 32


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"dilations": []}, "at least 1 item"),
        ({"dilations": [1, 0]}, "every dilation must be an integer >= 1, got \\[1, 0\\]"),
        ({"kernel_size": 1}, "greater than or equal to 2"),
        ({"dilation": 2}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_refused_with_the_reason(bad, match):
    with pytest.raises(ValidationError, match=match):
        ATTENTION.validate({"type": "dinat", **bad})


def test_example_recipe_builds_trains_a_step_and_uses_both_dilations():
    from hourglass.recipe import build_model, load_recipe

    recipe = load_recipe(RECIPE)
    model = build_model(recipe, device="cpu")
    layers = [m for m in model.modules() if getattr(getattr(m, "spec", None), "type", None) == "dinat"]
    assert [m.dilation for m in layers] == [1, 2, 1, 2]  # encoder layers 0, 1; decoder layers 2, 3
    size = recipe.model.input_size
    x = torch.randn(1, 3, size, size)
    out = model(x, torch.tensor([0.5]), class_cond=torch.tensor([6]))
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for m in layers for p in m.parameters())


def test_hourglass_build_reports_the_recipe_with_the_pinned_neighborhood_backend(capsys):
    import json

    from hourglass.cli import main

    assert main(["build", str(RECIPE), "--json", "--set", 'runtime.backends.neighborhood="flex"', "--inference"]) == 0
    level = json.loads(capsys.readouterr().out)["levels"][0]
    assert level["attention_kind"] == "dinat" and level["attention"] == "dinat k7 d1,2"
    assert level["kernel"] == "neighborhood" and level["backend"] == "flex"


def test_pinned_neighborhood_backend_reaches_the_dinat_layers():
    from hourglass.recipe import build_model, load_recipe

    model = build_model(load_recipe(RECIPE, ['runtime.backends.neighborhood="torch"']))
    layers = [m for m in model.modules() if isinstance(m, DilatedNeighborhoodAttention)]
    assert layers and all(m.backend == "torch" for m in layers)


@pytest.mark.parametrize("options,grid,layers,path,match", [
    ({"kernel_size": 17}, (16, 16), (0,), "kernel_size", "17 does not fit the 16x16 token grid"),
    ({"kernel_size": 7, "dilations": [1, 3], "clamp_dilation": False}, (16, 16), (0, 1), "dilations",
     "dilation 3 spreads the 7x7 window over 21 tokens"),
])
def test_grid_rule_reports_what_does_not_fit(options, grid, layers, path, match):
    spec = ATTENTION.validate({"type": "dinat", **options})
    (problem,) = DilatedNeighborhoodAttention.grid_problems(spec, grid, layers)
    assert problem.path == path and match in problem.message


def test_grid_rule_accepts_what_fits_and_what_clamps():
    spec = ATTENTION.validate({"type": "dinat", "kernel_size": 7, "dilations": [1, 3]})
    assert DilatedNeighborhoodAttention.grid_problems(spec, (16, 16), (0, 1)) == []  # 3 clamps to 2
    only_even = ATTENTION.validate({"type": "dinat", "kernel_size": 7, "dilations": [1, 3], "clamp_dilation": False})
    assert DilatedNeighborhoodAttention.grid_problems(only_even, (16, 16), (0, 2)) == []  # layers using dilation 1


def test_validation_refuses_a_window_larger_than_the_grid():
    from hourglass.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError) as info:
        load_recipe(RECIPE, ["model.levels[0].attention.kernel_size=17"])
    (problem,) = info.value.problems
    assert problem.path == "model.levels[0].attention.kernel_size" and "16x16 token grid" in problem.message


def test_uvit_refuses_dinat_because_it_is_local():
    from hourglass.models import model_spec

    with pytest.raises(ValidationError, match="'dinat' does not connect every token in one layer"):
        model_spec("uvit_test", attention={"type": "dinat", "kernel_size": 3, "d_head": 16})
