"""``hourglass.load`` and :class:`hourglass.Pipeline`: loading, seeds, classes, CFG, image-to-image, inpainting."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import hourglass
from hourglass.pipeline import Pipeline, PipelineError, comparison_grid, load_images, load_masks, read_class_names
from hourglass.train import read_checkpoint, train
from tests.test_train_loop import one_thread, quiet, tiny_recipe  # noqa: F401 (fixture)

NAMES = ["circle", "square", "triangle", "cross", "star", "ring"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("run")
    train(tiny_recipe("train.steps=3", "train.checkpoint_every=3"), path, report=quiet)
    torch.set_num_threads(threads)
    return path


@pytest.fixture(scope="module")
def pipe(run_dir):
    return hourglass.load(run_dir, device="cpu")


def _ckpt(run_dir):
    return run_dir / "checkpoints" / "step_00000003.safetensors"


# -- loading ----------------------------------------------------------------------------------------
def test_top_level_names():
    from hourglass.diffusion import sample

    assert hourglass.sample is sample
    assert hourglass.load is hourglass.pipeline.load and hourglass.Pipeline is Pipeline
    assert issubclass(hourglass.PipelineError, ValueError)


def test_load_a_run_dir_or_a_checkpoint_file(run_dir, pipe):
    data = read_checkpoint(_ckpt(run_dir))
    assert pipe.step == 3 and pipe.weights == "ema" and pipe.describe_weights() == "EMA weights"
    assert pipe.recipe.sample.sampler.type == "euler" and pipe.recipe.model.num_classes == 6
    assert (pipe.image_size, pipe.channels, pipe.num_classes, pipe.class_names) == ((16, 16), 3, 6, NAMES)
    assert pipe.denoiser.inner_model is pipe.model and not pipe.model.training
    state = pipe.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in data.ema.items())
    raw = hourglass.load(_ckpt(run_dir), ema=False, device="cpu")
    assert raw.weights == "raw" and "not the EMA" in raw.describe_weights()
    assert all(torch.equal(raw.model.state_dict()[k], v) for k, v in data.model.items())
    assert any(not torch.equal(data.model[k], data.ema[k]) for k in data.model)
    from_file = hourglass.load(_ckpt(run_dir), device="cpu")
    assert all(torch.equal(from_file.model.state_dict()[k], v) for k, v in state.items())
    assert "6 classes" in repr(pipe) and "step 3" in repr(pipe)


def test_load_errors(tmp_path):
    from hourglass.train import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        hourglass.load(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="is a folder without checkpoints"):
        hourglass.load(tmp_path)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A folder written by ``hourglass convert`` from the k-diffusion test vectors' EMA weights."""
    from hourglass.cli import main
    from tests._reference import load_reference

    config, tensors = load_reference()
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    folder = tmp_path_factory.mktemp("convert")
    torch.save({"model_ema": state}, folder / "ckpt.pth")
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["convert", "k-diffusion", str(folder / "config.json"), str(folder / "ckpt.pth"),
                 str(folder / "out")]) == 0
    return folder / "out", config, state


def test_load_a_converted_folder(converted, tmp_path):
    import safetensors
    import safetensors.torch

    from hourglass.interop.k_diffusion import from_k_diffusion

    out, config, state = converted
    expected = from_k_diffusion(config, state).state_dict()
    for path in (out, out / "model.safetensors"):
        p = hourglass.load(path, device="cpu")
        assert p.weights == "ema" and p.converted_from == "k-diffusion" and p.step == 0
        assert p.describe_weights() == "EMA weights converted from k-diffusion"
        assert p.recipe is not None and p.num_classes == 10
        assert all(torch.equal(p.model.state_dict()[k], v) for k, v in expected.items())
    with pytest.raises(PipelineError, match="holds only the EMA weights converted from k-diffusion"):
        hourglass.load(out, ema=False)
    assert hourglass.load(out, ema=None, device="cpu").weights == "ema"
    # a folder converted before the provenance was recorded: one set of weights, EMA or not unknown (and, as
    # then, no config.json: recipe.toml and model.safetensors only)
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for name in ("config.json", "README.md"):
        (old / name).unlink()
    with safetensors.safe_open(str(old / "model.safetensors"), "pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "weights"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    safetensors.torch.save_file(tensors, str(old / "model.safetensors"), metadata=metadata)
    for ema in (True, False):
        p = hourglass.load(old, ema=ema, device="cpu")
        assert p.weights == "unknown" and "not recorded" in p.describe_weights()
    # a folder converted from raw weights
    safetensors.torch.save_file(tensors, str(old / "model.safetensors"), metadata={**metadata, "weights": "raw"})
    with pytest.raises(PipelineError, match="holds only the raw weights converted from k-diffusion, not the EMA"):
        hourglass.load(old)
    assert hourglass.load(old, ema=False, device="cpu").describe_weights() == "raw (non-EMA) weights converted from k-diffusion"
    images = p.sample(1, steps=1, seed=0, classes=[3])
    assert images.shape == (1, 3, *p.image_size) and torch.isfinite(images).all()


# -- class names ------------------------------------------------------------------------------------
def test_class_names_from_classes_json_and_checkpoint_metadata(run_dir, tmp_path):
    import safetensors
    import safetensors.torch

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert read_class_names(run) == NAMES  # the shapes dataset names its classes (no file needed)
    (run / "classes.json").write_text(json.dumps(NAMES))
    p = hourglass.load(run, device="cpu")
    assert p.class_names == NAMES
    assert hourglass.load(_ckpt(run), device="cpu").class_names == NAMES  # a checkpoint file finds its run
    by_name = p.sample(3, classes=["star", "circle", None], steps=2, seed=4)
    by_id = p.sample(3, classes=[4, 0, None], steps=2, seed=4)
    assert torch.equal(by_name, by_id)
    assert torch.equal(by_id, p.sample(3, classes=["4", "0", "none"], steps=2, seed=4))
    with pytest.raises(PipelineError, match="'hexagon' is not a class of this model; its classes \\(id name\\): 0 circle"):
        p.sample(2, classes=["hexagon"])
    # the checkpoint's own metadata comes first
    ckpt = _ckpt(run)
    with safetensors.safe_open(str(ckpt), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    safetensors.torch.save_file(tensors, str(ckpt), metadata={**metadata, "class_names": json.dumps(list("abcdef"))})
    assert hourglass.load(run, device="cpu").class_names == list("abcdef")
    # names that do not fit the model are ignored with a warning; a malformed file is an error naming it
    (run / "classes.json").write_text(json.dumps(NAMES[:2]))
    without_names = {k: v for k, v in metadata.items() if k != "class_names"}  # training records them too
    safetensors.torch.save_file(tensors, str(ckpt), metadata=without_names)
    with pytest.warns(UserWarning, match="ignoring 2 class names: the model has 6 classes"):
        assert hourglass.load(run, device="cpu").class_names is None
    (run / "classes.json").write_text("{not json")
    from hourglass.train import CheckpointError

    with pytest.raises(CheckpointError, match="classes.json"):
        read_class_names(run)


# -- sampling ---------------------------------------------------------------------------------------
def test_seeds_are_per_image_and_batch_size_changes_nothing(pipe):
    common = {"steps": 3, "sampler": "euler_ancestral", "classes": [1, 2, 3]}
    a = pipe.sample(5, seed=7, batch_size=2, **common)
    b = pipe.sample(5, seed=7, batch_size=5, **common)
    assert a.shape == (5, 3, 16, 16) and a.dtype == torch.float32 and a.device.type == "cpu"
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # image i uses seed + i: a call starting at seed 9 (classes shifted to match) reproduces images 2.. of seed 7
    c = pipe.sample(3, seed=9, batch_size=3, steps=3, sampler="euler_ancestral", classes=[3, 1, 2])
    torch.testing.assert_close(c, a[2:], atol=1e-5, rtol=0)
    assert not torch.allclose(pipe.sample(5, seed=8, batch_size=2, **common), a)
    assert torch.equal(pipe.sample(2, seed=7, steps=3), pipe.sample(2, seed=7, steps=3))


def test_defaults_come_from_the_run(pipe):
    images = pipe.sample(steps=1)
    assert images.shape[0] == pipe.recipe.sample.n
    assert torch.equal(images[:2], pipe.sample(2, steps=1, seed=pipe.recipe.sample.seed, classes=[0, 1]))


@pytest.fixture(scope="module")
def conditioned(pipe):
    """The tiny run's model with every weight perturbed: after three training steps (zero-initialised output
    and modulation layers) the classes, and so guidance, hardly change an image."""
    import copy

    model = copy.deepcopy(pipe.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    return Pipeline(model, recipe=pipe.recipe)


def test_cfg_changes_the_result(conditioned):
    pipe = conditioned
    common = {"classes": [1, 4], "steps": 3, "seed": 2}
    plain = pipe.sample(2, cfg=1.0, **common)
    guided = pipe.sample(2, cfg=3.0, **common)
    assert (guided - plain).abs().max() > 1e-3
    assert torch.equal(pipe.sample(2, cfg=3.0, **common), guided)
    # every class in turn by default, none = the unconditional class
    assert torch.equal(pipe.sample(2, steps=3, seed=2, cfg=1.0), pipe.sample(2, classes=[0, 1], steps=3, seed=2, cfg=1.0))
    unconditional = pipe.sample(2, classes=[None], cfg=1.0, steps=3, seed=2)
    assert (unconditional - plain).abs().max() > 1e-3
    # guidance extrapolates from the unconditional towards the conditional estimate
    assert (guided - unconditional).abs().mean() > (plain - unconditional).abs().mean()


def test_sampler_options_and_iter_sample(pipe):
    a = pipe.sample(2, sampler="dpmpp_2m_sde", eta=0.0, steps=3, seed=1)
    b = pipe.sample(2, sampler={"type": "dpmpp_2m_sde", "eta": 0.0}, steps=3, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, pipe.sample(2, sampler="dpmpp_2m_sde", eta=1.0, steps=3, seed=1))
    with pytest.raises(PipelineError, match="9 is not a class of this model"):
        pipe.iter_sample(2, classes=[9])  # checked before the first batch is asked for
    batches = list(pipe.iter_sample(5, batch_size=2, steps=1, seed=0))
    assert [start for start, _ in batches] == [0, 2, 4] and [len(x) for _, x in batches] == [2, 2, 1]
    assert pipe.sample(1, steps=1, resolution=32).shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": [6]}, "6 is not a class of this model; its classes (id name): 0 circle"),
        ({"classes": ["x"]}, "'x' is not a class of this model; its classes (id name): 0 circle"),
        ({"classes": []}, "no class given; its classes"),
        ({"cfg": float("nan")}, "cfg must be a finite number >= 0"),
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"n": 2.5}, "n must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"sampler": "eular"}, "unknown sampler 'eular'"),
        ({"sampler": "euler", "eta": 1.0}, "sampler 'euler': unknown option(s) 'eta'; its options are: s_churn"),
        ({"resolution": 20}, "resolution 20x20 does not fit this model"),
        ({"dtype": "int8"}, "dtype must be"),
    ],
)
def test_bad_sample_arguments(pipe, kwargs, message):
    with pytest.raises(PipelineError) as info:
        pipe.sample(**{"n": 2, "steps": 1, **kwargs})
    assert message in str(info.value)


def test_unconditional_models_refuse_classes_and_cfg():
    model = hourglass.create_model("hdit_test", num_classes=0).eval().requires_grad_(False)
    p = Pipeline(model)
    assert p.num_classes == 0 and p.recipe is None and p.weights == "unknown"
    with pytest.raises(PipelineError, match="this model has no classes"):
        p.sample(1, classes=[0])
    with pytest.raises(PipelineError, match="needs a class- or mapping_cond-conditional model"):
        p.sample(1, cfg=2.0)
    assert p.sample(1, steps=1, seed=0).shape == (1, p.channels, *p.image_size)


# -- image-to-image ---------------------------------------------------------------------------------
def test_image_to_image_strength(pipe):
    x = pipe.sample(4, steps=3, seed=0)
    common = {"steps": 20, "seed": 3, "sampler": "euler"}
    near = pipe.image_to_image(x, strength=0.05, **common)
    far = pipe.image_to_image(x, strength=1.0, **common)
    d_near, d_far = (near - x).abs().mean().item(), (far - x).abs().mean().item()
    assert d_near < 0.05 and d_far > 5 * d_near, (d_near, d_far)
    assert torch.equal(pipe.image_to_image(x, strength=0.5, **common), pipe.image_to_image(x, strength=0.5, **common))
    # sigma_start = the level strength 0.5 starts at gives the same schedule
    from hourglass.registry import SCHEDULE

    sigmas = SCHEDULE.build(pipe.recipe.sample.schedule)(20)
    torch.testing.assert_close(pipe.image_to_image(x, sigma_start=float(sigmas[10]), **common),
                               pipe.image_to_image(x, strength=0.5, **common), atol=1e-5, rtol=0)
    # per-image seeds: batch size and n-cycling do not change an image
    a = pipe.image_to_image(x[:2], strength=0.5, n=4, batch_size=1, **common)
    b = pipe.image_to_image(x[:2], strength=0.5, n=4, batch_size=4, **common)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert not torch.equal(a[0], a[2])  # same input, seeds 3 and 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strength": 0}, "strength must be in (0, 1]"),
        ({"strength": 1.5}, "strength must be in (0, 1]"),
        ({"strength": 0.5, "sigma_start": 1.0}, "give strength or sigma_start, not both"),
        ({"sigma_start": -1.0}, "sigma_start must be a positive noise level"),
        ({"sigma_start": float("inf")}, "sigma_start must be a positive noise level"),
    ],
)
def test_bad_image_to_image_arguments(pipe, kwargs, message):
    with pytest.raises(PipelineError) as info:
        pipe.image_to_image(torch.zeros(1, 3, 16, 16), steps=2, **kwargs)
    assert message in str(info.value)


# -- inpainting -------------------------------------------------------------------------------------
def test_inpaint_keeps_the_known_region_exactly(pipe):
    x = pipe.sample(3, steps=3, seed=0)
    mask = torch.zeros(16, 16)
    mask[4:12, 2:10] = 1  # 1 = generate
    out = pipe.inpaint(x, mask, steps=4, seed=1, sampler="euler_ancestral")
    keep = (mask == 0).expand_as(x)
    assert torch.equal(out[keep], x[keep])
    assert (out - x)[~keep].abs().mean() > 0.05
    # per-image masks, (B, 1, H, W); all-zero keeps everything, and strength < 1 still keeps it
    masks = torch.stack([mask, torch.zeros(16, 16), 1 - mask])[:, None]
    out = pipe.inpaint(x, masks, steps=4, seed=1, strength=0.5, jumps=1, jump_length=2)
    assert torch.equal(out[1], x[1])
    assert torch.equal(out[0][(mask == 0).expand(3, 16, 16)], x[0][(mask == 0).expand(3, 16, 16)])
    assert torch.equal(out[2][(mask == 1).expand(3, 16, 16)], x[2][(mask == 1).expand(3, 16, 16)])


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.zeros(8, 8), "mask must be (H, W), (B, H, W) or (B, 1, H, W) with H, W = 16, 16"),
        (torch.full((16, 16), 2.0), "mask values must lie in [0, 1]"),
        (torch.zeros(2, 1, 16, 16), "got 2 masks for 3 images"),
    ],
)
def test_bad_masks(pipe, mask, message):
    with pytest.raises(PipelineError) as info:
        pipe.inpaint(torch.zeros(3, 3, 16, 16), mask, steps=1)
    assert message in str(info.value)


# -- files ------------------------------------------------------------------------------------------
def test_images_and_masks_from_files(pipe, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 60, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.full((16, 16), 200, dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    (tmp_path / "notes.txt").write_text("not an image")
    x = pipe.load_images(tmp_path)  # the folder: its two images, by name; the .txt is not listed
    assert x.shape == (2, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[0], torch.full((3, 16, 16), 200 / 127.5 - 1))  # grey replicated, no resampling
    mask = np.zeros((30, 60), dtype=np.uint8)
    mask[:, 30:] = 255  # right half of the wide image = generate
    Image.fromarray(mask).save(tmp_path / "mask.png")
    m = load_masks(tmp_path / "mask.png", size=16)
    assert m.shape == (1, 1, 16, 16) and m[..., :7].max() == 0 and m[..., 9:].min() > 0.999  # centre crop of 32x16
    out = pipe.inpaint(tmp_path / "wide.png", tmp_path / "mask.png", steps=2, seed=0)
    wide = load_images(tmp_path / "wide.png", size=16)
    assert torch.equal(out[..., :7], wide[..., :7])
    for bad, message in [
        (tmp_path / "missing.png", "does not exist"),
        (tmp_path / "notes.txt", "is not an image file: expected one of .png"),
        (tmp_path / "empty", "holds no image files"),
    ]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(PipelineError, match=message):
            pipe.image_to_image(bad)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(PipelineError, match="cannot read .*broken.png as an image"):
        pipe.load_images(tmp_path / "broken.png")


def test_pil_images_and_grids(pipe, tmp_path):
    x = pipe.sample(3, steps=1, seed=0)
    pil = pipe.to_pil(x)
    assert len(pil) == 3 and pil[0].mode == "RGB" and pil[0].size == (16, 16)
    assert pipe.to_pil(x[:1, :1])[0].mode == "L"
    again = pipe.load_images(pil)
    assert (again - x.clamp(-1, 1)).abs().max() <= 1 / 127.5 + 1e-6
    assert pipe.save_grid(x, tmp_path / "g.png", nrow=3).is_file()
    assert [p.name for p in pipe.save_images(x, tmp_path / "imgs", start=5)] == ["000005.png", "000006.png", "000007.png"]
    cells = comparison_grid(x, -x, torch.ones(1, 1, 16, 16), ncol=2)
    assert cells.shape == (12, 3, 16, 16)  # 2 groups x 3 rows x 2 columns, the last group padded with white
    assert torch.equal(cells[0], x[0]) and torch.equal(cells[4], -x[0]) and torch.equal(cells[2], torch.ones(3, 16, 16))
    assert torch.equal(cells[7], torch.ones(3, 16, 16))  # blank cell after input x[2]
