"""Official DiT and U-ViT checkpoints: renaming, round trips and output parity with the official maths.

``RefDiT`` and ``RefUViT`` below re-implement, in plain torch and with the official parameter names,
the forward passes of facebookresearch/DiT ``models.py`` (DiT blocks with adaLN-Zero, final layer,
timestep and label embedders, fixed sin-cos ``pos_embed``) and baofff/U-ViT ``libs/uvit.py`` (time
and label tokens, one learned ``pos_embed``, long skips, ``decoder_pred``, optional 3x3 conv). They are
written here from the published equations (this file's code, not the official one), loaded with
random weights under the official names, converted, and compared with hourglass's models.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hourglass import count_gmacs, create_model
from hourglass.interop.dit import convert_state_dict, from_dit, spec_from_dit, to_dit_state_dict
from hourglass.interop.uvit import RELEASES, UViTRelease, from_uvit, spec_from_release, to_uvit_state_dict


def sinusoid(t: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """GLIDE's timestep embedding as DiT and U-ViT use it: ``[cos(t f), sin(t f)]``, ``f = 10000^(-i/half)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half).to(dtype)
    args = t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def dit_pos_embed(dim: int, side: int) -> np.ndarray:
    """DiT's fixed 2D sin-cos table (MAE's), ``(side*side, dim)``: first half the column, second the row."""
    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    cols, rows = np.meshgrid(np.arange(side, dtype=np.float32), np.arange(side, dtype=np.float32))
    return np.concatenate([one_d(dim // 2, cols), one_d(dim // 2, rows)], axis=1)


class _Attention(nn.Module):
    """timm's / U-ViT's attention: ``qkv`` to (3, heads, d_head), softmax(q k^T / sqrt(d_head)) v, ``proj``."""

    def __init__(self, d: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=qkv_bias)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, d: int, approximate: str) -> None:
        super().__init__()
        self.fc1, self.fc2, self.approximate = nn.Linear(d, 4 * d), nn.Linear(4 * d, d), approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


def _modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class RefDiTBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.attn = _Attention(d, heads, qkv_bias=True)
        self.mlp = _Mlp(d, "tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c):
        d = x.shape[-1]
        s1, sc1, g1, s2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g1[:, None] * self.attn(_modulate(F.layer_norm(x, (d,), eps=1e-6), s1, sc1))
        return x + g2[:, None] * self.mlp(_modulate(F.layer_norm(x, (d,), eps=1e-6), s2, sc2))


class RefDiT(nn.Module):
    """DiT's ``models.DiT`` (forward, names, learned sigma as ``out = 2 in``) on random weights."""

    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                 num_classes=10, learn_sigma=True) -> None:
        super().__init__()
        d, p = hidden_size, patch_size
        self.p, self.c_out = p, in_channels * 2 if learn_sigma else in_channels
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(in_channels, d, p, stride=p)
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.y_embedder = nn.Module()
        self.y_embedder.embedding_table = nn.Embedding(num_classes + 1, d)  # + the CFG row (dropout > 0)
        side = input_size // p
        self.pos_embed = nn.Parameter(torch.from_numpy(dit_pos_embed(d, side)).float()[None], requires_grad=False)
        self.blocks = nn.ModuleList(RefDiTBlock(d, num_heads) for _ in range(depth))
        self.final_layer = nn.Module()
        self.final_layer.linear = nn.Linear(d, p * p * self.c_out)
        self.final_layer.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    def randomize(self, seed: int = 0) -> RefDiT:
        g = torch.Generator().manual_seed(seed)
        for name, param in self.named_parameters():
            if name != "pos_embed":
                param.data = torch.randn(param.shape, generator=g, dtype=param.dtype) * 0.1
        return self

    def to_float64(self) -> RefDiT:
        """In float64, with the sin-cos table at float64 precision (the official one is rounded to float32)."""
        self.double()
        side = int(self.pos_embed.shape[1] ** 0.5)
        self.pos_embed.data = torch.from_numpy(dit_pos_embed(self.pos_embed.shape[-1], side))[None]
        return self

    def forward(self, x, t, y):
        x = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder.mlp(sinusoid(t, 256, x.dtype)) + self.y_embedder.embedding_table(y)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.final_layer.adaLN_modulation(c).chunk(2, dim=1)
        x = self.final_layer.linear(_modulate(F.layer_norm(x, (x.shape[-1],), eps=1e-6), shift, scale))
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, self.p, self.p, self.c_out)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], self.c_out, h * self.p, w * self.p)


class RefUViTBlock(nn.Module):
    def __init__(self, d: int, heads: int, skip: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = _Attention(d, heads, qkv_bias=False)
        self.mlp = _Mlp(d, "none")
        self.skip_linear = nn.Linear(2 * d, d) if skip else None

    def forward(self, x, skip=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefUViT(nn.Module):
    """U-ViT's ``libs.uvit.UViT`` (forward and names) on random weights; ``num_classes`` as U-ViT counts it."""

    def __init__(self, img_size=16, patch_size=2, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                 mlp_time_embed=False, num_classes=-1, conv=True, **_) -> None:
        super().__init__()
        d, p = embed_dim, patch_size
        self.p, self.in_chans, self.d = p, in_chans, d
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, d, p, stride=p)
        self.time_embed = (nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
                           if mlp_time_embed else nn.Identity())
        self.label_emb = nn.Embedding(num_classes, d) if num_classes > 0 else None
        self.extras = 2 if num_classes > 0 else 1
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + (img_size // p) ** 2, d))
        self.in_blocks = nn.ModuleList(RefUViTBlock(d, num_heads, False) for _ in range(depth // 2))
        self.mid_block = RefUViTBlock(d, num_heads, False)
        self.out_blocks = nn.ModuleList(RefUViTBlock(d, num_heads, True) for _ in range(depth // 2))
        self.norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, p * p * in_chans)
        self.final_layer = nn.Conv2d(in_chans, in_chans, 3, padding=1) if conv else nn.Identity()

    def randomize(self, seed: int = 0) -> RefUViT:
        g = torch.Generator().manual_seed(seed)
        for param in self.parameters():
            param.data = torch.randn(param.shape, generator=g, dtype=param.dtype) * 0.1
        return self

    def forward(self, x, timesteps, y=None):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        n = x.shape[1]
        time_token = self.time_embed(sinusoid(timesteps, self.d, x.dtype))[:, None]
        x = torch.cat((time_token, x), dim=1)
        if y is not None:
            x = torch.cat((self.label_emb(y)[:, None], x), dim=1)
        x = x + self.pos_embed
        skips = []
        for blk in self.in_blocks:
            x = blk(x)
            skips.append(x)
        x = self.mid_block(x)
        for blk in self.out_blocks:
            x = blk(x, skips.pop())
        x = self.decoder_pred(self.norm(x))[:, self.extras:]
        h = w = int(n**0.5)
        x = x.reshape(x.shape[0], h, w, self.p, self.p, self.in_chans).permute(0, 5, 1, 3, 2, 4)
        return self.final_layer(x.reshape(x.shape[0], self.in_chans, h * self.p, w * self.p))


def tiny_release(null_class_row: bool = True, **nnet) -> UViTRelease:
    """A U-ViT config as small as ``uvit_test`` (16 px, width 32, depth 2, 2 heads), for the tests."""
    base = {"img_size": 16, "patch_size": 2, "in_chans": 3, "embed_dim": 32, "depth": 2, "num_heads": 2,
            "mlp_ratio": 4, "qkv_bias": False, "mlp_time_embed": False, "num_classes": 11, "conv": True, **nnet}
    return UViTRelease("tiny", "tiny U-ViT", base, "discrete", base["in_chans"] == 4, 1.4, 0.0,
                       null_class_row=null_class_row)


def _inputs(c: int, size: int, dtype: torch.dtype, classes: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, c, size, size, generator=g, dtype=dtype)
    t = torch.tensor([0.0, 17.0, 999.0], dtype=dtype)  # DiT's t = 0 and 999 included
    y = torch.tensor([0, classes - 1, classes], dtype=torch.int64) if classes else None  # the last: "no class"
    return x, t, y


# -- DiT ----------------------------------------------------------------------------------------------
DIT_CASES = [
    pytest.param(dict(in_channels=4, learn_sigma=True, input_size=32), id="latent-learned-sigma"),
    pytest.param(dict(in_channels=4, learn_sigma=False, input_size=16), id="latent-no-learned-sigma"),
    pytest.param(dict(in_channels=3, learn_sigma=True, input_size=16), id="pixel-learned-sigma"),
]


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=["fp32", "fp64"])
@pytest.mark.parametrize("config", DIT_CASES)
def test_converted_dit_reproduces_the_official_forward(config, dtype, atol):
    ref = RefDiT(**config).randomize().eval()
    ref = ref.to_float64() if dtype == torch.float64 else ref
    model = from_dit(ref.state_dict(), "dit_test").to(dtype).eval()
    spec = model.spec
    assert spec.mapping.time_input == "timestep" and spec.in_channels == config["in_channels"]
    assert spec.resolved_out_channels == config["in_channels"] * (2 if config["learn_sigma"] else 1)
    assert (spec.input_size, spec.num_classes) == (config["input_size"], 10)
    x, t, y = _inputs(config["in_channels"], config["input_size"], dtype, 10)
    with torch.no_grad():
        expected, got = ref(x, t, y), model(x, t, class_cond=y)
    assert expected.abs().mean() > 0.1  # random weights: a non-trivial output
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def test_dit_state_dict_round_trips_exactly():
    official = RefDiT().randomize(3).state_dict()
    back = to_dit_state_dict(from_dit(official, "dit_test"))
    assert set(back) == set(official)
    for key, value in official.items():
        torch.testing.assert_close(back[key], value, atol=1e-7 if key == "pos_embed" else 0, rtol=0, msg=key)
    ours = create_model(spec_from_dit(official, "dit_test")).state_dict()
    assert set(convert_state_dict(to_dit_state_dict(create_model(spec_from_dit(official, "dit_test"))))) == set(ours)


@pytest.mark.parametrize("case,match", [
    ("missing", r"missing \['layers\.1\.ffn\.down_proj\.bias'\]"),
    ("unexpected", r"names that are not DiT's: \['blocks\.0\.extra\.weight'\]"),
    ("shape", r"shape mismatches \['final_layer\.unpatch\.proj\.bias: checkpoint \(31,\) vs model \(32,\)'\]"),
    ("preset", r"do not fit preset 'dit_b_4': they have depth 2 \(the preset: 12\), width 32 \(the preset: 768\), "
               r"patch_size 2 \(the preset: 4\)"),
    ("pos_embed", "not DiT's fixed sin-cos table"),
])
def test_dit_conversion_refuses_mismatches_naming_them(case, match):
    state = dict(RefDiT().randomize().state_dict())
    preset = "dit_test"
    if case == "missing":
        del state["blocks.1.mlp.fc2.bias"]
    elif case == "unexpected":
        state["blocks.0.extra.weight"] = torch.zeros(2)
    elif case == "shape":
        state["final_layer.linear.bias"] = torch.zeros(31)
    elif case == "preset":
        preset = "dit_b_4"
    else:
        state["pos_embed"] = state["pos_embed"] + 0.01
    with pytest.raises(ValueError, match=match):
        from_dit(state, preset)


def test_dit_presets_have_the_official_trainable_parameter_counts():
    """DiT-XL/2 and DiT-B/4 built by the reference on the meta device: trainable counts equal the presets'."""
    for preset, kwargs in [("dit_xl_2", dict(hidden_size=1152, depth=28, num_heads=16, num_classes=1000)),
                           ("dit_b_4", dict(hidden_size=768, depth=12, num_heads=12, patch_size=4, num_classes=1000))]:
        with torch.device("meta"):
            ref, model = RefDiT(**kwargs), create_model(preset)
        trainable = sum(p.numel() for p in ref.parameters() if p.requires_grad)
        assert sum(p.numel() for p in model.parameters()) == trainable, preset
    assert count_gmacs("dit_xl_2") == pytest.approx(118.621421568, abs=1e-9)


# -- U-ViT --------------------------------------------------------------------------------------------
UVIT_CASES = [
    pytest.param({}, id="class-conditional"),
    pytest.param({"mlp_time_embed": True}, id="mlp_time_embed"),
    pytest.param({"conv": False}, id="no-conv"),
    pytest.param({"num_classes": -1}, id="unconditional"),
    pytest.param({"in_chans": 4, "img_size": 32, "depth": 4}, id="latent-depth-4"),
]


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=["fp32", "fp64"])
@pytest.mark.parametrize("nnet", UVIT_CASES)
def test_converted_uvit_reproduces_the_official_forward(nnet, dtype, atol):
    release = tiny_release(**nnet)
    ref = RefUViT(**release.nnet).randomize().to(dtype).eval()
    model = from_uvit(ref.state_dict(), release).to(dtype).eval()
    assert model.spec.time_input == "timestep" and model.spec.num_classes == release.num_classes
    n = release.nnet
    x, t, y = _inputs(n["in_chans"], n["img_size"], dtype, release.num_classes)
    t = t.clamp(min=1.0)  # U-ViT's discrete n is in 1..1000 (any real value runs)
    with torch.no_grad():
        expected = ref(x, t, y)
        got = model(x, t, **({"class_cond": y} if y is not None else {}))
    assert expected.abs().mean() > 0.05
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def test_uvit_table_without_a_no_class_row_gets_a_zero_row():
    """U-ViT's ImageNet-64 models (num_classes = 1000, no class dropout): a "no class" row is added."""
    release = tiny_release(num_classes=10, null_class_row=False)
    assert release.num_classes == 10
    ref = RefUViT(**release.nnet).randomize().eval()
    model = from_uvit(ref.state_dict(), release).eval()
    table = model.cond_tokens.class_emb.weight
    assert table.shape == (11, 32) and not table[10].any()
    x, t, y = _inputs(3, 16, torch.float32, 10)
    y = y.clamp(max=9)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, class_cond=y), ref(x, t, y), atol=1e-5, rtol=0)
    back = to_uvit_state_dict(model, null_class_row=False)
    assert torch.equal(back["label_emb.weight"], ref.state_dict()["label_emb.weight"])


@pytest.mark.parametrize("nnet", UVIT_CASES)
def test_uvit_state_dict_round_trips_exactly(nnet):
    release = tiny_release(**nnet)
    official = RefUViT(**release.nnet).randomize(5).state_dict()
    back = to_uvit_state_dict(from_uvit(official, release))
    assert set(back) == set(official)
    for key, value in official.items():
        assert torch.equal(back[key], value), key


@pytest.mark.parametrize("case,match", [
    ("missing", r"missing \['out_blocks\.0\.attn\.qkv_proj\.weight'\]"),
    ("unexpected", r"names that are not U-ViT's: \['extra_token'\]"),
    ("shape", r"shape mismatches \['skip_projs\.0\.weight: checkpoint \(32, 32\) vs model \(32, 64\)'\]"),
    ("pos_embed", r"pos_embed has shape \(1, 60, 32\): U-ViT's table of 2 condition token\(s\) and a 8x8 patch grid"),
])
def test_uvit_conversion_refuses_mismatches_naming_them(case, match):
    release = tiny_release()
    state = dict(RefUViT(**release.nnet).randomize().state_dict())
    if case == "missing":
        del state["out_blocks.0.attn.qkv.weight"]
    elif case == "unexpected":
        state["extra_token"] = torch.zeros(2)
    elif case == "shape":
        state["out_blocks.0.skip_linear.weight"] = torch.zeros(32, 32)
    else:
        state["pos_embed"] = state["pos_embed"][:, :60]
    with pytest.raises(ValueError, match=match):
        from_uvit(state, release)


@pytest.mark.parametrize("name", ["imagenet256_uvit_huge", "imagenet256_uvit_large", "imagenet512_uvit_huge",
                                  "imagenet64_uvit_mid", "cifar10_uvit_small"])
def test_released_configs_have_the_official_parameter_counts(name):
    release = RELEASES[name]
    with torch.device("meta"):
        ref, model = RefUViT(**release.nnet), create_model(spec_from_release(release))
    extra_row = 0 if release.null_class_row or not release.num_classes else model.spec.width  # the added "no class"
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters()) + extra_row


def test_uvit_presets_are_the_released_networks():
    from hourglass.models import model_spec

    for preset, release in [("uvit_h_2", "imagenet256_uvit_huge"), ("uvit_l_2", "imagenet256_uvit_large")]:
        # the same network; the preset takes noise levels (Karras), the conversion DDPM timesteps
        assert model_spec(preset).model_copy(update={"time_input": "timestep"}) == spec_from_release(release)
