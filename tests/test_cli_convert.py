"""``hourglass convert k-diffusion``: against the authors' reference outputs in tests/data/k_diffusion."""

from __future__ import annotations

import json

import pytest
import torch

from hourglass.cli import main
from tests._reference import load_reference


@pytest.fixture(scope="module")
def reference():
    return load_reference()


def _convert(capsys, tmp_path, config, checkpoint, *extra) -> tuple[int, str, str]:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config))
    code = main(["convert", "k-diffusion", str(cfg), str(checkpoint), str(tmp_path / "out"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_convert_writes_recipe_and_weights_that_reproduce_the_reference(capsys, tmp_path, reference, fmt):
    import safetensors.torch

    from hourglass.recipe import build_model, load_recipe

    config, tensors = reference
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if fmt == "pth":
        checkpoint = tmp_path / "ckpt.pth"
        torch.save({"model_ema": state, "step": torch.tensor(3)}, checkpoint)
    else:
        checkpoint = tmp_path / "ckpt.safetensors"
        safetensors.torch.save_file({f"model.{k}": v.contiguous() for k, v in state.items()}, str(checkpoint))
    code, out, err = _convert(capsys, tmp_path, config, checkpoint)
    assert code == 0, err
    assert "wrote" in out and "data.dataset.root" in out  # the config names no image folder
    recipe = load_recipe(tmp_path / "out" / "recipe.toml")
    assert recipe.model.num_classes == 10 and [lv.depth for lv in recipe.model.levels] == [1, 1, 2]
    weights = safetensors.torch.load_file(str(tmp_path / "out" / "model.safetensors"))
    with safetensors.safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert f.metadata()["weights"] == ("ema" if fmt == "pth" else "raw")  # model_ema entry / model.* tensors
    model = build_model(recipe, device="cpu").eval()
    model.load_state_dict(weights)
    from hourglass.backends import available_backends

    if not any(reason is None for reason in available_backends("neighborhood", "cpu").values()):
        pytest.skip("no neighborhood backend runs on this CPU yet")
    with torch.no_grad():
        out = model(tensors["input.x"], tensors["input.sigma"], class_cond=tensors["input.class_cond"],
                    aug_cond=tensors["input.aug_cond"])
    assert (out - tensors["output"]).abs().max() < 1e-4


def test_convert_refuses_mismatched_weights_and_existing_files(capsys, tmp_path, reference):
    config, tensors = reference
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state}, checkpoint)
    wrong = json.loads(json.dumps(config))
    wrong["model"]["widths"][0] = 96
    wrong["model"]["d_ffs"][0] = 288
    code, _, err = _convert(capsys, tmp_path, wrong, checkpoint)
    assert code == 2 and "shape mismatches" in err and "Traceback" not in err
    assert _convert(capsys, tmp_path, config, checkpoint)[0] == 0
    code, _, err = _convert(capsys, tmp_path, config, checkpoint)
    assert code == 2 and "--overwrite" in err
    assert _convert(capsys, tmp_path, config, checkpoint, "--overwrite")[0] == 0


def test_convert_input_errors(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code = main(["convert", "k-diffusion", str(bad), str(tmp_path / "x.pth"), str(tmp_path / "out")])
    assert code == 2 and "not valid JSON" in capsys.readouterr().err
    code, _, err = _convert(capsys, tmp_path, {"model": {"type": "image_v1"}}, tmp_path / "x.pth")
    assert code == 2 and "image_transformer_v2" in err
    pickled = tmp_path / "obj.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "opt": object.__new__(_Opaque)}, pickled)
    from hourglass.cli._common import CLIError
    from hourglass.cli.convert import load_checkpoint_state

    with pytest.raises(CLIError, match="weights_only"):
        load_checkpoint_state(pickled)
    with pytest.raises(CLIError, match="does not exist"):
        load_checkpoint_state(tmp_path / "missing.pth")


class _Opaque:
    """A class torch.load(weights_only=True) must refuse to unpickle."""


def test_recipe_data_maps_the_diffusion_settings():
    from hourglass.cli.convert import recipe_data_from_k_diffusion
    from hourglass.recipe import recipe_from_data

    config = {
        "model": {
            "type": "image_transformer_v2", "input_channels": 3, "input_size": [64, 64], "patch_size": [4, 4],
            "depths": [1, 2], "widths": [64, 128], "self_attns": [
                {"type": "shifted-window", "d_head": 32, "window_size": 8}, {"type": "global", "d_head": 32}],
            "loss_weighting": "soft-min-snr", "sigma_data": 0.6, "sigma_min": 1e-2, "sigma_max": 160,
            "augment_prob": 0.12, "sigma_sample_density": {"type": "lognormal", "mean": -1.0, "std": 1.4},
        },
        "dataset": {"type": "imagefolder-class", "location": "/data/x", "num_classes": 4, "cond_dropout_rate": 0.2},
        "optimizer": {"type": "adamw", "lr": 1e-4, "betas": [0.9, 0.99], "eps": 1e-6, "weight_decay": 1e-3},
        "ema_sched": {"type": "inverse", "power": 0.6667, "max_value": 0.999},
    }
    data, notes = recipe_data_from_k_diffusion(config)
    r = recipe_from_data(data)
    assert notes == []
    assert r.model.levels[0].attention.type == "shifted_window" and r.model.num_classes == 4
    assert r.diffusion.denoiser.sigma_data == 0.6 and r.diffusion.weighting.type == "soft_min_snr"
    assert (r.diffusion.sigma_density.type, r.diffusion.sigma_density.mean) == ("log_normal", -1.0)
    assert r.data.dataset.root == "/data/x" and r.data.dataset.classes == "subfolders" and r.data.augment.p == 0.12
    assert (r.train.lr, r.train.betas, r.train.eps, r.train.class_dropout) == (1e-4, (0.9, 0.99), 1e-6, 0.2)
    assert (r.train.ema.power, r.train.ema.decay_max) == (0.6667, 0.999)
    assert (r.sample.schedule.sigma_min, r.sample.schedule.sigma_max) == (1e-2, 160.0)


@pytest.mark.parametrize(
    ("suffix", "content", "metadata", "expected"),
    [
        (".pth", {"model_ema": {"A": 1}, "model": {"A": 2}}, None, ("ema", 1)),
        (".pth", {"model": {"A": 2}}, None, ("raw", 2)),
        (".pth", {"state_dict": {"A": 3}}, None, ("unknown", 3)),
        (".pth", {"state_dict": {"model.A": 2, "model_ema.A": 1}}, None, ("ema", 1)),
        (".safetensors", {"A": 1}, {"config": "{}"}, ("ema", 1)),  # k-diffusion's convert_for_inference.py
        (".safetensors", {"model.A": 2, "model_ema.A": 1}, None, ("ema", 1)),
        (".safetensors", {"model.A": 2}, None, ("raw", 2)),
        (".safetensors", {"A": 3}, None, ("unknown", 3)),
    ],
)
def test_convert_tells_which_weights_it_took(tmp_path, suffix, content, metadata, expected):
    import safetensors.torch

    from hourglass.cli.convert import read_k_diffusion_checkpoint

    anchor = "inner_model.patch_in.proj.weight"

    def tensors(part):
        return {k.replace("A", anchor): torch.full((2,), float(v)) for k, v in part.items()}

    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".pth":
        torch.save({k: tensors(v) for k, v in content.items()}, path)
    else:
        safetensors.torch.save_file(tensors(content), str(path), metadata=metadata)
    state, which = read_k_diffusion_checkpoint(path)
    values = {float(v[0]) for k, v in state.items() if k.endswith(anchor)}
    assert (which, values) == (expected[0], {float(expected[1])})


def test_sample_draws_from_a_converted_folder_and_its_weights_file(capsys, tmp_path, reference):
    config, tensors = reference
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"model_ema": state}, checkpoint)
    assert _convert(capsys, tmp_path, config, checkpoint)[0] == 0
    out_dir = tmp_path / "out"
    common = ["--n", "2", "--steps", "2", "--no-progress", "--no-images"]
    assert main(["sample", str(out_dir), *common, "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "with the EMA weights converted from k-diffusion;" in text and "not the EMA" not in text
    header = (out_dir / "recipe.toml").read_text().split("\n\n")[0]
    assert "model.safetensors beside this file (hourglass parameter names): the checkpoint's EMA weights." in header
    assert f"Sample with: hourglass sample {out_dir}\n" in header and "--no-ema" not in header
    assert (tmp_path / "a" / "grid.png").stat().st_size > 0
    assert main(["sample", str(out_dir / "model.safetensors"), *common, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert (tmp_path / "a" / "grid.png").read_bytes() == (tmp_path / "b" / "grid.png").read_bytes()
    assert main(["sample", str(out_dir), *common, "--ema", "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["sample", str(out_dir), *common, "--no-ema"]) == 2
    err = capsys.readouterr().err
    assert "holds only the EMA weights converted from k-diffusion" in err and err.count("\n") == 1


# -- official DiT and U-ViT checkpoints ------------------------------------------------------------------
def _official_dit(tmp_path, **kwargs):
    from tests.test_interop_dit_uvit import RefDiT

    ref = RefDiT(**kwargs).randomize().eval()
    path = tmp_path / "DiT-test-32.pt"
    torch.save(ref.state_dict(), path)
    return ref, path


def test_convert_dit_writes_a_folder_that_reproduces_the_official_model(capsys, tmp_path):
    import safetensors

    import hourglass
    from hourglass.recipe import load_recipe

    ref, path = _official_dit(tmp_path)
    out_dir = tmp_path / "dit"
    assert main(["convert", "dit", str(path), str(out_dir), "--model", "dit_test", "--weights", "ema",
                 "--vae", "none"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "the checkpoint's EMA weights" in out
    text = (out_dir / "recipe.toml").read_text()
    header = text.split("\n\n")[0]
    for words in ("Converted from the official DiT", "4x32x32 latents of the Stable Diffusion VAE",
                  "Without a [vae] section (converted with --vae none)", "raw outputs are latents",
                  "DiT's DDPM timestep t in 0..999", "Learned sigma: 8 output channels",
                  "DiT's L_vlb is not implemented", "Classes: 10 + 'no class' (id 10)"):
        assert words in header.replace("\n# ", " "), words
    recipe = load_recipe(out_dir / "recipe.toml")
    assert (recipe.model.in_channels, recipe.model.resolved_out_channels, recipe.model.num_classes) == (4, 8, 10)
    assert recipe.model.mapping.time_input == "timestep"
    assert recipe.diffusion.denoiser.type == "ddpm" and recipe.diffusion.denoiser.schedule == "linear"
    assert (recipe.diffusion.weighting.type, recipe.diffusion.sigma_density.type) == ("snr", "ddpm_timesteps")
    assert recipe.data.dataset.type == "latents" and recipe.data.dataset.channels == 4
    assert recipe.sample.schedule.sigma_max == pytest.approx(157.4073) and recipe.sample.cfg_scale == 1.5
    with safetensors.safe_open(str(out_dir / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert (meta["source"], meta["weights"], meta["format"]) == ("dit", "ema", "hourglass-weights")
    pipe = hourglass.load(out_dir, device="cpu")
    assert "EMA weights converted from dit" in pipe.describe_weights()
    x, t, y = torch.randn(2, 4, 32, 32), torch.tensor([0.0, 500.0]), torch.tensor([3, 10])
    with torch.no_grad():
        torch.testing.assert_close(pipe.model(x, t, class_cond=y), ref(x, t, y), atol=1e-5, rtol=0)
    latents = pipe.sample(2, steps=3, classes=[1, "none"])
    assert latents.shape == (2, 4, 32, 32) and torch.isfinite(latents).all()
    # hourglass sample writes no pictures of latents, and says so in one line
    assert main(["sample", str(out_dir), "--n", "1", "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "4-channel samples (latents" in err and "needs the VAE" in err and err.count("\n") == 1
    assert main(["sample", str(out_dir), "--n", "1", "--steps", "2", "--no-progress", "--no-images", "--no-grid"]) == 0
    assert recipe.vae is None


def test_convert_dit_names_the_vae_that_decodes_its_latents(capsys, tmp_path, monkeypatch):
    pytest.importorskip("diffusers", reason="the [vae] extra (diffusers) decodes the latents")
    from hourglass.cli.convert_official import DIT_VAE
    from hourglass.recipe import load_recipe
    from tests._vae import make_tiny_vae

    _, path = _official_dit(tmp_path)
    # the default: DiT's own VAE, by Hub id
    assert main(["convert", "dit", str(path), str(tmp_path / "hub"), "--model", "dit_test"]) == 0
    recipe = load_recipe(tmp_path / "hub" / "recipe.toml")
    assert (recipe.vae.path, recipe.vae.latent_channels, recipe.vae.downsample_factor) == (DIT_VAE, 4, 8)
    assert recipe.vae.scaling_factor == 0.18215
    assert f"hf download {DIT_VAE}" in (tmp_path / "hub" / "recipe.toml").read_text().replace("\n# ", " ")
    # a local factor-8 VAE: hourglass sample decodes the drawn latents into 256x256 pictures
    vae = make_tiny_vae(tmp_path / "vae", down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[8, 8, 8, 8])
    out_dir = tmp_path / "local"
    assert main(["convert", "dit", str(path), str(out_dir), "--model", "dit_test", "--vae", str(vae)]) == 0
    capsys.readouterr()
    images = tmp_path / "images"
    assert main(["sample", str(out_dir), "--n", "1", "--steps", "2", "--no-progress", "--no-grid",
                 "--out", str(images)]) == 0
    from PIL import Image

    pngs = sorted(images.rglob("*.png"))
    assert len(pngs) == 1 and Image.open(pngs[0]).size == (256, 256)


def test_convert_dit_takes_the_ema_of_a_training_checkpoint(capsys, tmp_path):
    import argparse

    from tests.test_interop_dit_uvit import RefDiT

    ema, raw = RefDiT().randomize(1).state_dict(), RefDiT().randomize(2).state_dict()
    path = tmp_path / "0400000.pt"
    torch.save({"model": raw, "ema": ema, "opt": {"state": {}}, "args": argparse.Namespace(model="DiT-test")}, path)
    assert main(["convert", "dit", str(path), str(tmp_path / "out"), "--model", "dit_test"]) == 0
    assert "the checkpoint's EMA weights" in capsys.readouterr().out
    import safetensors.torch

    weights = safetensors.torch.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(weights["mapping.class_emb.weight"], ema["y_embedder.embedding_table.weight"])


@pytest.mark.parametrize("argv,match", [
    (["--model", "dit_b_4"], "do not fit preset 'dit_b_4'"),
    (["--model", "hdit_s"], "--model hdit_s: not a DiT preset"),
    (["--model", "nope"], "--model nope: not a DiT preset"),
])
def test_convert_dit_refuses_the_wrong_model(capsys, tmp_path, argv, match):
    _, path = _official_dit(tmp_path)
    assert main(["convert", "dit", str(path), str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_convert_uvit_names_its_config_and_reproduces_the_official_model(capsys, tmp_path):
    import hourglass
    from hourglass.interop.uvit import RELEASES
    from hourglass.recipe import load_recipe
    from tests.test_interop_dit_uvit import RefUViT

    nnet = {**RELEASES["imagenet256_uvit_huge"].nnet, "depth": 2, "embed_dim": 32, "num_heads": 2}
    ref = RefUViT(**nnet).randomize().eval()
    path = tmp_path / "nnet_ema.pth"
    torch.save(ref.state_dict(), path)
    out_dir = tmp_path / "uvit"
    shrink = ["--set", "model.depth=2", "--set", "model.width=32", "--set", "model.attention.d_head=16"]
    assert main(["convert", "uvit", str(path), str(out_dir), "--config", "imagenet256_uvit_huge", "--vae", "none",
                 *shrink]) == 0
    assert "the checkpoint's EMA weights" in capsys.readouterr().out  # nnet_ema.pth
    header = (out_dir / "recipe.toml").read_text().split("\n\n")[0].replace("\n# ", " ")
    for words in ("config imagenet256_uvit_huge (U-ViT-H/2, ImageNet 256x256", "n in 1..1000", "t_offset 1",
                  "latents of the Stable Diffusion VAE", "Without a [vae] section", "guidance scale 1.4 (U-ViT's scale 0.4)",
                  "Changed by --set: model.depth=2, model.width=32, model.attention.d_head=16."):
        assert words in header, words
    recipe = load_recipe(out_dir / "recipe.toml")
    d = recipe.diffusion.denoiser
    assert (d.type, d.schedule, d.t_offset, recipe.model.time_input, recipe.model.final_conv) == (
        "ddpm", "scaled_linear", 1.0, "timestep", False)
    assert recipe.train.class_dropout == 0.1 and recipe.sample.cfg_scale == 1.4
    pipe = hourglass.load(out_dir, device="cpu")
    x, t, y = torch.randn(2, 4, 32, 32), torch.tensor([1.0, 1000.0]), torch.tensor([3, 1000])
    with torch.no_grad():
        torch.testing.assert_close(pipe.model(x, t, class_cond=y), ref(x, t, y), atol=1e-5, rtol=0)
    assert pipe.sample(1, steps=2).shape == (1, 4, 32, 32)
    # the wrong config: every mismatch named, nothing written
    code = main(["convert", "uvit", str(path), str(tmp_path / "l2"), "--config", "imagenet256_uvit_large", *shrink])
    err = capsys.readouterr().err
    assert code == 2 and "missing ['final_conv.bias', 'final_conv.weight']" in err and not (tmp_path / "l2").exists()


def test_convert_uvit_continuous_time_config(capsys, tmp_path):
    from hourglass.interop.uvit import RELEASES
    from hourglass.recipe import load_recipe
    from tests.test_interop_dit_uvit import RefUViT

    nnet = {**RELEASES["cifar10_uvit_small"].nnet, "depth": 2, "embed_dim": 32, "num_heads": 2}
    path = tmp_path / "cifar10_uvit_small.pth"
    torch.save(RefUViT(**nnet).randomize().state_dict(), path)
    shrink = ["--set", "model.depth=2", "--set", "model.width=32", "--set", "model.attention.d_head=16"]
    assert main(["convert", "uvit", str(path), str(tmp_path / "c"), "--config", "cifar10_uvit_small", *shrink]) == 0
    assert "whether they are an EMA copy is not recorded" in capsys.readouterr().out
    recipe = load_recipe(tmp_path / "c" / "recipe.toml")
    assert recipe.diffusion.denoiser.schedule == "continuous_linear" and recipe.model.num_classes == 0
    assert recipe.data.dataset.type == "imagefolder" and recipe.sample.cfg_scale == 1.0
    assert "the network sees 999 s" in (tmp_path / "c" / "recipe.toml").read_text()


def test_convert_sources_read_only_tensors(capsys, tmp_path):
    pickled = tmp_path / "DiT.pt"
    torch.save({"ema": {"w": torch.zeros(1)}, "opt": object.__new__(_Opaque)}, pickled)
    assert main(["convert", "dit", str(pickled), str(tmp_path / "o"), "--model", "dit_xl_2"]) == 2
    assert "weights_only" in capsys.readouterr().err
    assert main(["convert", "uvit", str(tmp_path / "none.pth"), str(tmp_path / "o"), "--config",
                 "imagenet256_uvit_huge"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", "uvit", str(pickled), str(tmp_path / "o"), "--config", "imagenet999"]) == 2
    assert "invalid choice" in capsys.readouterr().err
