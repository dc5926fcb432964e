"""The ``vae`` family and latent diffusion: ``autoencoder_kl`` from a folder or an offline Hub cache, its
scaling, recipes with a ``[vae]`` (validation without weights, channel rules), training on encoded batches
and sampling, editing and inpainting decoded images.

Every VAE here is a tiny randomly initialised ``AutoencoderKL`` written by ``save_pretrained`` (tests/_vae.py):
nothing is downloaded.
"""

from __future__ import annotations

import sys

import pytest
import torch

import hourglass
from hourglass.recipe import RecipeError, availability_problems, loads_recipe
from hourglass.registry import VAE
from hourglass.vae import Autoencoder, latent_mask
from tests._vae import hub_cache, latent_recipe_text, make_tiny_vae

INSTALL = 'pip install "hourglass-diffusion[vae]"'


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    pytest.importorskip("diffusers")
    return make_tiny_vae(tmp_path_factory.mktemp("tiny_vae"))


@pytest.fixture(scope="module")
def vae(vae_dir):
    return VAE.build({"type": "autoencoder_kl", "path": str(vae_dir)})


@pytest.fixture
def no_diffusers(monkeypatch):
    """diffusers cannot be imported (as when the extra is not installed)."""
    for name in [m for m in sys.modules if m == "diffusers" or m.startswith("diffusers.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "diffusers" else _find(name, *a))


_find = __import__("importlib.util").util.find_spec


# -- the spec: validated without weights and without diffusers ------------------------------------------
def test_spec_validates_without_weights_or_diffusers(no_diffusers, tmp_path):
    recipe = loads_recipe(latent_recipe_text(str(tmp_path / "nowhere"), extra="latent_channels = 4"))
    assert recipe.vae.type == "autoencoder_kl" and recipe.vae.latent_channels == 4
    assert recipe.vae.scaling_factor is None and recipe.vae.latents == "mean" and recipe.vae.dtype == "float32"
    assert loads_recipe(recipe.to_toml()) == recipe  # dumps and reads back
    with pytest.raises(ImportError, match=r'needs diffusers.*pip install "hourglass-diffusion\[vae\]"'):
        VAE.build(recipe.vae)
    problems = availability_problems(recipe.data, vae=recipe.vae)
    assert [(p.path, p.hint) for p in problems] == [("vae.type", INSTALL)]


def test_hourglass_imports_and_validates_without_diffusers(tmp_path):
    """In a fresh process where diffusers cannot be imported: hourglass imports, a recipe naming a VAE
    validates and dumps, and building the VAE says which extra to install."""
    import subprocess
    import textwrap
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = textwrap.dedent(f"""
        import sys
        sys.modules["diffusers"] = None  # as if not installed
        from hourglass.recipe import loads_recipe
        from hourglass.registry import VAE
        from tests._vae import latent_recipe_text
        recipe = loads_recipe(latent_recipe_text({str(tmp_path)!r}))
        assert "[vae]" in recipe.to_toml()
        try:
            VAE.build(recipe.vae)
        except ImportError as exc:
            print(exc)
        assert not any(m.startswith("diffusers.") for m in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    assert INSTALL in proc.stdout and proc.stdout.count("\n") == 1


def test_spec_refuses_what_it_does_not_know():
    with pytest.raises(RecipeError) as info:
        loads_recipe(latent_recipe_text("x").replace('path = "x"', 'path = "x"\nscale = 2'))
    assert [p.path for p in info.value.problems] == ["vae.scale"]
    with pytest.raises(RecipeError) as info:
        loads_recipe(latent_recipe_text("x").replace('path = "x"', ""))
    assert [p.path for p in info.value.problems] == ["vae.path"]
    with pytest.raises(RecipeError) as info:
        loads_recipe(latent_recipe_text("x", extra='latents = "mode"\nscaling_factor = 0'))
    assert sorted(p.path for p in info.value.problems) == ["vae.latents", "vae.scaling_factor"]


def test_a_recipe_without_vae_is_unchanged():
    from tests._tiny import SMALL_RECIPE

    recipe = loads_recipe(SMALL_RECIPE)
    assert recipe.vae is None and "vae" not in recipe.to_toml() and "vae" not in recipe.to_data()


def test_declared_latent_channels_must_match_the_model():
    """Validation compares model.in_channels with the declared latent channels: one problem, no weights read."""
    with pytest.raises(RecipeError) as info:
        loads_recipe(latent_recipe_text("nowhere", in_channels=3, extra="latent_channels = 4"))
    (problem,) = info.value.problems
    assert problem.path == "model.in_channels" and problem.value == 3
    assert "4 latent channels of the VAE (autoencoder_kl)" in problem.message and problem.hint == "set model.in_channels = 4"
    # undeclared: nothing to compare before loading; and the data's 3 channels are not the model's business
    assert loads_recipe(latent_recipe_text("nowhere", in_channels=3)).model.in_channels == 3


def test_data_channels_must_match_the_declared_image_channels(monkeypatch):
    from hourglass.vae.autoencoder_kl import AutoencoderKLVAE

    monkeypatch.setattr(AutoencoderKLVAE, "image_channels_of", classmethod(lambda cls, spec: 3))
    text = latent_recipe_text("nowhere").replace('size = 16}', 'size = 16, channels = 1}')
    with pytest.raises(RecipeError) as info:
        loads_recipe(text)
    (problem,) = info.value.problems
    assert problem.path == "data.dataset.channels" and problem.hint == "set data.dataset.channels = 3"


def test_an_invalid_vae_does_not_bring_a_channel_problem():
    with pytest.raises(RecipeError) as info:
        loads_recipe(latent_recipe_text("x").replace('path = "x"', ""))
    assert [p.path for p in info.value.problems] == ["vae.path"]  # not model.in_channels 4 vs the data's 3


# -- loading --------------------------------------------------------------------------------------------
def test_load_from_a_local_folder(vae, vae_dir):
    assert isinstance(vae, Autoencoder)
    assert (vae.image_channels, vae.latent_channels, vae.downsample_factor) == (3, 4, 4)
    assert (vae.scaling_factor, vae.shift_factor) == (0.5, 0.0)  # the config's, and the default shift
    assert not any(p.requires_grad for p in vae.parameters()) and not vae.train().training
    assert availability_problems(loads_recipe(latent_recipe_text(str(vae_dir))).data) == []
    assert VAE.get("autoencoder_kl").availability_problems(vae.spec) == []
    assert vae.latent_size((32, 48)) == (8, 12) and vae.image_size((8, 12)) == (32, 48)
    with pytest.raises(ValueError, match="multiples of 4"):
        vae.latent_size((30, 32))


def test_load_from_an_offline_hub_cache(vae, vae_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = hub_cache(cache, "owner/tiny-pipeline", vae_dir, subfolder="vae")
    assert (snapshot / "vae" / "config.json").is_symlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = VAE.validate({"type": "autoencoder_kl", "path": "owner/tiny-pipeline", "subfolder": "vae"})
    cls = VAE.get("autoencoder_kl")
    assert cls.availability_problems(spec) == []
    loaded = VAE.build(spec)
    state = vae.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    missing = VAE.validate({"type": "autoencoder_kl", "path": "owner/not-cached"})
    (problem,) = cls.availability_problems(missing)
    assert problem.path == "path" and "HF_HUB_OFFLINE is set" in problem.message
    with pytest.raises(OSError) as info:
        VAE.build(missing)
    assert "owner/not-cached" in str(info.value) and "only the cache was read" in str(info.value)
    assert "\n" not in str(info.value)


def test_availability_of_a_local_folder(vae_dir, tmp_path):
    cls = VAE.get("autoencoder_kl")
    (problem,) = cls.availability_problems(cls.Spec(path=str(tmp_path)))
    assert problem.path == "path" and "holds no config.json" in problem.message
    (problem,) = cls.availability_problems(cls.Spec(path=str(vae_dir), subfolder="vae"))
    assert problem.path == "subfolder"
    (problem,) = cls.availability_problems(cls.Spec(path="./not/a/folder/here"))
    assert "not a Hub id" in problem.message


def test_declared_facts_are_checked_when_loaded(vae_dir):
    with pytest.raises(ValueError, match=r"vae.latent_channels = 8 is declared, but .* has 4"):
        VAE.build({"type": "autoencoder_kl", "path": str(vae_dir), "latent_channels": 8})
    with pytest.raises(ValueError, match=r"vae.downsample_factor = 8 is declared, but .* has 4"):
        VAE.build({"type": "autoencoder_kl", "path": str(vae_dir), "downsample_factor": 8})


# -- scaling --------------------------------------------------------------------------------------------
def test_encode_scales_the_posterior_mean_and_decode_divides(vae):
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        mean = vae.model.encode(images).latent_dist.mean
        latents = vae.encode(images)
        torch.testing.assert_close(latents, 0.5 * mean)
        torch.testing.assert_close(vae.decode(latents), vae.model.decode(mean).sample.clamp(-1, 1))
    assert latents.shape == (2, 4, 4, 4) and not latents.requires_grad


def test_scaling_and_shift_factors_from_the_spec(vae_dir):
    spec = {"type": "autoencoder_kl", "path": str(vae_dir), "scaling_factor": 2.0, "shift_factor": 0.25}
    vae = VAE.build(spec)
    images = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        mean = vae.model.encode(images).latent_dist.mean
        latents = vae.encode(images)
        torch.testing.assert_close(latents, 2.0 * (mean - 0.25))
        torch.testing.assert_close(vae.decode(latents), vae.model.decode(mean).sample.clamp(-1, 1))


def test_a_config_without_factors_gets_the_defaults(tmp_path):
    import json

    pytest.importorskip("diffusers")
    folder = make_tiny_vae(tmp_path / "v")
    config = json.loads((folder / "config.json").read_text())
    del config["scaling_factor"]
    config["shift_factor"] = 0.125
    (folder / "config.json").write_text(json.dumps(config))
    vae = VAE.build({"type": "autoencoder_kl", "path": str(folder)})
    assert (vae.scaling_factor, vae.shift_factor) == (0.18215, 0.125)


def test_a_config_without_the_attributes_gets_the_defaults(vae, monkeypatch):
    """Older configs may lack scaling_factor / shift_factor altogether (diffusers >= 0.29 fills them in)."""
    from types import SimpleNamespace

    from hourglass.vae import AutoencoderKLVAE

    config = SimpleNamespace(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 8, 8])
    model = torch.nn.Conv2d(1, 1, 1)
    model.config = config
    monkeypatch.setattr(AutoencoderKLVAE, "_load", staticmethod(lambda spec: model))
    built = AutoencoderKLVAE(AutoencoderKLVAE.Spec(path="anywhere"))
    assert (built.scaling_factor, built.shift_factor, built.downsample_factor) == (0.18215, 0.0, 4)


def test_sampled_latents_follow_the_generator(vae_dir):
    vae = VAE.build({"type": "autoencoder_kl", "path": str(vae_dir), "latents": "sample"})
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    a = vae.encode(images, generator=torch.Generator().manual_seed(1))
    b = vae.encode(images, generator=torch.Generator().manual_seed(1))
    c = vae.encode(images, generator=torch.Generator().manual_seed(2))
    assert vae.stochastic and torch.equal(a, b) and not torch.equal(a, c)


def test_latent_mask_covers_every_generated_pixel():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 3, 5] = 1.0
    mask[0, 0, 0, 0] = 0.25
    small = latent_mask(mask, 4)
    assert small.shape == (1, 1, 2, 2) and small[0, 0].tolist() == [[0.25, 1.0], [0.0, 0.0]]


# -- training and sampling a latent model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def latent_run(vae_dir, tmp_path_factory):
    from hourglass.train import train

    recipe = loads_recipe(latent_recipe_text(str(vae_dir)))
    run = tmp_path_factory.mktemp("latent_run")
    result = train(recipe, run, report=_quiet, progress=False)
    return run, result


def test_a_latent_recipe_trains_on_encoded_batches_and_draws_decoded_grids(latent_run):
    from PIL import Image

    run, result = latent_run
    assert result.step == 2 and result.loss is not None and result.checkpoint is not None
    with Image.open(result.grid) as grid:  # 2x2 decoded 32x32 RGB images (2 px padding), not 8x8 latents
        assert grid.mode == "RGB" and grid.size == (2 + 2 * 34, 2 + 2 * 34)


def test_the_trainer_encodes_each_batch_with_the_frozen_vae(vae_dir, tmp_path, monkeypatch):
    from hourglass.train import Trainer

    recipe = loads_recipe(latent_recipe_text(str(vae_dir)))
    trainer = Trainer(recipe, tmp_path / "run", report=_quiet, progress=False)
    try:
        assert trainer.data_resolution == (32, 32) and trainer.image_size == (8, 8)
        seen = []
        loss = trainer._compute_loss
        monkeypatch.setattr(trainer, "_compute_loss", lambda x0, *a: seen.append(x0) or loss(x0, *a))
        batch = next(trainer.loader.iterate(start_step=0))
        trainer._micro_step(batch, 0, last=True)
        (x0,) = seen
        torch.testing.assert_close(x0, trainer.vae.encode(batch["image"]))
        assert x0.shape == (4, 4, 8, 8) and not x0.requires_grad
        assert not any(p.requires_grad for p in trainer.vae.parameters())
        assert not any(p is q for p in trainer.vae.parameters() for g in trainer.optimizer.param_groups
                       for q in g["params"])
    finally:
        trainer.close()


def test_precomputed_latents_are_not_encoded_again(vae_dir, tmp_path, monkeypatch):
    """A dataset that holds latents (``latents``) trains as it is; the VAE only decodes the grids."""
    import numpy as np

    from hourglass.train import Trainer

    for i in range(4):
        np.save(tmp_path / f"{i}.npy", np.random.default_rng(i).standard_normal((4, 8, 8)).astype(np.float32))
    text = latent_recipe_text(str(vae_dir)).replace('dataset = {type = "shapes", size = 16}',
                                                    f'dataset = {{type = "latents", root = "{tmp_path}"}}')
    recipe = loads_recipe(text.replace("num_classes = 6", "num_classes = 0"))
    trainer = Trainer(recipe, tmp_path / "run", report=_quiet, progress=False)
    try:
        assert not trainer.encodes and trainer.data_resolution == (8, 8)
        seen = []
        loss = trainer._compute_loss
        monkeypatch.setattr(trainer, "_compute_loss", lambda x0, *a: seen.append(x0) or loss(x0, *a))
        batch = next(trainer.loader.iterate(start_step=0))
        trainer._micro_step(batch, 0, last=True)
        torch.testing.assert_close(seen[0], batch["image"])  # the stored latents, as they are
        assert trainer.sample_grid("latents").exists()  # decoded by the VAE
    finally:
        trainer.close()
    # the rule is the data's channels against the model's, not against the VAE's images
    with pytest.raises(RecipeError, match="model.in_channels"):
        loads_recipe(text.replace('type = "latents", root', 'type = "latents", channels = 3, root'))


def test_a_mismatching_vae_is_a_one_line_error_at_build(vae_dir, tmp_path):
    from hourglass.train import TrainConfigError, Trainer

    with pytest.raises(TrainConfigError) as info:
        Trainer(loads_recipe(latent_recipe_text(str(vae_dir), in_channels=3)), tmp_path / "a", report=_quiet)
    message = str(info.value)
    assert "\n" not in message and message.startswith("model.in_channels = 3: 3 does not match the 4 latent channels")
    grey = latent_recipe_text(str(vae_dir)).replace("size = 16}", "size = 16, channels = 1}")
    with pytest.raises(TrainConfigError, match=r"^data.dataset.channels: the data \(shapes\) has 1-channel images"):
        Trainer(loads_recipe(grey), tmp_path / "b", report=_quiet)
    with pytest.raises(TrainConfigError, match=r"^vae \(autoencoder_kl\): .*latent_channels = 8 is declared"):
        Trainer(loads_recipe(latent_recipe_text(str(vae_dir), in_channels=8, extra="latent_channels = 8")),
                tmp_path / "c", report=_quiet)


@pytest.fixture(scope="module")
def latent_pipe(latent_run):
    return hourglass.load(latent_run[0], device="cpu")


def test_the_pipeline_samples_decoded_images(latent_pipe):
    pipe = latent_pipe
    assert (pipe.channels, pipe.image_size, pipe.latent_size) == (3, (32, 32), (8, 8))
    assert "latents 4x8x8" in repr(pipe)
    images = pipe.sample(3, steps=2, seed=0)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(pipe.sample(3, steps=2, seed=0, batch_size=1), images)  # decoded one image at a time
    assert pipe.sample(1, steps=2, resolution=(32, 48)).shape == (1, 3, 32, 48)
    assert "multiples of 4" in pipe.resolution_problems(30)


def test_image_to_image_encodes_the_inputs(latent_pipe, monkeypatch):
    pipe = latent_pipe
    images = pipe.sample(2, steps=2, seed=3)
    encoded = []
    encode = pipe.vae.encode
    monkeypatch.setattr(pipe.vae, "encode", lambda x, **kw: encoded.append(x.shape) or encode(x, **kw))
    out = pipe.image_to_image(images, strength=0.5, steps=4, seed=1)
    assert out.shape == (2, 3, 32, 32) and encoded == [(1, 3, 32, 32)] * 2


def test_inpainting_in_latent_space_keeps_the_kept_pixels(latent_pipe):
    pipe = latent_pipe
    images = pipe.sample(2, steps=2, seed=5)
    mask = torch.zeros(32, 32)
    mask[9:19, 5:14] = 1.0  # not aligned with the 4x4 latent cells
    out = pipe.inpaint(images, mask, steps=3, seed=2)
    assert out.shape == images.shape
    assert torch.equal(out[..., mask == 0], images[..., mask == 0])
    assert not torch.equal(out[..., mask == 1], images[..., mask == 1])
    assert torch.equal(pipe.inpaint(images, mask, steps=3, seed=2, batch_size=1), out)


def test_the_pipeline_refuses_a_vae_that_does_not_fit(latent_run, vae_dir, tmp_path):
    from hourglass.pipeline import PipelineError

    pytest.importorskip("diffusers")
    other = make_tiny_vae(tmp_path / "eight", latent_channels=8)
    with pytest.raises(PipelineError, match=r"model.in_channels = 4: 4 does not match the 8 latent channels"):
        hourglass.load(latent_run[0], device="cpu", vae={"type": "autoencoder_kl", "path": str(other)})
    with pytest.raises(PipelineError, match=r"^vae \(autoencoder_kl\): cannot load the AutoencoderKL at"):
        hourglass.load(latent_run[0], device="cpu", vae={"type": "autoencoder_kl", "path": str(tmp_path)})
    moved = hourglass.load(latent_run[0], device="cpu", vae={"type": "autoencoder_kl", "path": str(vae_dir)})
    assert moved.vae.spec.path == str(vae_dir)


def test_cli_samples_and_validates_a_latent_run(latent_run, tmp_path, capsys):
    from hourglass.cli import main

    run, _ = latent_run
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "at 32x32" in out and "latents 8x8 decoded by the VAE (autoencoder_kl)" in out
    assert (tmp_path / "s" / "000001.png").is_file()
    recipe = run / "recipe.toml"
    assert main(["validate", str(recipe)]) == 0
    assert "on the latents of a vae (autoencoder_kl)" in capsys.readouterr().out
    assert main(["validate", str(recipe), "--set", f"vae.path={tmp_path / 'none'}"]) == 2
    assert "vae.path = " in capsys.readouterr().err
    assert main(["show", str(run)]) == 0
    assert "vae: autoencoder_kl at " in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run), "--val-loss", "--dataset", "shapes"]) == 2
    assert "latents of a VAE" in capsys.readouterr().err


# -- the page docs/vae.md ----------------------------------------------------------------------------------
#: what makes the page's recipe quick: 2 steps of batch 2, a 2-step grid of 2 images, no periodic files
DOCS_OVERRIDES = ["train.steps=2", "train.checkpoint_every=2", "train.sample_every=0", "train.log_every=1",
                  "data.batch_size=2", "data.num_workers=0", "sample.steps=2", "sample.n=2", "sample.batch_size=2"]


def _shapes_folder(folder, n=4):
    import numpy as np
    from PIL import Image

    from hourglass.registry import DATASET

    folder.mkdir(parents=True)
    shapes = DATASET.build({"type": "shapes", "size": n}, resolution=32, split="train")
    for i in range(n):
        pixels = ((shapes[i]["image"].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f"{i:06d}.png")


@pytest.mark.slow
def test_the_vae_page_recipe_trains_and_its_python_example_runs(tmp_path, monkeypatch):
    """docs/vae.md's recipe (its Hub id laid out offline with a tiny factor-8 VAE; the page's 256 px FFHQ folder
    stood in for by 4 shapes images) validates, trains 2 steps, and the page's Python block runs against the run."""
    import re
    from pathlib import Path

    pytest.importorskip("diffusers")
    from hourglass.train import train
    from tests._vae import docs_recipe_text, docs_vae_cache

    docs_vae_cache(tmp_path / "hub", tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    _shapes_folder(tmp_path / "data" / "ffhq256")
    recipe = loads_recipe(docs_recipe_text(), DOCS_OVERRIDES)
    assert recipe.vae.path == "stabilityai/sd-vae-ft-ema" and recipe.model.input_size == 32
    assert availability_problems(recipe.data, vae=recipe.vae) == []
    train(recipe, tmp_path / "runs" / "latent", report=_quiet, progress=False)
    page = (Path(__file__).resolve().parents[1] / "docs" / "vae.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"^```python\n(.*?)^```", page, flags=re.S | re.M)
    namespace: dict = {"__name__": "__vae_page__"}
    exec(compile(block, "docs/vae.md (python block)", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["images"].shape == (4, 3, 256, 256) and namespace["latents"].shape == (4, 4, 32, 32)
