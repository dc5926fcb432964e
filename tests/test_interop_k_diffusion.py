"""k-diffusion ``image_transformer_v2`` checkpoints reproduce the authors' outputs."""

from __future__ import annotations

import json

import pytest
import torch

from hourglass.backends import use_backends
from hourglass.interop.k_diffusion import convert_state_dict, from_k_diffusion, spec_from_k_diffusion
from tests._reference import load_reference


@pytest.fixture(scope="module")
def reference():
    return load_reference()


def _run(config, tensors, **backends):
    model = from_k_diffusion(config, {k: v for k, v in tensors.items() if k.startswith("model.")}).eval()
    with torch.no_grad(), use_backends(**backends):
        return model(
            tensors["input.x"], tensors["input.sigma"],
            class_cond=tensors["input.class_cond"], aug_cond=tensors["input.aug_cond"],
        )


@pytest.mark.parametrize(
    "backends",
    [
        {"neighborhood": "torch", "global": "torch"},
        {"neighborhood": "torch", "global": "sdpa"},
        pytest.param({"neighborhood": "natten", "global": "sdpa"}, id="natten"),
    ],
    ids=lambda b: "-".join(b.values()),
)
def test_reference_output_reproduced(reference, backends):
    if backends["neighborhood"] == "natten":
        pytest.importorskip("natten", reason="natten is an optional extra (pip install natten)")
    config, tensors = reference
    out = _run(config, tensors, **backends)
    err = (out - tensors["output"]).abs().max().item()
    assert err < 1e-4, f"max abs error {err}"


def test_spec_follows_the_config(reference):
    config, _ = reference
    spec = spec_from_k_diffusion(config)
    model = config["model"]
    assert [lv.depth for lv in spec.levels] == model["depths"]
    assert [lv.width for lv in spec.levels] == model["widths"]
    assert spec.num_classes == config["dataset"]["num_classes"]
    assert [lv.attention.type for lv in spec.levels] == ["neighborhood", "neighborhood", "global"]


def test_prefixes_are_stripped_and_mismatches_named(reference):
    config, tensors = reference
    sd = {"model_ema.inner_model." + k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    assert "patch_in.proj.weight" in convert_state_dict(sd)
    broken = dict(sd)
    broken.pop("model_ema.inner_model.out_norm.scale")
    with pytest.raises(ValueError, match="missing \\['out_norm.scale'\\]"):
        from_k_diffusion(config, broken)
    bad = json.loads(json.dumps(config))
    bad["model"]["widths"][0] = 96
    with pytest.raises(ValueError, match="shape mismatches"):
        from_k_diffusion(bad, sd)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"type": "image_v1"}, "image_transformer_v2"),
        ({"self_attns": [{"type": "criss-cross"}] * 3}, "unknown k-diffusion attention type 'criss-cross'"),
        ({"depths": [1, 1]}, "one entry per level"),
    ],
)
def test_bad_configs_are_refused(reference, change, match):
    config = json.loads(json.dumps(reference[0]))
    config["model"].update(change)
    with pytest.raises(ValueError, match=match):
        spec_from_k_diffusion(config)


@pytest.mark.parametrize(
    "attention",
    [
        {"type": "shifted-window", "d_head": 32, "window_size": 4},
        {"type": "none"},
        {"type": "neighborhood", "d_head": 32, "kernel_size": 5},
    ],
)
def test_every_attention_kind_converts_and_round_trips(attention):
    config = {
        "model": {
            "type": "image_transformer_v2", "input_channels": 3, "input_size": [32, 64], "patch_size": [2, 2],
            "depths": [2, 1], "widths": [64, 128], "d_ffs": [128, 256], "self_attns": [attention, {"type": "global"}],
            "dropout_rate": [0.0, 0.0], "mapping_depth": 1, "mapping_width": 64, "mapping_d_ff": 128,
            "mapping_cond_dim": 6,
        },
        "dataset": {"num_classes": 0},
    }
    spec = spec_from_k_diffusion(config)
    from hourglass import create_model

    source = create_model(spec)
    # An hourglass state_dict renamed back to k-diffusion names must load to the same model.
    inverse = _to_k_diffusion_names(source.state_dict())
    model = from_k_diffusion(config, inverse)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def _to_k_diffusion_names(sd):
    """The inverse renaming, written independently of the converter's rules."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "mapping":
            rest = parts[1:]
            if rest[0] == "net":
                new = "mapping." + ".".join(rest[1:])
            elif rest[0] == "cond_in_proj":
                new = "mapping_cond_in_proj." + ".".join(rest[1:])
            else:
                new = ".".join(rest)
        elif parts[0] in ("encoder", "decoder", "middle"):
            head = {"encoder": "down_levels", "decoder": "up_levels", "middle": "mid_level"}[parts[0]]
            n = 3 if parts[0] != "middle" else 2
            layer, sub = parts[:n], parts[n:]
            sub_map = {"attn_norm": "self_attn.norm", "attn": "self_attn", "ffn_norm": "ff.norm", "ffn": "ff"}
            new = ".".join([head, *layer[1:], sub_map[sub[0]], *sub[1:]])
        elif parts[0] == "splits" and parts[2] == "up":
            new = ".".join(["splits", parts[1], *parts[3:]])
        else:
            new = key
        out["model." + new] = value
    return out


def test_missing_keys_get_k_diffusion_defaults():
    config = {"model": {"type": "image_transformer_v2", "input_channels": 3, "input_size": [64, 64],
                        "patch_size": [4, 4], "depths": [1, 1, 2], "widths": [64, 128, 256],
                        "mapping_width": 128, "dropout_rate": None, "self_attns": None},
              "dataset": {"num_classes": 0}}
    spec = spec_from_k_diffusion(config)
    kinds = [(lv.attention.type, lv.attention.d_head, getattr(lv.attention, "kernel_size", None)) for lv in spec.levels]
    assert kinds == [("neighborhood", 64, 7), ("neighborhood", 64, 7), ("global", 64, None)]
    assert [lv.d_ff for lv in spec.levels] == [192, 384, 768] and [lv.dropout for lv in spec.levels] == [0.0] * 3
    assert spec.mapping.d_ff == 3 * 128 and spec.mapping.depth == 2


def test_keys_k_diffusion_ignores_change_nothing():
    base = {"type": "image_transformer_v2", "input_channels": 3, "input_size": [32, 32], "patch_size": [2, 2],
            "depths": [1, 1], "widths": [64, 128], "self_attns": [
                {"type": "neighborhood", "d_head": 32, "kernel_size": 5, "dilation": 2}, {"type": "global"}]}
    (level, _) = spec_from_k_diffusion(base).levels
    assert level.attention.dilation == 1 and level.attention.kernel_size == 5


def test_without_input_size_the_spec_gets_a_size_every_level_fits():
    config = {"type": "image_transformer_v2", "input_channels": 3, "patch_size": [4, 4], "depths": [1, 1],
              "widths": [96, 192], "self_attns": [{"type": "shifted-window", "d_head": 32, "window_size": 12},
                                                  {"type": "global", "d_head": 32}]}
    spec = spec_from_k_diffusion(config)
    side = spec.input_size[0] if isinstance(spec.input_size, tuple) else spec.input_size
    assert side >= 256 and (side // 4) % 12 == 0  # the level-0 grid is a whole number of windows


def test_without_a_dataset_section_the_class_count_comes_from_the_weights():
    model_section = {
        "type": "image_transformer_v2", "input_channels": 3, "input_size": [16, 16], "patch_size": [2, 2],
        "depths": [1, 1], "widths": [32, 64], "self_attns": [{"type": "global", "d_head": 16}] * 2,
        "mapping_width": 32, "mapping_depth": 1,
    }
    from hourglass import create_model

    source = create_model(spec_from_k_diffusion({"model": model_section, "dataset": {"num_classes": 7}})).eval()
    with torch.no_grad():
        for p in source.parameters():  # a fresh HDiT outputs exactly 0: give it weights that show differences
            if p.ndim >= 2:  # matrices and embeddings (scales stay positive)
                p.add_(torch.randn_like(p) * 0.05)
    model = from_k_diffusion(model_section, _to_k_diffusion_names(source.state_dict()))
    assert model.spec.num_classes == 7
    model.eval()
    x, sigma, y = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0]), torch.tensor([3, 7])
    with torch.no_grad():
        out = model(x, sigma, class_cond=y)
        assert out.abs().max() > 1e-3
        torch.testing.assert_close(out, source(x, sigma, class_cond=y))
