"""DiT: the paper's sizes, DiT's equations, training, component swaps and errors (Peebles & Xie 2023)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hourglass import count_gmacs, create_model, list_models
from hourglass.models import get_preset, model_spec
from hourglass.nn.dit_mapping import timestep_embedding
from hourglass.recipe import build_model, load_recipe
from tests.conftest import unzero_

ROOT = Path(__file__).resolve().parents[1]
DIT_PRESETS = [f"dit_{s}_{p}" for s in ("s", "b", "l", "xl") for p in (2, 4, 8)]
SIZES = {"s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- the paper's numbers ------------------------------------------------------------------------
def test_dit_xl_2_preset_is_the_published_latent_model():
    with torch.device("meta"):
        model = create_model("dit_xl_2")
    spec = model.spec
    assert (spec.in_channels, spec.resolved_out_channels, spec.input_size, spec.num_classes) == (4, 8, 32, 1000)
    assert model.mapping.class_emb.num_embeddings == 1001  # 1000 classes + the null class
    # DiT's trainable parameters (its models.py also stores the fixed 256 x 1152 sin-cos table: 675,129,632 in all)
    assert n_params(model) == 674_834_720
    assert n_params(model) + 256 * 1152 == 675_129_632
    assert count_gmacs(model) == pytest.approx(118.621421568, abs=1e-9)  # the DiT paper: 118.6 Gflops


def test_dit_b_4_pixel_preset_is_the_hdit_ablation_baseline():
    spec = model_spec("dit_b_4_pixel")
    assert (spec.in_channels, spec.resolved_out_channels, spec.input_size) == (3, 3, 128)
    with torch.device("meta"):
        model = create_model("dit_b_4_pixel")
    assert n_params(model) == 130_352_688
    assert count_gmacs(model) == pytest.approx(106.420371456, abs=1e-9)  # the HDiT paper: 106
    # the same network as the spelled-out recipe of the ablation's row R1
    assert build_model(load_recipe(ROOT / "recipes" / "dit_b4_imagenet128.toml")).spec == spec


def test_presets_follow_the_size_table():
    assert set(DIT_PRESETS) | {"dit_test", "dit_b_4_pixel"} <= set(list_models("dit*"))
    for name in DIT_PRESETS:
        size, patch = name.split("_")[1:]
        spec = model_spec(name)
        depth, width, heads = SIZES[size]
        assert (spec.depth, spec.width, spec.width // spec.attention.d_head) == (depth, width, heads)
        assert spec.patch_size == int(patch) and spec.num_classes == 1000
        # DiT's setting: 4x32x32 SD-VAE latents (256 px), learned sigma
        assert (spec.in_channels, spec.resolved_out_channels, spec.input_size) == (4, 8, 32)
        assert get_preset(name)["input_size"] == 32


# -- DiT's equations ----------------------------------------------------------------------------
def dit_sincos_table(d: int, h: int, w: int) -> np.ndarray:
    """DiT's ``get_2d_sincos_pos_embed`` written from its definition, ``(h*w, d)`` row-major."""
    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))  # "xy"
    return np.concatenate([one_d(d // 2, cols), one_d(d // 2, rows)], axis=1)


def reference_dit(model, x, sigma, y):
    """DiT's forward (Peebles & Xie, models.py) with plain torch ops on the model's weights."""
    spec = model.spec
    p, d, c_in, c_out = spec.patch_size, spec.width, spec.in_channels, spec.resolved_out_channels
    weight = model.patch_in.proj.weight.view(d, p, p, c_in).permute(0, 3, 1, 2)  # as a conv kernel
    tokens = F.conv2d(x, weight, model.patch_in.proj.bias, stride=p)
    b, _, h, w = tokens.shape
    tokens = tokens.flatten(2).transpose(1, 2) + torch.from_numpy(dit_sincos_table(d, h, w)).float()
    t = torch.log(sigma) / 4
    freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
    t_freq = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    mlp = model.mapping.time_mlp
    c = F.linear(F.silu(F.linear(t_freq, mlp[0].weight, mlp[0].bias)), mlp[2].weight, mlp[2].bias)
    c = c + model.mapping.class_emb.weight[y]

    def modulate(v, shift, scale):
        return F.layer_norm(v, (d,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]

    heads = d // spec.attention.d_head
    for layer in model.layers:
        ada = torch.cat([layer.attn_norm.linear.weight, layer.ffn_norm.linear.weight])
        ada_b = torch.cat([layer.attn_norm.linear.bias, layer.ffn_norm.linear.bias])
        s_msa, sc_msa, g_msa, s_mlp, sc_mlp, g_mlp = F.linear(F.silu(c), ada, ada_b).chunk(6, dim=1)
        qkv = F.linear(modulate(tokens, s_msa, sc_msa), layer.attn.qkv_proj.weight, layer.attn.qkv_proj.bias)
        q, k, v = qkv.view(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
        a = F.linear(a.transpose(1, 2).reshape(b, h * w, d), layer.attn.out_proj.weight, layer.attn.out_proj.bias)
        tokens = tokens + g_msa[:, None] * a
        hid = F.gelu(F.linear(modulate(tokens, s_mlp, sc_mlp), layer.ffn.up_proj.weight, layer.ffn.up_proj.bias),
                     approximate="tanh")
        tokens = tokens + g_mlp[:, None] * F.linear(hid, layer.ffn.down_proj.weight, layer.ffn.down_proj.bias)
    final = model.final_layer
    shift, scale = F.linear(F.silu(c), final.modulation.weight, final.modulation.bias).chunk(2, dim=1)
    out = F.linear(modulate(tokens, shift, scale), final.unpatch.proj.weight, final.unpatch.proj.bias)
    out = torch.einsum("nhwpqc->nchpwq", out.reshape(b, h, w, p, p, c_out))
    return out.reshape(b, c_out, h * p, w * p)


@pytest.mark.parametrize("size", [(16, 16), (16, 24)])
def test_forward_matches_dit_equations(size):
    model = unzero_(create_model("dit_test", out_channels=6)).eval()
    x, sigma, y = torch.randn(2, 3, *size), torch.tensor([0.2, 5.0]), torch.tensor([3, 10])
    with torch.no_grad():
        torch.testing.assert_close(model(x, sigma, class_cond=y), reference_dit(model, x, sigma, y),
                                   atol=1e-5, rtol=1e-4)


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0.0, 0.5, -1.25])
    emb = timestep_embedding(t, 8, max_period=100.0)
    freqs = 100.0 ** (-torch.arange(4) / 4)
    torch.testing.assert_close(emb, torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], 1))
    assert timestep_embedding(t, 7).shape == (3, 7) and (timestep_embedding(t, 7)[:, -1] == 0).all()


def test_fresh_dit_outputs_exact_zero_and_is_dit_initialised():
    model = create_model("dit_test")
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([0.5, 3.0]), class_cond=torch.tensor([1, 10]))
    assert out.shape == (2, 3, 16, 16) and torch.equal(out, torch.zeros_like(out))
    for layer in model.layers:  # adaLN-Zero: every branch starts closed, the branches themselves do not
        assert not layer.attn_norm.linear.weight.any() and not layer.ffn_norm.linear.weight.any()
        assert layer.attn.out_proj.weight.any() and layer.ffn.down_proj.weight.any()
        assert not layer.attn.qkv_proj.bias.any()
    bound = math.sqrt(6 / (32 + 96))  # Xavier-uniform bound of the qkv projection (32 -> 96)
    assert model.layers[0].attn.qkv_proj.weight.abs().max() <= bound


def test_conditioning_changes_the_output():
    model = unzero_(create_model("dit_test")).eval()
    x = torch.randn(1, 3, 16, 16)
    a = model(x, torch.tensor([1.0]), class_cond=torch.tensor([1]))
    b = model(x, torch.tensor([1.0]), class_cond=torch.tensor([10]))  # the null class
    c = model(x, torch.tensor([2.0]), class_cond=torch.tensor([1]))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_all_zero_aug_cond_means_no_augmentation():
    x, sigma, y = torch.randn(1, 3, 16, 16), torch.tensor([1.0]), torch.tensor([2])
    plain = unzero_(create_model("dit_test")).eval()
    torch.testing.assert_close(plain(x, sigma, class_cond=y, aug_cond=torch.zeros(1, 9)), plain(x, sigma, class_cond=y))
    model = unzero_(create_model("dit_test", mapping={"type": "dit", "augment": True})).eval()
    none = model(x, sigma, class_cond=y)
    assert torch.equal(none, model(x, sigma, class_cond=y, aug_cond=torch.zeros(1, 9)))
    assert not torch.allclose(none, model(x, sigma, class_cond=y, aug_cond=torch.ones(1, 9)))


# -- training -----------------------------------------------------------------------------------
def tiny(name: str, **extra):
    """Preset ``name`` shrunk to 2 layers of width 32 (patch, channels and flags kept)."""
    preset = get_preset(name)
    patch = preset["patch_size"]
    return create_model(name, depth=2, width=32, attention={**preset["attention"], "d_head": 16},
                        input_size=4 * patch, num_classes=10, **extra)


def train_step(model, batch: int = 2):
    spec = model.spec
    h, w = (spec.input_size, spec.input_size) if isinstance(spec.input_size, int) else spec.input_size
    x = torch.randn(batch, spec.in_channels, h, w)
    target = torch.randn(batch, spec.resolved_out_channels, h, w)
    cond = {"class_cond": torch.arange(batch) % (spec.num_classes + 1)} if spec.num_classes else {}
    opt = torch.optim.AdamW(model.param_groups(lr=1e-3))
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.mse_loss(model(x, torch.rand(batch) * 10 + 0.01, **cond), target)
    loss.backward()
    opt.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        out = model(x, torch.ones(batch), **cond)
    return loss, changed, out


@pytest.mark.parametrize("name", DIT_PRESETS + ["dit_test"])
def test_every_preset_trains_a_step(name):
    model = tiny(name) if name != "dit_test" else create_model(name)
    loss, changed, out = train_step(model)
    assert torch.isfinite(loss) and changed > 0
    assert torch.isfinite(out).all() and out.abs().sum() > 0  # the zero-init output layer has moved


def test_gradient_checkpointing_gives_the_same_gradients():
    model = unzero_(create_model("dit_test"))
    x, sigma, cls = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 2.0]), torch.tensor([0, 4])

    def grads():
        model.zero_grad()
        model(x, sigma, class_cond=cls).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.set_gradient_checkpointing(True)
    for a, b in zip(plain, grads(), strict=True):
        torch.testing.assert_close(a, b)


def test_param_groups_put_the_conditioning_in_the_mapping_group():
    model = create_model("dit_test")
    groups = model.param_groups(lr=3e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()), "every parameter exactly once"
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            is_cond = n.startswith("mapping.") or "norm.linear" in n or "final_layer.modulation" in n
            assert g["name"].startswith("mapping") == is_cond, n


def test_state_dict_round_trips_through_the_spec():
    model = unzero_(create_model("dit_test")).eval()
    again = create_model(model.spec.model_dump())
    again.load_state_dict(model.state_dict(), strict=True)
    x, sigma, cls = torch.randn(1, 3, 16, 16), torch.tensor([1.0]), torch.tensor([2])
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x, sigma, class_cond=cls), model(x, sigma, class_cond=cls))


# -- shapes, swaps and errors -------------------------------------------------------------------
@pytest.mark.parametrize("pos_emb", ["sincos_2d", "learned", "axial_rope"])
def test_non_square_and_other_resolutions(pos_emb):
    model = unzero_(create_model("dit_test", pos_emb=pos_emb)).eval()
    for h, w in [(16, 32), (32, 16), (24, 16), (8, 8)]:
        out = model(torch.randn(1, 3, h, w), torch.tensor([1.0]), class_cond=torch.tensor([2]))
        assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()


SWAPS = [
    {"pos_emb": "axial_rope"},
    {"pos_emb": "learned"},
    {"pos_emb": "none"},
    {"ffn": "geglu"},
    {"ffn": {"type": "swiglu", "zero_init": False}},
    {"norm": "ada_rms_norm"},
    {"norm": "layer_norm"},
    {"attention": {"type": "global", "d_head": 16}},  # HDiT's cosine-sim attention
    {"attention": {"type": "neighborhood", "kernel_size": 3, "d_head": 16, "qk_norm": "none"}},
    {"attention": {"type": "shifted_window", "window_size": 4, "d_head": 16}},
    {"attention": "none"},
    {"mapping": {"type": "hdit", "depth": 1, "width": 48}},
    {"mapping": {"type": "dit", "width": 24, "augment": True}},
    {"merge": "token_merge"},
]


@pytest.mark.parametrize("swap", SWAPS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_component_swaps_build_train_and_reach_every_parameter(swap):
    model = unzero_(create_model("dit_test", **swap))
    x, sigma, cls = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 4.0]), torch.tensor([1, 7])
    out = model(x, sigma, class_cond=cls)
    out.square().mean().backward()
    assert out.shape == x.shape and torch.isfinite(out).all()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing


def test_swapped_parts_are_what_the_recipe_asked_for():
    model = create_model("dit_test", pos_emb="axial_rope", ffn="geglu", mapping={"type": "hdit", "width": 48})
    assert model.abs_pos_emb is None and model.layers[0].attn.pos_emb is not None
    assert type(model.layers[0].ffn).__name__ == "GEGLU" and model.mapping.width == 48
    assert model.layers[0].attn_norm.linear.in_features == 48  # adaLN reads the mapping's width


def test_hdit_can_use_the_dit_mapping():
    levels = [{"depth": 1, "width": 32, "attention": {"type": "global", "d_head": 16}}]
    model = create_model({"type": "hdit", "levels": levels, "input_size": 16, "num_classes": 3,
                          "mapping": {"type": "dit", "width": 40}})
    out = model(torch.randn(1, 3, 16, 16), torch.tensor([1.0]), class_cond=torch.tensor([3]))
    assert out.shape == (1, 3, 16, 16) and model.mapping.width == 40
    assert create_model({"type": "hdit", "levels": levels, "input_size": 16, "mapping": "dit"}).mapping.width == 256


def test_dit_mapping_follows_the_model_width_unless_given():
    assert create_model("dit_test").mapping.width == 32
    assert create_model("dit_test", mapping="dit").mapping.width == 32
    assert create_model("dit_test", width=64, attention={"type": "global", "d_head": 16}).mapping.width == 64
    assert create_model("dit_test", mapping={"type": "dit", "width": 48}).mapping.width == 48
    spec = create_model("dit_test").spec
    again = create_model(spec.model_dump())  # the resolved width is written out and read back
    assert again.spec == spec and again.mapping.width == 32


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"attention": {"type": "shifted_window", "window_size": 3, "d_head": 16}}, "window_size: 3 does not divide"),
        ({"attention": {"type": "neighborhood", "kernel_size": 9, "d_head": 16}}, "kernel_size: 9"),
        ({"width": 40}, "width: 40 is not divisible by the attention's d_head 16"),
        ({"input_size": 15}, "input_size: 15x15 is not divisible by the model's stride 2x2"),
        ({"depth": 0}, "depth"),
        ({"attention": {"type": "global", "d_head": 4}, "pos_emb": "axial_rope"}, "d_head divisible by 8"),
    ],
)
def test_impossible_configurations_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        create_model("dit_test", **overrides)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m: m(torch.randn(1, 4, 16, 16), 1.0, class_cond=torch.tensor([0])), "4 channels"),
        (lambda m: m(torch.randn(1, 3, 15, 16), 1.0, class_cond=torch.tensor([0])), "divisible by 2x2"),
        (lambda m: m(torch.randn(1, 3, 16, 16), 0.0, class_cond=torch.tensor([0])), "finite and > 0"),
        (lambda m: m(torch.randn(1, 3, 16, 16), 1.0, class_cond=torch.tensor([11])), r"ids must be in \[0, 10\]"),
        (lambda m: m(torch.randn(1, 3, 16, 16), 1.0), "class-conditional"),
        (lambda m: m(torch.randn(2, 3, 16, 16), torch.ones(3), class_cond=torch.tensor([0, 1])), r"shape \(2,\)"),
        (lambda m: m(torch.randn(1, 3, 16, 16), 1.0, class_cond=torch.tensor([0]), aug_cond=torch.ones(1, 9)),
         "set mapping.augment = true"),
    ],
)
def test_bad_inputs_give_clear_errors(call, match):
    model = create_model("dit_test")
    with pytest.raises((ValueError, TypeError), match=match):
        call(model)


# -- recipes ------------------------------------------------------------------------------------
DIT_RECIPES = sorted((ROOT / "recipes").glob("dit_*.toml"))


def test_dit_recipes_exist():
    assert len(DIT_RECIPES) >= 2


@pytest.mark.parametrize("path", DIT_RECIPES, ids=lambda p: p.name)
def test_dit_recipes_validate_and_build(path):
    recipe = load_recipe(path)
    model = build_model(recipe)
    assert recipe.model.type == "dit" and type(model).__name__ == "DiT"
