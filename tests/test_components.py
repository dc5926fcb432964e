"""Every registered leaf component (plugins included): builds from its default spec, runs, trains, saves.

Each family has a harness: the structural context a parent passes and an input to call it with.
"""

from __future__ import annotations

import pytest
import torch

from hourglass.nn.pos_emb import make_axial_pos
from hourglass.registry import ATTENTION, FFN, MAPPING, MERGE, NORM, POS_EMB, SPLIT
from tests.conftest import unzero_

B, H, W, WIDTH, COND = 2, 8, 8, 128, 16


def _attention(name):
    x = torch.randn(B, H, W, WIDTH)
    return {"width": WIDTH, "pos_emb": {"type": "axial_rope"}, "layer_index": 1}, (x, make_axial_pos(H, W)), x.shape


def _pos_emb(name):
    context = {"width": WIDTH, "d_head": 64, "n_heads": 2, "grid_size": (H, W)}
    if getattr(POS_EMB.get(name), "kind", None) == "rope":
        return context, (make_axial_pos(H, W),), (H, W, 2, 64 // 4)
    x = torch.randn(B, H, W, WIDTH)
    return context, (x,), x.shape


def _ffn(name):
    x = torch.randn(B, H, W, WIDTH)
    return {"width": WIDTH, "d_ff": 3 * WIDTH, "dropout": 0.0}, (x,), x.shape


def _norm(name):
    x = torch.randn(B, H, W, WIDTH)
    return {"width": WIDTH, "cond_dim": COND}, (x, torch.randn(B, COND)), x.shape


def _merge(name):
    x = torch.randn(B, H, W, WIDTH)
    return {"in_width": WIDTH, "out_width": 2 * WIDTH}, (x,), (B, H // 2, W // 2, 2 * WIDTH)


def _split(name):
    x, skip = torch.randn(B, H // 2, W // 2, 2 * WIDTH), torch.randn(B, H, W, WIDTH)
    return {"in_width": 2 * WIDTH, "out_width": WIDTH}, (x, skip), skip.shape


def _mapping(name):
    sigma = torch.rand(B) + 0.1
    args = (sigma, torch.tensor([0, 3]), torch.randn(B, 9), torch.randn(B, 5))
    module_width = MAPPING.validate(name).width
    return {"num_classes": 4, "mapping_cond_dim": 5}, args, (B, module_width)


HARNESS = {
    ATTENTION: _attention,
    POS_EMB: _pos_emb,
    FFN: _ffn,
    NORM: _norm,
    MERGE: _merge,
    SPLIT: _split,
    MAPPING: _mapping,
}
CASES = [pytest.param(r, name, id=f"{r.family}:{name}") for r in HARNESS for name in r.names()]


def _output(result):
    return result[0] if isinstance(result, tuple) else result


def _run(registry, name, seed=0):
    torch.manual_seed(seed)
    context, args, shape = HARNESS[registry](name)
    module = registry.build(name, **context)
    return module, args, shape


@pytest.mark.parametrize("registry,name", CASES)
def test_builds_from_defaults_and_has_the_right_shape(registry, name):
    module, args, shape = _run(registry, name)
    out = _output(module(*args))
    assert out.dtype == torch.float32
    if shape is not None:
        assert out.shape == shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("registry,name", CASES)
def test_every_parameter_gets_a_gradient(registry, name):
    module, args, _ = _run(registry, name)
    unzero_(module)
    if not list(module.parameters()):  # parameter-free components (rope, none): nothing to reach
        return
    args = tuple(a.requires_grad_() if a.is_floating_point() else a for a in args)
    out = _output(module(*args))
    (out.float() ** 2).mean().backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"


@pytest.mark.parametrize("registry,name", CASES)
def test_state_dict_round_trip_and_determinism(registry, name):
    module, args, _ = _run(registry, name, seed=1)
    unzero_(module)
    clone, _, _ = _run(registry, name, seed=2)
    clone.load_state_dict(module.state_dict())
    module.eval(), clone.eval()
    with torch.no_grad():
        a, b = _output(module(*args)), _output(clone(*args))
        c = _output(module(*args))
    assert torch.equal(a, c), "forward is not deterministic"
    torch.testing.assert_close(a, b, rtol=0, atol=0)
