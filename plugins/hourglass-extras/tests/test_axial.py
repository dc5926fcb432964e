"""Tests of the ``axial`` attention kind and its own kernel ``axial`` (backends ``torch`` and ``dense``).

The issue they check: a new attention kind with its own kernel backend, written as a third-party
package, is validated, pinnable, shown by ``hourglass build``, counted by ``hourglass flops`` and
refused by U-ViT because it is local; and its reference backend computes the maths (a brute-force
oracle, float64, forward and backward) in ``O(tokens * (H + W))`` memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from hourglass.plugin import ATTENTION, BACKEND, KERNEL, AttentionKind, call_kernel, check_component

if "axial" not in ATTENTION:
    pytest.skip("hourglass-extras is not installed: pip install -e plugins/hourglass-extras", allow_module_level=True)

from hourglass_extras.axial import AxialAttention, axial_dense, axial_torch  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "axial.toml"


def _oracle(q, k, v, span, scale):
    """Brute force: for each query, list the keys of its row and its column by hand (each once), softmax."""
    b, h, w, heads, d = q.shape

    def run(n, i):  # positions a query at i sees along an axis of n tokens
        if span is None:
            return range(n)
        size = 2 * span + 1
        start = min(max(i - span, 0), n - size)
        return range(start, start + size)

    rows = []
    for i in range(h):
        row = []
        for j in range(w):
            keys = sorted({(i, c) for c in run(w, j)} | {(r, j) for r in run(h, i)})
            kk = torch.stack([k[:, r, c] for r, c in keys], dim=1)  # (B, keys, heads, D)
            vv = torch.stack([v[:, r, c] for r, c in keys], dim=1)
            attn = (torch.einsum("bnd,bknd->bnk", q[:, i, j], kk) * scale).softmax(-1)
            row.append(torch.einsum("bnk,bknd->bnd", attn, vv))
        rows.append(torch.stack(row, dim=1))
    return torch.stack(rows, dim=1)


def _forward_backward(fn, q, k, v, span, scale, grad):
    inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*inputs, span, scale)
    (out * grad).sum().backward()
    return out.detach(), [t.grad for t in inputs]


CASES = [((5, 7), None), ((6, 5), 1), ((7, 9), 2), ((1, 4), None), ((5, 5), 2)]


@pytest.mark.parametrize("backend", [axial_torch, axial_dense], ids=["torch", "dense"])
@pytest.mark.parametrize("grid,span", CASES)
def test_backends_match_a_brute_force_oracle_forward_and_backward(backend, grid, span):
    torch.manual_seed(0)
    q, k, v, grad = (torch.randn(2, *grid, 2, 3, dtype=torch.float64) for _ in range(4))
    expected, expected_grads = _forward_backward(_oracle, q, k, v, span, 0.7, grad)
    out, grads = _forward_backward(backend, q, k, v, span, 0.7, grad)
    torch.testing.assert_close(out, expected)
    for got, want, name in zip(grads, expected_grads, "qkv", strict=True):
        torch.testing.assert_close(got, want, msg=lambda m, name=name: f"d{name}: {m}")


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_torch_backend_needs_no_tokens_squared_memory():
    h, w = 40, 48
    tokens = h * w
    q, k, v = (torch.randn(1, h, w, 1, 4, requires_grad=True) for _ in range(3))
    for backend, bound in ((axial_torch, tokens * (h + w)), (axial_dense, None)):
        with _LargestTensor() as largest:
            backend(q, k, v, None, 1.0).sum().backward()
        if bound is None:  # the oracle's mask: shows the measurement sees a tokens^2 tensor
            assert largest.numel >= tokens**2
        else:
            assert largest.numel <= bound < tokens**2 // 10


@pytest.mark.parametrize("options,grid", [({}, (8, 8)), ({"span": 2, "qk_norm": "none", "d_head": 32}, (8, 12))])
def test_passes_hourglass_component_checks(options, grid):
    assert check_component("attention", "axial", options=options, grid=grid, width=64) == [
        "spec", "forward", "gradients", "state_dict", "meta"
    ]


def test_registered_by_this_distribution_with_its_kernel_and_backends():
    assert ATTENTION.provider("axial") == KERNEL.provider("axial") == "hourglass-extras"
    assert BACKEND.provider("axial:torch") == BACKEND.provider("axial:dense") == "hourglass-extras"
    assert KERNEL.get("axial").reference == "torch"
    assert ATTENTION.describe("axial")["facts"] == {
        "kernel": "axial", "backends": ["torch", "dense"], "connects_all_tokens": False, "mixes_tokens": True,
    }


def test_the_entry_point_runs_twice_without_error():
    """``load_plugins(force=True)`` runs ``register()`` again (in a fresh interpreter, so this session's
    provider records stay as they are): no warning, the plugin stays loaded, nothing changes hands."""
    code = textwrap.dedent("""
        import json, warnings
        from hourglass.registry import ATTENTION, load_plugins
        from hourglass.backends import KERNEL
        load_plugins()
        kernel, kind = KERNEL.get("axial"), ATTENTION.get("axial")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            statuses = {s.name: s.status for s in load_plugins(force=True)}
        print(json.dumps({
            "warnings": [str(w.message) for w in caught], "extras": statuses["extras"],
            "same": KERNEL.get("axial") is kernel and ATTENTION.get("axial") is kind,
            "providers": [KERNEL.provider("axial"), ATTENTION.provider("axial")],
        }))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"warnings": [], "extras": "loaded", "same": True,
                      "providers": ["hourglass-extras", "hourglass-extras"]}


def test_one_layer_reaches_the_row_and_the_column_only():
    attn = ATTENTION.build({"type": "axial", "d_head": 8, "zero_init": False}, width=16)
    x = torch.randn(1, 6, 7, 16)
    pos = torch.rand(6, 7, 2)
    with torch.no_grad():
        moved = x.clone()
        moved[:, 2, 3] += 1
        changed = (attn(moved, pos) - attn(x, pos)).abs().amax(dim=(0, 3)) > 1e-6
    expected = torch.zeros(6, 7, dtype=torch.bool)
    expected[2, :] = expected[:, 3] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("backend", [None, "dense"])
def test_torch_compile_traces_the_layer_whole(backend):
    """Under ``torch.compile`` the backend is chosen while tracing; the backend itself must trace without a
    graph break (``fullgraph=True``, Dynamo only: the ``eager`` compiler backend)."""
    attn = ATTENTION.build({"type": "axial", "d_head": 8, "zero_init": False}, width=16)
    attn.backend = backend
    x, pos = torch.randn(1, 6, 7, 16), torch.rand(6, 7, 2)
    compiled = torch.compile(attn, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, pos), attn(x, pos))


@pytest.mark.parametrize("span,grid,keys", [(None, (16, 16), 31), (None, (8, 32), 39), (2, (16, 16), 9), (3, (7, 9), 13)])
def test_attention_macs_count_the_keys_each_query_sees(span, grid, keys):
    attn = ATTENTION.build({"type": "axial", "span": span, "d_head": 16}, width=32)
    assert attn.attention_macs(2, *grid) == 2 * 2 * grid[0] * grid[1] * keys * 32


def test_label_and_grid_rule():
    spec = ATTENTION.validate({"type": "axial", "span": 3})
    assert AxialAttention.label(spec) == "axial s3" and AxialAttention.label(ATTENTION.validate("axial")) == "axial"
    assert AxialAttention.grid_problems(spec, (7, 9)) == []
    (problem,) = AxialAttention.grid_problems(spec, (6, 16))
    assert problem.path == "span" and "needs runs of 7 tokens, more than the 6x16 token grid" in problem.message
    assert problem.hint == "use span <= 2 or leave span out (whole rows and columns)"
    with pytest.raises(ValueError, match="span 3 needs runs of 7 tokens but the token grid is 6 x 16"):
        call_kernel("axial", *(torch.randn(1, 6, 16, 1, 4) for _ in range(3)), 3)


# -- in a recipe -------------------------------------------------------------------------------------
def test_example_recipe_validates_builds_and_trains_a_step():
    from hourglass.recipe import build_model, load_recipe

    recipe = load_recipe(RECIPE)
    assert recipe.model.levels[0].attention.type == "axial"
    model = build_model(recipe, device="cpu")
    layers = [m for m in model.modules() if isinstance(m, AxialAttention)]
    assert len(layers) == 4 and all(m.backend is None for m in layers)  # auto: resolved at run time
    out = model(torch.randn(1, 3, 32, 32), torch.tensor([0.5]), class_cond=torch.tensor([6]))
    out.square().mean().backward()
    assert all(p.grad is not None for m in layers for p in m.parameters())


@pytest.mark.parametrize("override,path,match", [
    ("model.levels[0].attention.span=8", "model.levels[0].attention.span",
     "8 needs runs of 17 tokens, more than the 16x16 token grid"),
    ("model.levels[0].attention.span=0", "model.levels[0].attention.span", "greater than or equal to 1"),
    ("model.levels[0].attention.window=3", "model.levels[0].attention.window", "unknown key for 'axial'"),
])
def test_a_bad_option_is_refused_with_its_recipe_path(override, path, match):
    from hourglass.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError) as info:
        load_recipe(RECIPE, [override])
    (problem,) = info.value.problems
    assert problem.path == path and match in problem.message


def test_an_unknown_backend_of_the_kernel_is_refused_at_validation():
    from hourglass.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError) as info:
        load_recipe(RECIPE, ['runtime.backends.axial="flash"'])
    (problem,) = info.value.problems
    assert problem.path == "runtime.backends.axial"
    assert "unknown axial backend 'flash'; known axial backends: torch, dense" in problem.message


def test_runtime_backends_pin_every_layer_of_the_kernel():
    from hourglass.recipe import build_model, load_recipe

    model = build_model(load_recipe(RECIPE, ['runtime.backends.axial="dense"']), device="cpu")
    kinds = [m for m in model.modules() if isinstance(m, AttentionKind)]
    assert {(type(m).__name__, m.backend) for m in kinds} == {("AxialAttention", "dense"), ("GlobalAttention", None)}
    layer = next(m for m in kinds if isinstance(m, AxialAttention))
    x = torch.randn(1, 65, 64, layer.width)  # 4160 tokens: more than dense takes
    with pytest.raises(RuntimeError, match="axial backend 'dense' .* dense takes at most 4096 tokens"):
        layer(x, torch.rand(65, 64, 2))
    layer.backend = None  # auto picks torch, which takes it
    assert layer(x, torch.rand(65, 64, 2)).shape == x.shape


def test_use_backends_and_the_environment_choose_the_backend(monkeypatch):
    from hourglass.backends import BackendUnavailableError, available_backends, resolve_backend, use_backends

    def resolve(dtype=torch.float32):
        return resolve_backend("axial", "cpu", dtype, True)

    monkeypatch.delenv("HOURGLASS_BACKEND_AXIAL", raising=False)
    assert resolve() == "torch"  # auto: dense has no auto rank
    with use_backends(axial="dense"):
        assert resolve() == "dense"
    monkeypatch.setenv("HOURGLASS_BACKEND_AXIAL", "dense")
    assert resolve() == "dense"
    assert "float32/float64 oracle" in available_backends("axial", "cpu", torch.bfloat16)["dense"]
    with pytest.raises(BackendUnavailableError, match="float32/float64 oracle"):
        resolve(torch.bfloat16)
    with pytest.raises(ValueError, match="unknown axial backend 'flash'"), use_backends(axial="flash"):
        pass


@pytest.mark.parametrize("pin,backend", [(None, "torch"), ("dense", "dense")])
def test_hourglass_build_shows_the_kernel_and_backend_of_the_level(capsys, pin, backend):
    from hourglass.cli import main

    extra = ["--set", f'runtime.backends.axial="{pin}"'] if pin else []
    assert main(["build", str(RECIPE), "--json", *extra]) == 0
    level = json.loads(capsys.readouterr().out)["levels"][0]
    assert (level["attention_kind"], level["attention"], level["kernel"]) == ("axial", "axial", "axial")
    assert level["backend"] == backend and level["backend_error"] is None


def test_hourglass_flops_counts_its_macs(capsys):
    """The axial recipe minus the same recipe with global attention at level 0: only the token mixing
    differs, by ``layers * 2 h w width ((h + w - 1) - h w)``."""
    from hourglass.cli import main

    def gmacs(*overrides):
        args = ["flops", str(RECIPE), "--resolution", "32", "64", "--json"]
        assert main(args + [a for o in overrides for a in ("--set", o)]) == 0
        return [row["gmacs"] for row in json.loads(capsys.readouterr().out)["rows"]]

    axial = gmacs()
    dense = gmacs('model.levels[0].attention={type="global", d_head=32}')
    for res, a, g in zip((32, 64), axial, dense, strict=True):
        h = w = res // 2
        expected = 4 * 2 * h * w * 64 * ((h + w - 1) - h * w)  # 4 layers of width 64 at level 0
        assert round((a - g) * 1e9) == expected


def test_uvit_refuses_it_because_one_layer_does_not_connect_every_token():
    from hourglass.models import model_spec

    with pytest.raises(ValidationError, match="'axial' does not connect every token in one layer"):
        model_spec("uvit_test", attention={"type": "axial", "d_head": 16})
