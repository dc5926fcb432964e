"""Latent shards: ``hourglass data latents`` (encoding with a VAE, flips, resume, errors), the ``latents``
dataset reading them, the DiT-XL/2 latent recipe, and a tiny encode -> train -> sample run.

The VAE is a tiny randomly initialised ``AutoencoderKL`` (tests/_vae.py, factor 4): nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hourglass.cli import main
from hourglass.data._base import mix_seed
from hourglass.data.latent_shards import INDEX_FILE, read_index
from hourglass.registry import DATASET, VAE
from tests._vae import latent_recipe_text, make_tiny_vae

ROOT = Path(__file__).resolve().parents[1]
DIT_RECIPE = ROOT / "recipes" / "dit_xl2_imagenet256_latent.toml"


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    pytest.importorskip("diffusers")
    return make_tiny_vae(tmp_path_factory.mktemp("tiny_vae"))


def encode(out, vae_dir, *extra):
    """``hourglass data latents shapes OUT``: 10 shapes images of 32 px, shards of 4, batches of 3."""
    return main(
        [
            "data",
            "latents",
            "shapes",
            str(out),
            "--set",
            "size=10",
            "--resolution",
            "32",
            "--vae",
            str(vae_dir),
            "--shard-size",
            "4",
            "--batch-size",
            "3",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def shards(vae_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "out"
    assert encode(out, vae_dir) == 0
    return out


def shard_tensors(out):
    from safetensors.torch import load_file

    files = [load_file(str(out / s["file"])) for s in read_index(out)["shards"]]
    return torch.cat([f["latents"] for f in files]), torch.cat([f["labels"] for f in files])


# -- the recipe --------------------------------------------------------------------------------------------
def test_the_dit_recipe_builds_to_dit_xl2_size_and_gmacs(capsys):
    assert main(["build", str(DIT_RECIPE), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["params"] == pytest.approx(675e6, rel=0.005)  # the paper's Table 4: 675M
    assert built["gmacs"] == pytest.approx(118.6, rel=0.01)  # and 118.6 Gflops on 4x32x32 latents
    assert main(["validate", str(DIT_RECIPE), "--no-data-check"]) == 0


def test_the_dit_recipe_states_the_papers_settings():
    from hourglass.recipe import load_recipe

    r = load_recipe(DIT_RECIPE)
    assert (r.model.in_channels, r.model.out_channels, r.model.input_size, r.model.num_classes) == (4, 8, 32, 1000)
    assert (r.train.lr, r.train.weight_decay, tuple(r.train.betas), r.train.class_dropout) == (
        1e-4,
        0.0,
        (0.9, 0.999),
        0.1,
    )
    assert r.data.batch_size == 256 and r.train.warmup_steps == 0 and r.train.grad_clip == 0.0
    from hourglass.train import ema_decay

    decays = [ema_decay(t, r.train.ema.power, r.train.ema.decay_max) for t in range(4)]
    assert decays == [0.0, 0.9999, 0.9999, 0.9999]  # DiT: a copy, then a constant 0.9999
    d = r.diffusion.denoiser
    assert (d.type, d.prediction, d.schedule, d.timesteps) == ("ddpm", "eps", "linear", 1000)
    assert (r.sample.steps, r.sample.cfg_scale) == (250, 1.5)
    assert (r.vae.path, r.vae.scaling_factor, r.vae.latents) == ("stabilityai/sd-vae-ft-mse", 0.18215, "sample")
    ds = r.data.dataset
    assert (ds.type, ds.classes, ds.hflip, ds.channels) == ("latents", "stored", 0.5, 4)


# -- encoding ----------------------------------------------------------------------------------------------
def test_encode_writes_shards_of_latents_and_flips_with_an_index(shards, vae_dir):
    index = read_index(shards)
    assert index["complete"] and index["count"] == 10 and index["latent_shape"] == [4, 8, 8]
    assert [s["count"] for s in index["shards"]] == [4, 4, 2] and index["image_size"] == [32, 32]
    assert index["vae"]["path"] == str(vae_dir) and index["vae"]["scaling_factor"] == 0.5
    assert index["latents"] == "mean" and index["num_classes"] == 6 and index["class_names"][0] == "circle"
    assert sorted(p.name for p in shards.iterdir()) == [INDEX_FILE] + [f"shard-0000{k}.safetensors" for k in range(3)]
    latents, labels = shard_tensors(shards)
    dataset = DATASET.build({"type": "shapes", "size": 10}, resolution=32)
    items = [dataset[(i, mix_seed(0, i))] for i in range(10)]
    images = torch.stack([item["image"] for item in items])
    vae = VAE.build({"type": "autoencoder_kl", "path": str(vae_dir)})
    torch.testing.assert_close(latents[:, 0], vae.encode(images))  # scaled posterior means, item by item
    torch.testing.assert_close(latents[:, 1], vae.encode(images.flip(-1)))  # and of the flipped images
    assert torch.equal(labels, torch.stack([item["class_cond"] for item in items]))


def test_a_killed_encode_leaves_whole_shards_and_resumes(vae_dir, tmp_path, monkeypatch):
    import safetensors.torch

    assert encode(tmp_path / "whole", vae_dir, "--latents", "sample") == 0
    save_file = safetensors.torch.save_file
    calls = []

    def killed_in_the_second(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # killed while writing shard 1: half a file where it was writing
            Path(filename).write_bytes(b"half")
            raise KeyboardInterrupt
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", killed_in_the_second)
    out = tmp_path / "killed"
    assert encode(out, vae_dir, "--latents", "sample") == 130
    assert not read_index(out)["complete"] and (out / "shard-00000.safetensors").is_file()
    assert not (out / "shard-00001.safetensors").exists()  # the half file is not a shard
    spec = DATASET.validate({"type": "latents", "root": str(out), "classes": "stored"})
    (problem,) = DATASET.get("latents").availability_problems(spec)
    assert "unfinished" in problem.message and DATASET.get("latents").classes_of(spec) is None
    with pytest.raises(ValueError, match="unfinished"):
        DATASET.build(spec, resolution=8)
    assert encode(out, vae_dir, "--latents", "sample", "--seed", "1") == 2  # other settings: refused
    assert encode(out, vae_dir, "--latents", "sample") == 0  # the same command finishes it
    assert len(calls) == 4  # shards 1 and 2 only
    assert read_index(out) == read_index(tmp_path / "whole")
    resumed, whole = shard_tensors(out), shard_tensors(tmp_path / "whole")
    assert torch.equal(resumed[0], whole[0]) and torch.equal(resumed[1], whole[1])  # as if never killed
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())


def test_sampled_latents_differ_from_the_mean_and_follow_the_seed(shards, vae_dir, tmp_path):
    assert encode(tmp_path / "s0", vae_dir, "--latents", "sample", "--dtype", "float16") == 0
    assert encode(tmp_path / "s1", vae_dir, "--latents", "sample", "--dtype", "float16", "--seed", "1") == 0
    mean, s0, s1 = shard_tensors(shards)[0], shard_tensors(tmp_path / "s0")[0], shard_tensors(tmp_path / "s1")[0]
    assert s0.dtype == torch.float16 and read_index(tmp_path / "s0")["latents"] == "sample"
    assert not torch.allclose(s0.float(), mean, atol=1e-2) and not torch.equal(s0, s1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["shapez", "OUT"], "unknown dataset 'shapez'"),
        (["shapes", "OUT", "--resolution", "32"], "no VAE: pass --vae"),
        (["shapes", "OUT", "--vae", "VAE"], "--resolution is needed with a dataset type"),
        (["shapes", "OUT", "--vae", "VAE", "--resolution", "30"], "multiples of 4"),
        (["shapes", "OUT", "--vae", "VAE", "--resolution", "32", "--set", "sized=3"], "dataset shapes: "),
        (["latents", "OUT", "--vae", "VAE", "--resolution", "32", "--set", "root=SHARDS"], "already holds latents"),
        (
            ["shapes", "SHARDS", "--vae", "VAE", "--resolution", "32", "--set", "size=10"],
            "already holds 10 encoded items",
        ),
        (["shapes", "FULL", "--vae", "VAE", "--resolution", "32"], "is not empty and holds no unfinished encode"),
        (["shapes", "OUT", "--vae", "NOWHERE", "--resolution", "32"], "vae.path: no folder"),
        (["imagefolder", "OUT", "--vae", "VAE", "--resolution", "32", "--set", "root=NOWHERE"], "data.dataset.root"),
    ],
)
def test_bad_inputs_are_one_line_errors(args, message, shards, vae_dir, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    swap = {
        "OUT": tmp_path / "out",
        "VAE": vae_dir,
        "SHARDS": shards,
        "FULL": tmp_path / "full",
        "NOWHERE": tmp_path / "nowhere",
    }
    for key, value in swap.items():
        args = [arg.replace(key, str(value)) for arg in args]
    assert main(["data", "latents", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_recipe_source_gives_the_dataset_vae_and_image_size(vae_dir, tmp_path, capsys):
    recipe = tmp_path / "latent.toml"
    recipe.write_text(latent_recipe_text(str(vae_dir)))
    assert main(["data", "latents", str(recipe), str(tmp_path / "out"), "--set", "data.dataset.size=3"]) == 0
    index = read_index(tmp_path / "out")
    assert index["image_size"] == [32, 32] and index["count"] == 3 and index["dataset"]["type"] == "shapes"
    assert 'classes = "stored", hflip = 0.5} and model.input_size = 8' in capsys.readouterr().out


# -- the latents dataset on shards -------------------------------------------------------------------------
def test_the_dataset_reads_stored_latents_flips_and_classes(shards):
    latents, labels = shard_tensors(shards)
    spec = {"type": "latents", "root": str(shards), "classes": "stored", "hflip": 0.5}
    contract = DATASET.get("latents")
    assert (
        contract.classes_of(DATASET.validate(spec)) == 6
        and contract.availability_problems(DATASET.validate(spec)) == []
    )
    assert contract.class_names_of(DATASET.validate(spec))[:2] == ["circle", "square"]
    dataset = DATASET.build(spec, resolution=8)
    assert len(dataset) == 10 and dataset.num_classes == 6 and dataset.class_names[5] == "ring"
    flips = []
    for i in range(10):
        for draw in range(6):
            item = dataset[(i, draw)]
            flipped = bool(torch.rand((), generator=torch.Generator().manual_seed(draw)) < 0.5)
            assert torch.equal(item["image"], latents[i, int(flipped)])  # the stored latent the draw picks
            assert torch.equal(item["image"], dataset[(i, draw)]["image"]) and item["class_cond"] == labels[i]
            flips.append(flipped)
    assert 0 < sum(flips) < len(flips)
    plain = DATASET.build({**spec, "hflip": 0.0, "classes": "none", "scale": 2.0}, resolution=8)
    assert torch.equal(plain[(7, 3)]["image"], 2 * latents[7, 0]) and plain.num_classes == 0
    assert plain[7]["class_cond"] == 0


def test_the_dataset_refuses_shards_that_do_not_fit(shards, tmp_path):
    contract = DATASET.get("latents")

    def problems(**options):
        return [
            str(p)
            for p in contract.availability_problems(
                DATASET.validate({"type": "latents", "root": str(shards), "classes": "stored", **options})
            )
        ]

    assert 'set data.dataset.classes = "stored"' in problems(classes="subfolders")[0]
    assert "set data.dataset.channels = 4" in problems(channels=3)[0]
    with pytest.raises(ValueError, match=r"has shape \(4, 8, 8\); this dataset needs \(4, 16, 16\)"):
        DATASET.build({"type": "latents", "root": str(shards)}, resolution=16)
    (tmp_path / "one.npy").write_bytes(b"")
    stored = DATASET.validate({"type": "latents", "root": str(tmp_path), "classes": "stored"})
    assert "holds no latents.json" in str(contract.availability_problems(stored)[0])
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / INDEX_FILE).write_text((shards / INDEX_FILE).read_text())
    missing = DATASET.validate({"type": "latents", "root": str(copy)})
    assert "lacks 3 shard file(s)" in str(contract.availability_problems(missing)[0])


# -- encode -> train -> sample -----------------------------------------------------------------------------
def test_a_tiny_latent_run_trains_on_shards_and_samples_decoded_images(shards, vae_dir, tmp_path, capsys):
    from PIL import Image

    recipe = tmp_path / "shards.toml"
    recipe.write_text(
        latent_recipe_text(str(vae_dir)).replace(
            'dataset = {type = "shapes", size = 16}',
            f'dataset = {{type = "latents", root = "{shards}", classes = "stored", hflip = 0.5}}',
        )
    )
    assert main(["validate", str(recipe)]) == 0
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--run-dir", str(run)]) == 0
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s")]) == 0
    assert "latents 8x8 decoded by the VAE" in capsys.readouterr().out
    for name in ("000000.png", "000001.png"):
        with Image.open(tmp_path / "s" / name) as image:  # decoded 32x32 RGB pictures, not 8x8 latents
            assert image.mode == "RGB" and image.size == (32, 32)
