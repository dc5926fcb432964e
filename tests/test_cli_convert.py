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
