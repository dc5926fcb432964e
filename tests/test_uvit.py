"""U-ViT: the paper's sizes, U-ViT's equations, long skips, training, swaps and errors (Bao et al. 2023)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hourglass import count_gmacs, create_model, list_models
from hourglass.models import get_preset, model_spec
from hourglass.recipe import build_model, load_recipe
from tests.conftest import unzero_
from tests.test_dit import train_step

ROOT = Path(__file__).resolve().parents[1]
UVIT_PRESETS = ["uvit_s_2", "uvit_m_2", "uvit_l_2", "uvit_h_2", "uvit_m_4", "uvit_l_4"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- the paper's numbers ------------------------------------------------------------------------
@pytest.mark.parametrize("name,millions", [("uvit_l_2", 287), ("uvit_h_2", 501)])
def test_imagenet256_latent_presets_match_param_counts(name, millions):
    with torch.device("meta"):
        model = create_model(name)
    spec = model.spec
    assert (spec.in_channels, spec.input_size, spec.patch_size) == (4, 32, 2)
    assert model.cond_tokens.class_emb.num_embeddings == 1001  # 1000 classes + the null class
    assert abs(n_params(model) / (millions * 1e6) - 1) < 0.01, n_params(model)


def test_presets_and_their_depth_convention():
    assert set(UVIT_PRESETS) | {"uvit_test"} <= set(list_models("uvit*"))
    table = {"uvit_s_2": (12, 512, 8), "uvit_m_2": (16, 768, 12), "uvit_l_2": (20, 1024, 16),
             "uvit_h_2": (28, 1152, 16)}
    for name, (depth, width, heads) in table.items():
        spec = model_spec(name)
        assert (spec.depth, spec.width, spec.width // spec.attention.d_head) == (depth, width, heads)
    with torch.device("meta"):
        model, huge = create_model("uvit_l_2"), create_model("uvit_h_2")
    # depth 20 = 10 in blocks + 1 middle + 10 out blocks: the U-ViT paper's 21 layers
    assert (len(model.in_blocks), len(model.out_blocks), len(model.skip_projs)) == (10, 10, 10)
    assert model.final_conv is not None and huge.final_conv is None  # as in U-ViT's two configs


def test_gmacs_count_every_token_including_the_condition_tokens():
    spec = model_spec("uvit_test")
    n, d, blocks = 8 * 8 + 2, spec.width, spec.depth + 1
    per_block = n * (4 * d * d + 2 * 4 * d * d) + 2 * n * n * d  # qkv + out, MLP, q k^T and a v
    patch = 64 * (12 * d + d * 12) + spec.depth // 2 * n * 2 * d * d  # patch in/out, long-skip projections
    expected = blocks * per_block + patch + 16 * 16 * 3 * 3 * 9  # + the final 3x3 conv
    assert count_gmacs("uvit_test") * 1e9 == pytest.approx(expected, rel=1e-9)


# -- U-ViT's equations --------------------------------------------------------------------------
def reference_uvit(model, x, sigma, y):
    """U-ViT's forward (Bao et al., libs/uvit.py) with plain torch ops on the model's weights."""
    spec = model.spec
    p, d, c_in, c_out = spec.patch_size, spec.width, spec.in_channels, spec.resolved_out_channels
    weight = model.patch_in.proj.weight.view(d, p, p, c_in).permute(0, 3, 1, 2)  # as a conv kernel
    tokens = F.conv2d(x, weight, model.patch_in.proj.bias, stride=p)
    b, _, h, w = tokens.shape
    tokens = tokens.flatten(2).transpose(1, 2)
    t = torch.log(sigma) / 4
    freqs = torch.exp(-math.log(10000) * torch.arange(d // 2) / (d // 2))
    time_token = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    label_token = model.cond_tokens.class_emb.weight[y]
    seq = torch.cat([label_token[:, None], time_token[:, None], tokens], dim=1)
    grid_pos = model.abs_pos_emb.weight
    if grid_pos.shape[:2] != (h, w):
        grid_pos = F.interpolate(grid_pos.permute(2, 0, 1)[None], size=(h, w), mode="bicubic")[0].permute(1, 2, 0)
    seq = seq + torch.cat([model.extra_pos, grid_pos.reshape(h * w, d)])
    heads = d // spec.attention.d_head

    def block(layer, v, skip=None, skip_proj=None):
        if skip is not None:
            v = F.linear(torch.cat([v, skip], dim=-1), skip_proj.weight, skip_proj.bias)
        n1, n2 = layer.attn_norm.norm, layer.ffn_norm.norm
        qkv = F.linear(F.layer_norm(v, (d,), n1.weight, n1.bias, eps=1e-5), layer.attn.qkv_proj.weight)
        q, k, val = qkv.view(b, v.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ val
        v = v + F.linear(a.transpose(1, 2).reshape(b, -1, d), layer.attn.out_proj.weight, layer.attn.out_proj.bias)
        hid = F.gelu(F.linear(F.layer_norm(v, (d,), n2.weight, n2.bias, eps=1e-5), layer.ffn.up_proj.weight,
                              layer.ffn.up_proj.bias))
        return v + F.linear(hid, layer.ffn.down_proj.weight, layer.ffn.down_proj.bias)

    skips = []
    for layer in model.in_blocks:
        seq = block(layer, seq)
        skips.append(seq)
    seq = block(model.mid_block, seq)
    for layer, proj in zip(model.out_blocks, model.skip_projs, strict=True):
        seq = block(layer, seq, skips.pop(), proj)
    norm = model.out_norm.norm
    seq = F.layer_norm(seq, (d,), norm.weight, norm.bias, eps=1e-5)
    out = F.linear(seq, model.patch_out.proj.weight, model.patch_out.proj.bias)[:, 2:]
    out = out.reshape(b, h, w, p, p, c_out).permute(0, 5, 1, 3, 2, 4).reshape(b, c_out, h * p, w * p)
    return F.conv2d(out, model.final_conv.weight, model.final_conv.bias, padding=1)


@pytest.mark.parametrize("size", [(16, 16), (16, 24)])
def test_forward_matches_uvit_equations(size):
    model = unzero_(create_model("uvit_test", depth=4)).eval()
    x, sigma, y = torch.randn(2, 3, *size), torch.tensor([0.2, 5.0]), torch.tensor([3, 10])
    with torch.no_grad():
        torch.testing.assert_close(model(x, sigma, class_cond=y), reference_uvit(model, x, sigma, y),
                                   atol=1e-5, rtol=1e-4)


def test_long_skips_connect_in_block_i_to_out_block_from_the_end():
    model = create_model("uvit_test", depth=4).eval()
    seen = {}
    for name in ("in_blocks.0", "in_blocks.1", "skip_projs.0", "skip_projs.1"):
        module = model.get_submodule(name)
        module.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, (args[0], out)))
    model(torch.randn(1, 3, 16, 16), torch.tensor([1.0]), class_cond=torch.tensor([0]))
    # out block 0 takes in block 1's output (the innermost), out block 1 takes in block 0's
    assert torch.equal(seen["skip_projs.0"][0][..., 32:], seen["in_blocks.1"][1])
    assert torch.equal(seen["skip_projs.1"][0][..., 32:], seen["in_blocks.0"][1])


def test_init_is_uvit_and_conditioning_matters():
    model = create_model("uvit_test").eval()
    qkv = model.in_blocks[0].attn.qkv_proj
    assert qkv.bias is None and 0.017 < qkv.weight.std() < 0.023  # trunc_normal(std=0.02), as U-ViT
    assert not model.skip_projs[0].bias.any()
    x = torch.randn(1, 3, 16, 16)
    a = model(x, torch.tensor([1.0]), class_cond=torch.tensor([1]))
    assert torch.isfinite(a).all() and a.abs().sum() > 0  # no zero-init output: U-ViT starts non-zero
    assert not torch.allclose(a, model(x, torch.tensor([1.0]), class_cond=torch.tensor([10])))
    assert not torch.allclose(a, model(x, torch.tensor([3.0]), class_cond=torch.tensor([1])))


def test_all_zero_aug_cond_means_no_augmentation():
    x, sigma, y = torch.randn(1, 3, 16, 16), torch.tensor([1.0]), torch.tensor([2])
    plain = create_model("uvit_test").eval()
    torch.testing.assert_close(plain(x, sigma, class_cond=y, aug_cond=torch.zeros(1, 9)), plain(x, sigma, class_cond=y))
    model = create_model("uvit_test", augment=True).eval()
    none = model(x, sigma, class_cond=y)
    assert torch.equal(none, model(x, sigma, class_cond=y, aug_cond=torch.zeros(1, 9)))
    assert not torch.allclose(none, model(x, sigma, class_cond=y, aug_cond=torch.ones(1, 9)))


# -- training -----------------------------------------------------------------------------------
def tiny(name: str, **extra):
    """Preset ``name`` shrunk to depth 2 and width 32 (patch, channels, final conv kept)."""
    preset = get_preset(name)
    patch = preset["patch_size"]
    return create_model(name, depth=2, width=32, attention={**preset["attention"], "d_head": 16},
                        input_size=4 * patch, num_classes=10, **extra)


@pytest.mark.parametrize("name", UVIT_PRESETS + ["uvit_test"])
def test_every_preset_trains_a_step(name):
    model = tiny(name) if name != "uvit_test" else create_model(name)
    loss, changed, out = train_step(model)
    assert torch.isfinite(loss) and changed == len(list(model.parameters()))
    assert torch.isfinite(out).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    model = create_model("uvit_test", depth=4)
    x, sigma, cls = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 2.0]), torch.tensor([0, 4])

    def grads():
        model.zero_grad()
        model(x, sigma, class_cond=cls).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.set_gradient_checkpointing(True)
    for a, b in zip(plain, grads(), strict=True):
        torch.testing.assert_close(a, b)


def test_param_groups_cover_every_parameter_once_at_the_base_lr():
    model = create_model("uvit_test")
    groups = model.param_groups(lr=3e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert all(g["lr"] == 3e-4 for g in groups)  # no mapping network, no adaptive norm


# -- shapes, swaps and errors -------------------------------------------------------------------
@pytest.mark.parametrize("pos_emb", ["learned", "sincos_2d", "axial_rope"])
def test_non_square_and_other_resolutions(pos_emb):
    model = create_model("uvit_test", pos_emb=pos_emb).eval()
    for h, w in [(16, 32), (32, 16), (24, 16), (8, 8)]:
        out = model(torch.randn(1, 3, h, w), torch.tensor([1.0]), class_cond=torch.tensor([2]))
        assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()


SWAPS = [
    {"pos_emb": "axial_rope"},
    {"pos_emb": "sincos_2d"},
    {"pos_emb": "none"},
    {"ffn": "geglu"},
    {"ffn": {"type": "swiglu", "zero_init": False}},
    {"norm": "rms_norm"},
    {"attention": {"type": "global", "d_head": 16}},  # HDiT's cosine-sim attention
    {"num_classes": 0},
    {"mlp_time_embed": True},
    {"augment": True},
    {"mapping_cond_dim": 5},
    {"skip": False, "final_conv": False},
    {"out_channels": 6},
]


@pytest.mark.parametrize("swap", SWAPS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_component_swaps_build_train_and_reach_every_parameter(swap):
    model = unzero_(create_model("uvit_test", **swap))
    spec = model.spec
    cond = {"class_cond": torch.tensor([1, 10])} if spec.num_classes else {}
    if spec.mapping_cond_dim:
        cond["mapping_cond"] = torch.randn(2, spec.mapping_cond_dim)
    if spec.augment:
        cond["aug_cond"] = torch.randn(2, 9)
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([0.3, 4.0]), **cond)
    out.square().mean().backward()
    assert out.shape == (2, spec.resolved_out_channels, 16, 16) and torch.isfinite(out).all()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing
    expected_tokens = 1 + bool(spec.num_classes) + spec.augment + bool(spec.mapping_cond_dim)
    assert model.n_extra == expected_tokens


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"attention": {"type": "neighborhood", "kernel_size": 3, "d_head": 16}},
         "attention.type: 'neighborhood' does not connect every token in one layer"),
        ({"attention": {"type": "shifted_window", "window_size": 4, "d_head": 16}},
         "'shifted_window' does not connect every token"),
        ({"attention": "none"}, "'none' does not connect every token.*ignore the noise level and class"),
        ({"depth": 5}, "depth: 5 is odd"),
        ({"norm": "ada_rms_norm"}, "conditions through tokens"),
        ({"norm": "ada_layer_norm_zero"}, "conditions through tokens"),
        ({"width": 40}, "width: 40 is not divisible by the attention's d_head 16"),
        ({"input_size": 15}, "input_size: 15x15 is not divisible by the model's stride 2x2"),
    ],
)
def test_impossible_configurations_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        create_model("uvit_test", **overrides)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m: m(torch.randn(1, 4, 16, 16), 1.0, class_cond=torch.tensor([0])), "4 channels"),
        (lambda m: m(torch.randn(1, 3, 16, 17), 1.0, class_cond=torch.tensor([0])), "divisible by 2x2"),
        (lambda m: m(torch.randn(1, 3, 16, 16), -2.0, class_cond=torch.tensor([0])), "finite and > 0"),
        (lambda m: m(torch.randn(1, 3, 16, 16), 1.0, class_cond=torch.tensor([-1])), r"ids must be in \[0, 10\]"),
        (lambda m: m(torch.randn(1, 3, 16, 16), 1.0), "class-conditional"),
        (lambda m: m(torch.randn(1, 3, 16, 16), 1.0, class_cond=torch.tensor([0]), mapping_cond=torch.ones(1, 2)),
         "mapping_cond_dim = 0"),
        (lambda m: m(torch.randn(1, 3, 16, 16), 1.0, class_cond=torch.tensor([0]), aug_cond=torch.ones(1, 9)),
         "set model.augment = true"),
    ],
)
def test_bad_inputs_give_clear_errors(call, match):
    model = create_model("uvit_test")
    with pytest.raises((ValueError, TypeError), match=match):
        call(model)


# -- recipes ------------------------------------------------------------------------------------
UVIT_RECIPES = sorted((ROOT / "recipes").glob("uvit_*.toml"))


def test_uvit_recipes_exist():
    assert len(UVIT_RECIPES) >= 2


@pytest.mark.parametrize("path", UVIT_RECIPES, ids=lambda p: p.name)
def test_uvit_recipes_validate_and_build(path):
    recipe = load_recipe(path)
    model = build_model(recipe)
    assert recipe.model.type == "uvit" and type(model).__name__ == "UViT"
