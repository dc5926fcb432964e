"""Pretrained folders and the Hub: save_pretrained / from_pretrained, a Hub cache laid out as huggingface_hub
lays it out (offline), timm, create_model(pretrained=...), hourglass.load, ``hourglass export``, uploads."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import hourglass
from hourglass.cli import main
from hourglass.hub import PretrainedError, from_pretrained, save_pretrained_folder
from hourglass.testing import unzero_
from tests.test_readme import quickstart_folder  # noqa: F401 (fixture)
from tests.test_train_loop import one_thread, quiet, tiny_recipe  # noqa: F401 (fixture)

NAMES = ["circle", "square", "triangle", "cross", "star", "ring"]
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _inputs(model, seed=0):
    spec = model.spec
    size = spec.input_size if isinstance(spec.input_size, int) else spec.input_size[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, spec.in_channels, size, size, generator=g)
    kwargs = {"class_cond": torch.tensor([1, spec.num_classes])} if spec.num_classes else {}
    return x, torch.tensor([0.5, 3.0]), kwargs


def _out(model, seed=0):
    x, sigma, kwargs = _inputs(model, seed)
    with torch.no_grad():
        return model.eval()(x, sigma, **kwargs)


def _pair(preset: str, seed: int = 0):
    """A model with every weight non-zero, and an EMA copy that differs from it."""
    torch.manual_seed(seed)
    model = unzero_(hourglass.create_model(preset)).eval()
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.01)
    return model, ema


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- a Hub cache, laid out exactly as huggingface_hub lays it out --------------------------------------
@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache in offline mode (HF_HUB_OFFLINE=1, HF_HUB_CACHE=<tmp>): nothing can be downloaded."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # huggingface_hub reads both at import time
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def lay_out(cache: Path, repo_id: str, folder: Path, *, commit: str, refs=("main",), skip=()) -> Path:
    """Put ``folder`` into the Hub cache as a download of ``repo_id`` at ``commit`` would leave it:
    ``models--owner--name/blobs/<hash>``, ``snapshots/<commit>/<file>`` (relative symlinks to the blobs),
    ``refs/<branch or tag>`` holding the commit hash (no newline)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in sorted(folder.iterdir()):
        if file.name in skip:
            continue
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


# -- save / load -------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["hdit_test", "dit_test", "uvit_test"])
def test_save_pretrained_round_trips_every_family(tmp_path, preset):
    from huggingface_hub import ModelCard

    model, ema = _pair(preset)
    names = [f"class {i}" for i in range(model.spec.num_classes)]
    folder = model.save_pretrained(tmp_path / "f", ema=ema, class_names=names, metadata={"step": 7})
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "classes.json", "config.json", "ema.safetensors", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "hourglass-pretrained" and config["model"]["type"] == preset.split("_")[0]
    assert config["weights"] == {"model.safetensors": "raw", "ema.safetensors": "ema"}
    card = ModelCard.load(folder / "README.md")  # the front matter huggingface_hub reads
    assert card.data.library_name == "hourglass" and "hourglass" in card.data.tags
    loaded = hourglass.from_pretrained(folder)  # the EMA weights by default
    assert type(loaded) is type(model) and loaded.spec == model.spec and not loaded.training
    assert torch.equal(_out(loaded), _out(ema)) and _same(loaded, ema)
    raw = hourglass.from_pretrained(folder, ema=False)
    assert torch.equal(_out(raw), _out(model))
    assert all(p.requires_grad for p in raw.parameters())  # ready to fine-tune
    assert type(model).from_pretrained(folder).spec == model.spec


def test_a_folder_without_ema_and_its_files(tmp_path):
    model, ema = _pair("hdit_test")
    folder = model.save_pretrained(tmp_path / "f", card=False)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert torch.equal(_out(from_pretrained(folder)), _out(model))  # ema=True: the only weights
    assert torch.equal(_out(from_pretrained(folder / "model.safetensors")), _out(model))
    # an EMA-only folder (weights="ema"): ema=False has nothing to load
    ema.save_pretrained(tmp_path / "e", weights="ema")
    with pytest.raises(PretrainedError, match="holds only EMA weights"):
        from_pretrained(tmp_path / "e", ema=False)
    with pytest.raises(PretrainedError, match="class names for a model with 10 classes"):
        model.save_pretrained(tmp_path / "g", class_names=["a"])


def test_overwrite_removes_what_the_new_save_does_not_write(tmp_path):
    model, ema = _pair("hdit_test")
    folder = model.save_pretrained(tmp_path / "f", ema=ema, class_names=[str(i) for i in range(10)])
    with pytest.raises(PretrainedError, match="already holds config.json, model.safetensors, ema.safetensors"):
        save_pretrained_folder(folder, model=model, overwrite=False)
    model.save_pretrained(folder)  # no EMA now: a stale ema.safetensors would be loaded instead of the new weights
    assert not (folder / "ema.safetensors").exists() and not (folder / "classes.json").exists()
    assert torch.equal(_out(from_pretrained(folder)), _out(model))


def test_loading_never_unpickles(tmp_path):
    model, _ = _pair("hdit_test")
    folder = model.save_pretrained(tmp_path / "f")
    torch.save(model.state_dict(), folder / "model.safetensors")  # a pickle under the weights' name
    with pytest.raises(hourglass.train.CheckpointError, match="PyTorch checkpoint"):
        from_pretrained(folder)


# -- the Hub ------------------------------------------------------------------------------------------
@pytest.fixture
def on_the_hub(tmp_path, hub_cache):
    """``owner/tiny`` in the Hub cache: main = commit A (model, ema), tag v1 = commit B (other weights)."""
    model, ema = _pair("hdit_test")
    a = model.save_pretrained(tmp_path / "a", ema=ema, repo_id="owner/tiny", class_names=[f"c{i}" for i in range(10)])
    other, _ = _pair("hdit_test", seed=1)
    b = other.save_pretrained(tmp_path / "b")
    lay_out(hub_cache, "owner/tiny", a, commit=COMMIT_A)
    lay_out(hub_cache, "owner/tiny", b, commit=COMMIT_B, refs=("v1",))
    return model, ema, other


def test_huggingface_hub_itself_finds_the_laid_out_cache(on_the_hub, hub_cache):
    from huggingface_hub import hf_hub_download, snapshot_download

    path = Path(hf_hub_download("owner/tiny", "config.json"))
    assert path.parent == hub_cache / "models--owner--tiny" / "snapshots" / COMMIT_A
    assert Path(hf_hub_download("owner/tiny", "model.safetensors", revision="v1")).parent.name == COMMIT_B
    assert Path(snapshot_download("owner/tiny", revision=COMMIT_B)).name == COMMIT_B


def test_from_pretrained_reads_the_hub_cache_offline(on_the_hub, hub_cache):
    model, ema, other = on_the_hub
    for source in ("owner/tiny", "hf-hub:owner/tiny", f"owner/tiny@{COMMIT_A}"):
        assert torch.equal(_out(from_pretrained(source)), _out(ema)), source
    assert torch.equal(_out(from_pretrained("owner/tiny", ema=False)), _out(model))
    for kwargs in ({"revision": "v1"}, {"revision": COMMIT_B}):
        assert torch.equal(_out(from_pretrained("owner/tiny", **kwargs)), _out(other))
    assert torch.equal(_out(from_pretrained("owner/tiny@v1")), _out(other))
    with pytest.raises(PretrainedError, match=r"^owner/absent does not exist here, and as a Hugging Face Hub id: "
                                              r"HF_HUB_OFFLINE is set and config.json is not in the Hub cache"):
        from_pretrained("owner/absent")
    with pytest.raises(PretrainedError, match="cannot load owner/tiny \\(revision v2\\) from the Hugging Face Hub"):
        from_pretrained("hf-hub:owner/tiny", revision="v2")


def test_only_the_weights_asked_for_are_fetched(tmp_path, hub_cache):
    model, ema = _pair("hdit_test")
    folder = model.save_pretrained(tmp_path / "f", ema=ema)
    lay_out(hub_cache, "owner/emaonly", folder, commit=COMMIT_A, skip=("model.safetensors",))
    assert torch.equal(_out(from_pretrained("owner/emaonly")), _out(ema))  # model.safetensors is not needed
    with pytest.raises(PretrainedError, match="model.safetensors is not in the Hub cache"):
        from_pretrained("owner/emaonly", ema=False)


def test_pipeline_loads_a_folder_and_a_hub_id(on_the_hub, tmp_path):
    model, ema, _ = on_the_hub
    pipe = hourglass.load(tmp_path / "a", device="cpu")
    assert pipe.weights == "ema" and pipe.class_names[:2] == ["c0", "c1"] and pipe.recipe is None
    assert _same(pipe.model, ema)
    hub = hourglass.load("owner/tiny", ema=False, device="cpu")
    assert hub.weights == "raw" and _same(hub.model, model) and hub.num_classes == 10
    images = hub.sample(2, steps=1, seed=0, classes=["c3", 4])
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    assert hourglass.load("owner/tiny", revision="v1", ema=None, device="cpu").weights == "raw"  # v1: raw weights only
    with pytest.raises(hourglass.PipelineError, match="holds only the raw weights, not the EMA ones"):
        hourglass.load("owner/tiny@v1", device="cpu")


def test_create_model_and_timm_take_pretrained_weights(on_the_hub, tmp_path):
    import timm

    from hourglass.models import register_preset
    from hourglass.registry import PRESET

    model, ema, _ = on_the_hub
    folder = tmp_path / "a"
    assert torch.equal(_out(hourglass.create_model("hdit_test", pretrained=str(folder))), _out(ema))
    assert torch.equal(_out(hourglass.create_model("hdit_test", pretrained="owner/tiny")), _out(ema))
    with pytest.raises(ValueError, match="preset 'hdit_test' declares no pretrained weights"):
        hourglass.create_model("hdit_test", pretrained=True)
    with pytest.raises(PretrainedError, match=r"do not fit this HDiT: 1 of another shape .*mapping.class_emb.weight"):
        hourglass.create_model("hdit_test", pretrained=str(folder), num_classes=3)
    for file, expected in (("model.safetensors", model), ("ema.safetensors", ema)):
        loaded = timm.create_model("hdit_test", pretrained=True,
                                   pretrained_cfg_overlay=dict(file=str(folder / file)))
        assert torch.equal(_out(loaded), _out(expected)), file
    loaded = timm.create_model("hdit_test", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="owner/tiny"))
    assert torch.equal(_out(loaded), _out(ema))
    loaded = timm.create_model("hdit_test", pretrained=True,
                               pretrained_cfg=dict(hf_hub_id="owner/tiny", hf_hub_filename="model.safetensors"))
    assert torch.equal(_out(loaded), _out(model))
    assert not _same(timm.create_model("hdit_test"), model)  # without pretrained: fresh weights
    with pytest.raises(ValueError, match="declares no pretrained weights"):
        timm.create_model("hdit_test", pretrained=True)
    try:  # a preset that declares its weights
        register_preset("hdit_test_pretrained", "hdit", {k: v for k, v in hourglass.models.get_preset("hdit_test").items()
                                                         if k != "type"}, pretrained="owner/tiny")
        assert torch.equal(_out(hourglass.create_model("hdit_test_pretrained", pretrained=True)), _out(ema))
        assert torch.equal(_out(timm.create_model("hdit_test_pretrained", pretrained=True)), _out(ema))
    finally:
        PRESET.unregister("hdit_test_pretrained")
    assert hourglass.models.factory.pretrained_source("hdit_test_pretrained") is None


# -- converted folders ---------------------------------------------------------------------------------
def test_convert_writes_a_pretrained_folder_and_old_folders_still_load(tmp_path):
    from huggingface_hub import ModelCard

    from tests._reference import load_reference

    config, tensors = load_reference()
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    torch.save({"model_ema": state}, tmp_path / "ckpt.pth")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["convert", "k-diffusion", str(tmp_path / "config.json"), str(tmp_path / "ckpt.pth"),
                 str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"] == "k-diffusion" and meta["weights"] == {"model.safetensors": "ema"}
    assert "k-diffusion" in ModelCard.load(out / "README.md").data.tags
    model = from_pretrained(out)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in hourglass.interop.k_diffusion.from_k_diffusion(
        config, state).state_dict().items())
    old = tmp_path / "old"  # as `hourglass convert` wrote it before: recipe.toml + model.safetensors
    old.mkdir()
    for name in ("recipe.toml", "model.safetensors"):
        shutil.copy(out / name, old / name)
    assert _same(from_pretrained(old), model)


# -- hourglass export ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("run")
    hourglass.train.train(tiny_recipe("train.steps=3", "train.checkpoint_every=3", "train.log_every=1"), path,
                          report=quiet)
    torch.set_num_threads(threads)
    return path


def test_export_writes_the_folder_and_its_card(run_dir, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from hourglass.train import read_checkpoint

    out = tmp_path / "exported"
    assert main(["export", str(run_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}: config.json, model.safetensors, ema.safetensors, recipe.toml, "
                              "classes.json, samples.png, README.md")
    assert "step 3" in printed and "GMACs" in printed
    assert (out / "samples.png").read_bytes() == (run_dir / "samples" / "final.png").read_bytes()
    assert json.loads((out / "classes.json").read_text()) == NAMES
    data = read_checkpoint(run_dir / "checkpoints" / "step_00000003.safetensors")
    assert (out / "recipe.toml").read_text() == data.recipe_toml
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "hourglass" and "class-conditional" in card.data.tags
    text = card.text
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "![samples](samples.png)" in text and "| training steps | 3 |" in text and "| parameters |" in text
    assert "GMACs per forward" in text and "### Last metrics" in text
    assert f"| 3 | {metrics[-1]['loss']:.4g} |" in text  # the last line of metrics.jsonl, in the table
    assert "data `shapes`, batch 8, steps 3" in text and "circle, square, triangle" in text
    config = json.loads((out / "config.json").read_text())
    assert config["metadata"]["step"] == 3 and config["metadata"]["params"] > 0 and len(config["metadata"]["metrics"]) == 3
    assert all(torch.equal(from_pretrained(out).state_dict()[k], v) for k, v in data.ema.items())
    assert all(torch.equal(from_pretrained(out, ema=False).state_dict()[k], v) for k, v in data.model.items())
    pipe = hourglass.load(out, device="cpu")
    assert (pipe.step, pipe.class_names, pipe.weights, pipe.converted_from) == (3, NAMES, "ema", "")
    # again without --overwrite: one line, exit 2; --weights ema: only the EMA weights, as model.safetensors
    assert main(["export", str(run_dir), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and "Traceback" not in err
    assert main(["export", str(run_dir), str(out), "--overwrite", "--weights", "ema"]) == 0
    assert not (out / "ema.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["weights"] == {"model.safetensors": "ema"}
    assert all(torch.equal(from_pretrained(out).state_dict()[k], v) for k, v in data.ema.items())


def test_an_offline_upload_fails_in_one_line(run_dir, tmp_path, hub_cache, capsys):
    from hourglass.hub import push_to_hub

    out = tmp_path / "exported"
    assert main(["export", str(run_dir), str(out), "--push-to-hub", "me/tiny-hdit"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("hourglass export: error: cannot upload to me/tiny-hdit: HF_HUB_OFFLINE is set")
    assert "hf upload me/tiny-hdit" in captured.err and captured.out.startswith(f"wrote {out}")
    assert 'hourglass.load("me/tiny-hdit")' in (out / "README.md").read_text()  # the card names the Hub id
    with pytest.raises(PretrainedError, match="HF_HUB_OFFLINE is set"):
        push_to_hub(out, "me/tiny-hdit")
    with pytest.raises(PretrainedError, match="not a pretrained folder"):
        push_to_hub(run_dir, "me/tiny-hdit")


# -- the guide (docs/pretrained.md) -------------------------------------------------------------------
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "pretrained.md"


def _blocks(kind: str) -> list[str]:
    import re

    return re.findall(rf"^```{kind}\n(.*?)^```", GUIDE.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_guides_python_examples_run(quickstart_folder, tmp_path, monkeypatch):  # noqa: F811 (the fixture)
    """The guide's Python blocks, in order in one namespace, in a folder holding runs/quickstart (trained two steps),
    with ``me/hdit-quickstart`` in an offline Hub cache; the block that uploads is not run."""
    from huggingface_hub import constants

    monkeypatch.chdir(quickstart_folder)
    if not (quickstart_folder / "recipes").exists():
        (quickstart_folder / "recipes").symlink_to(GUIDE.parents[1] / "recipes", target_is_directory=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert main(["export", "runs/quickstart", str(tmp_path / "hub-folder")]) == 0
    lay_out(tmp_path / "cache", "me/hdit-quickstart", tmp_path / "hub-folder", commit=COMMIT_A)
    blocks = _blocks("python")
    uploads = [b for b in blocks if "push_to_hub(" in b]
    assert len(uploads) == 1 and len(blocks) >= 6
    namespace: dict = {"__name__": "__guide__"}
    for i, block in enumerate(blocks):
        if block not in uploads:
            exec(compile(block, f"docs/pretrained.md (python block {i})", "exec"), namespace)  # noqa: S102
    assert namespace["pipe"].weights == "ema" and namespace["grown"].model.input_size == 128
    assert (quickstart_folder / "converted-test" / "config.json").is_file()


def test_the_guides_load_reports_are_what_a_warm_start_prints():
    """The report lines shown in the guide are those of the quick-start model (its 5000 steps written in)."""
    from hourglass.recipe import load_recipe
    from hourglass.registry import MODEL
    from hourglass.train.warm_start import adapt_weights

    root = GUIDE.parents[1]
    shown = [b.strip().splitlines() for b in _blocks("text") if b.startswith("init_from ")]
    quick = load_recipe(root / "recipes" / "quickstart.toml")
    torch.manual_seed(0)
    source = MODEL.build(quick.model).state_dict()
    two = load_recipe(root / "recipes" / "quickstart.toml", ['data.dataset.classes=["star", "ring"]',
                                                              "model.num_classes=2"])
    grown = load_recipe(root / "recipes" / "quickstart_grow64.toml")
    _, fine = adapt_weights(source, quick.model, MODEL.build(two.model), allow=["classes"], source="quickstart-hub/",
                            source_class_names=NAMES, class_names=["star", "ring"])
    _, grew = adapt_weights(source, quick.model, MODEL.build(grown.model), allow=grown.train.init_allow,
                            source=grown.train.init_from)
    for report in (fine, grew):
        report.weights, report.step = "ema", 5000
    assert shown == [fine.lines(), grew.lines()]
