"""Every registered leaf component (plugins included): builds from its default spec, runs, trains, saves.

Each family has a harness: the structural context a parent passes and an input to call it with.
"""

from __future__ import annotations

import math

import pytest
import torch

from hourglass.nn.pos_emb import make_axial_pos
from hourglass.registry import ATTENTION, FFN, MAPPING, MERGE, NORM, POS_EMB, SKIP
from tests.conftest import unzero_

B, H, W, WIDTH, COND = 2, 8, 8, 128, 16


def _attention(name):
    x = torch.randn(B, H, W, WIDTH)
    return {"width": WIDTH, "pos_emb": {"type": "axial_rope"}, "layer_index": 1}, (x, make_axial_pos(H, W)), x.shape


def _pos_emb(name):
    context = {"width": WIDTH, "d_head": 64, "n_heads": 2, "grid_size": (H, W)}
    if POS_EMB.get(name).encoding == "relative":
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
    SKIP: _split,
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


@pytest.mark.parametrize("d_head,n_heads", [(8, 4), (64, 2), (12, 1), (9, 3)])
def test_axial_rope_accepts_the_head_sizes_k_diffusion_accepts(d_head, n_heads):
    rope = POS_EMB.build({"type": "axial_rope"}, d_head=d_head, n_heads=n_heads)
    per_head = d_head // 2 // 4
    assert rope.freqs.shape == (n_heads, per_head)
    theta = rope(make_axial_pos(4, 6))
    assert theta.shape == (4, 6, n_heads, 2 * per_head)
    # k-diffusion: n_heads * (d_head // 2) // 4 log-spaced values, laid out (per_head, n_heads), transposed
    log_f = torch.linspace(torch.log(torch.tensor(torch.pi)), torch.log(torch.tensor(10 * torch.pi)),
                           n_heads * (d_head // 2) // 4 + 1)[:-1]
    torch.testing.assert_close(rope.freqs, log_f.exp().view(per_head, n_heads).T)


@pytest.mark.parametrize("d_head,n_heads", [(4, 1), (12, 2), (20, 2)])
def test_axial_rope_refuses_head_sizes_it_cannot_lay_out(d_head, n_heads):
    with pytest.raises(ValueError, match="use a d_head divisible by 8"):
        POS_EMB.build({"type": "axial_rope"}, d_head=d_head, n_heads=n_heads)


@pytest.mark.parametrize("kind,expected", [("global", torch.bfloat16), ("neighborhood", torch.float32),
                                           ("shifted_window", torch.float32)])
def test_rope_positions_dtype_under_bf16_autocast_follows_k_diffusion(kind, expected):
    spec = {"type": kind, "d_head": 32, **({"kernel_size": 3} if kind == "neighborhood" else {}),
            **({"window_size": 4} if kind == "shifted_window" else {})}
    attn = ATTENTION.build(spec, width=64, pos_emb={"type": "axial_rope"}, layer_index=1)
    seen = []
    original = attn.pos_emb.forward
    attn.pos_emb.forward = lambda pos: (seen.append(pos.dtype), original(pos))[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(torch.randn(1, 8, 8, 64), make_axial_pos(8, 8))
    assert seen == [expected]


# -- exact formulas of the FFNs and the lerp skip, computed by hand -------------------------------------
def _linear(x, layer):
    return x @ layer.weight.T + (0 if layer.bias is None else layer.bias)


def _silu(g):
    return g / (1 + torch.exp(-g))


def _gelu_erf(g):
    return 0.5 * g * (1 + torch.erf(g / math.sqrt(2)))


def _gelu_tanh(g):
    return 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))


@pytest.mark.parametrize("name,act", [("swiglu", _silu), ("geglu", _gelu_erf)])
def test_gated_ffns_follow_their_formula(name, act):
    """SwiGLU is ``Down(value * SiLU(gate))``, GEGLU ``Down(value * GELU_erf(gate))``, ``Up -> [value, gate]``."""
    d_ff = 10
    ffn = FFN.build({"type": name, "bias": True, "zero_init": False}, width=6, d_ff=d_ff, dropout=0.0).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64) * 2
    hidden = _linear(x, ffn.up_proj)
    value, gate = hidden[..., :d_ff], hidden[..., d_ff:]
    expected = _linear(value * act(gate), ffn.down_proj)
    torch.testing.assert_close(ffn(x), expected)


@pytest.mark.parametrize("approximate,act", [("tanh", _gelu_tanh), ("none", _gelu_erf)])
def test_gelu_mlp_follows_its_formula(approximate, act):
    """The GELU MLP is ``Down(GELU(Up(x)))`` with the tanh (DiT) or the exact erf GELU."""
    spec = {"type": "gelu_mlp", "bias": True, "zero_init": False, "approximate": approximate}
    mlp = FFN.build(spec, width=6, d_ff=10, dropout=0.0).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64) * 2
    torch.testing.assert_close(mlp(x), _linear(act(_linear(x, mlp.up_proj)), mlp.down_proj))


def test_lerp_skip_moves_from_the_skip_towards_the_upsampled_tokens():
    """``skip + f * (up(x) - skip)`` at f = 0.2 (at the default 0.5 swapped lerp arguments would not show)."""
    split = SKIP.build({"type": "lerp", "init": 0.2}, in_width=8, out_width=4).double()
    assert split.fac.item() == pytest.approx(0.2)
    x, skip = torch.randn(2, 2, 3, 8, dtype=torch.float64), torch.randn(2, 4, 6, 4, dtype=torch.float64)
    up = split.up(x)
    torch.testing.assert_close(split(x, skip), skip + 0.2 * (up - skip))
