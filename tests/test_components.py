"""Every registered component of every family (plugins included) passes the component contract.

The contract is :func:`hourglass.testing.check_component`, the same one plugin authors run; this
file only supplies what some components need (a folder of images, a tiny randomly initialised
``AutoencoderKL`` folder) and a few extra configurations, and keeps the tests of facts particular to
one component.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hourglass.nn.pos_emb import make_axial_pos
from hourglass.registry import ATTENTION, FFN, POS_EMB, REGISTRIES, SKIP
from hourglass.testing import CHECKED_FAMILIES, check_component

#: configurations checked besides each component's defaults: (family, name) -> [(id, options)]
VARIANTS: dict[tuple[str, str], list[tuple[str, dict]]] = {
    ("mapping", "dit"): [("augment", {"augment": True})],  # embeds_aug becomes true
    ("norm", "layer_norm"): [("no_affine", {"affine": False})],
    ("dataset", "imagefolder"): [("subfolders", {"classes": "subfolders"}),
                                 ("random_crop", {"crop": "random", "hflip": 0.5, "channels": 1})],
    ("dataset", "digits"): [("unconditional", {"class_cond": False, "digits": [3, 7], "channels": 3})],
    ("dataset", "lfw"): [("faces", {"subset": "faces"})],
    ("dataset", "latents"): [("subfolders", {"classes": "subfolders", "hflip": 0.5})],
    ("dataset", "webdataset"): [("cls", {"classes": "cls"}), ("indexed", {"streaming": False, "crop": "random"})],
    ("dataset", "hf_datasets"): [("labels", {"label_column": "label", "hflip": 0.5}),
                                 ("saved", {"label_column": "label", "streaming": False})],
    ("vae", "autoencoder_kl"): [("sample", {"latents": "sample"}),
                                ("declared", {"latent_channels": 4, "downsample_factor": 4, "scaling_factor": 2.0,
                                              "shift_factor": 0.1})],
}
#: components that read files: they get ``root`` (a folder the ``image_folders`` fixture writes)
READS_FILES = {("dataset", "imagefolder"), ("dataset", "latents"), ("dataset", "paired")}
#: sharded datasets: they get ``root`` / ``path`` (shards the ``sharded_data`` fixture writes)
SHARDED = {("dataset", "webdataset"), ("dataset", "hf_datasets")}
#: dataset wrappers: the dataset they wrap (``vectors`` also gets ``file``, written by ``vector_file``)
WRAPS = {"superres": {"dataset": {"type": "lfw"}}, "vectors": {"dataset": {"type": "digits"}}}
#: VAEs that load weights: they get ``path`` (a tiny AutoencoderKL the ``tiny_vae_folder`` fixture writes)
LOADS_WEIGHTS = {("vae", "autoencoder_kl")}
#: trackers that talk to a service: they get a local one (W&B offline; MLflow's file store under tmp)
LOCAL_SERVICE = {"wandb", "mlflow"}


def _cases():
    for family, registry in REGISTRIES.items():
        for name in registry.names():
            yield pytest.param(family, name, {}, id=f"{family}:{name}")
            for label, options in VARIANTS.get((family, name), []):
                yield pytest.param(family, name, options, id=f"{family}:{name}:{label}")


#: one case per registered component of every family, and per extra configuration of VARIANTS
CASES = list(_cases())


def _image(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory) -> dict[str, Path]:
    """A flat folder of four PNGs (sizes and modes vary) and one with two class subfolders."""
    root = tmp_path_factory.mktemp("images")
    images = [((20, 30), "RGB"), ((24, 24), "L"), ((12, 12), "RGBA"), ((40, 16), "RGB")]
    for folder, labels in (("flat", ["", "", "", ""]), ("classes", ["cats", "cats", "dogs", "dogs"])):
        for i, ((size, mode), label) in enumerate(zip(images, labels, strict=True)):
            where = root / folder / label
            where.mkdir(parents=True, exist_ok=True)
            _image(size, mode, i).save(where / f"{i}.png")
    return {"none": root / "flat", "subfolders": root / "classes"}


@pytest.fixture(scope="module")
def paired_folder(tmp_path_factory) -> dict[str, Path]:
    """``source/`` (grey JPEGs) and ``target/`` (RGB PNGs) of three images paired by name."""
    root = tmp_path_factory.mktemp("paired")
    for i in range(3):
        (root / "source").mkdir(exist_ok=True)
        (root / "target").mkdir(exist_ok=True)
        _image((20, 20), "L", i).save(root / "source" / f"{i}.jpg")
        _image((24, 24), "RGB", 10 + i).save(root / "target" / f"{i}.png")
    return {"none": root}


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory) -> Path:
    """A ``.npy`` of 1797 x 3 vectors (one per digits image)."""
    path = tmp_path_factory.mktemp("vectors") / "digits.npy"
    np.save(path, np.random.default_rng(0).standard_normal((1797, 3)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def tiny_vae_folder(tmp_path_factory) -> Path:
    """A randomly initialised AutoencoderKL (factor 4, 4 latent channels) saved with save_pretrained."""
    pytest.importorskip("diffusers")
    from tests._vae import make_tiny_vae

    return make_tiny_vae(tmp_path_factory.mktemp("vae"))


@pytest.fixture(scope="module")
def latent_folders(tmp_path_factory) -> dict[str, Path]:
    """Four 4x16x16 ``.npy`` latents (unit Gaussian: beyond [-1, 1]), flat and in two class subfolders."""
    root = tmp_path_factory.mktemp("latents")
    rng = np.random.default_rng(0)
    for folder, labels in (("flat", ["", "", "", ""]), ("classes", ["cats", "cats", "dogs", "dogs"])):
        for i, label in enumerate(labels):
            where = root / folder / label
            where.mkdir(parents=True, exist_ok=True)
            np.save(where / f"{i}.npy", rng.standard_normal((4, 16, 16)).astype(np.float32))
    return {"none": root / "flat", "subfolders": root / "classes"}


@pytest.fixture(scope="module")
def sharded_data(tmp_path_factory) -> dict[str, Path]:
    """WebDataset shards of a labelled image folder, streamable Parquet files and a save_to_disk folder."""
    from tests._shards import image_folder, parquet_files, saved_folder, webdataset_shards

    root = tmp_path_factory.mktemp("shards")
    folder = image_folder(root / "images", n=6)
    data = {"webdataset": webdataset_shards(folder, root / "tars"), "hf_datasets": parquet_files(root / "parquet")}
    if importlib.util.find_spec("datasets") is not None:
        data["saved"] = saved_folder(root / "saved")
    return data


def test_every_family_is_checked():
    assert set(CHECKED_FAMILIES) == set(REGISTRIES)


@pytest.mark.parametrize("family,name,options", CASES)
def test_component_contract(family, name, options, request, monkeypatch, tmp_path):
    if family == "tracker":
        problems = REGISTRIES["tracker"].get(name).availability_problems(REGISTRIES["tracker"].validate(name))
        if problems:
            pytest.skip(f"tracker {name!r} cannot start here: {problems[0].text}")
        if name in LOCAL_SERVICE:
            monkeypatch.setenv("WANDB_MODE", "offline")
            monkeypatch.setenv("WANDB_SILENT", "true")
            monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        if name == "mlflow":
            options = {"tracking_uri": (tmp_path / "mlruns").as_uri(), **options}
    if (family, name) in READS_FILES:
        fixture = {"latents": "latent_folders", "paired": "paired_folder"}.get(name, "image_folders")
        folders = request.getfixturevalue(fixture)
        options = {"root": str(folders[options.get("classes", "none")]), **options}
    if (family, name) in SHARDED:
        pytest.importorskip("webdataset" if name == "webdataset" else "datasets")
        data = request.getfixturevalue("sharded_data")
        if name == "webdataset":
            options = {"root": str(data["webdataset"]), **options}
        else:
            saved = options.get("streaming") is False
            options = {"path": str(data["saved" if saved else "hf_datasets"]), "streaming": not saved, **options}
    if family == "dataset" and name in WRAPS:
        options = {**WRAPS[name], **options}
        if name == "vectors":
            options = {"file": str(request.getfixturevalue("vector_file")), **options}
    if (family, name) in LOADS_WEIGHTS:
        options = {"path": str(request.getfixturevalue("tiny_vae_folder")), **options}
    checks = check_component(family, name, options=options)
    assert checks[0] == "spec" and len(checks) > 1


# -- facts particular to one component --------------------------------------------------------------
@pytest.mark.parametrize("d_head,n_heads", [(8, 4), (64, 2), (12, 1), (9, 3)])
def test_axial_rope_accepts_the_head_sizes_k_diffusion_accepts(d_head, n_heads):
    rope = POS_EMB.build({"type": "axial_rope"}, d_head=d_head, n_heads=n_heads)
    per_head = d_head // 2 // 4
    assert rope.freqs.shape == (n_heads, per_head)
    theta = rope(make_axial_pos(4, 6))
    assert theta.shape == (4, 6, n_heads, 2 * per_head)
    # k-diffusion: n_heads * (d_head // 2) // 4 log-spaced values, laid out (per_head, n_heads), transposed
    log_f = torch.linspace(torch.log(torch.tensor(torch.pi)), torch.log(torch.tensor(10 * torch.pi)),
                           n_heads * (d_head // 2) // 4 + 1)[:-1]
    torch.testing.assert_close(rope.freqs, log_f.exp().view(per_head, n_heads).T)


@pytest.mark.parametrize("d_head,n_heads", [(4, 1), (12, 2), (20, 2)])
def test_axial_rope_refuses_head_sizes_it_cannot_lay_out(d_head, n_heads):
    with pytest.raises(ValueError, match="use a d_head divisible by 8"):
        POS_EMB.build({"type": "axial_rope"}, d_head=d_head, n_heads=n_heads)


@pytest.mark.parametrize("kind,expected", [("global", torch.bfloat16), ("neighborhood", torch.float32),
                                           ("shifted_window", torch.float32)])
def test_rope_positions_dtype_under_bf16_autocast_follows_k_diffusion(kind, expected):
    spec = {"type": kind, "d_head": 32, **({"kernel_size": 3} if kind == "neighborhood" else {}),
            **({"window_size": 4} if kind == "shifted_window" else {})}
    attn = ATTENTION.build(spec, width=64, pos_emb={"type": "axial_rope"}, layer_index=1)
    seen = []
    original = attn.pos_emb.forward
    attn.pos_emb.forward = lambda pos: (seen.append(pos.dtype), original(pos))[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(torch.randn(1, 8, 8, 64), make_axial_pos(8, 8))
    assert seen == [expected]


# -- exact formulas of the FFNs and the lerp skip, computed by hand -------------------------------------
def _linear(x, layer):
    return x @ layer.weight.T + (0 if layer.bias is None else layer.bias)


def _silu(g):
    return g / (1 + torch.exp(-g))


def _gelu_erf(g):
    return 0.5 * g * (1 + torch.erf(g / math.sqrt(2)))


def _gelu_tanh(g):
    return 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))


@pytest.mark.parametrize("name,act", [("swiglu", _silu), ("geglu", _gelu_erf)])
def test_gated_ffns_follow_their_formula(name, act):
    """SwiGLU is ``Down(value * SiLU(gate))``, GEGLU ``Down(value * GELU_erf(gate))``, ``Up -> [value, gate]``."""
    d_ff = 10
    ffn = FFN.build({"type": name, "bias": True, "zero_init": False}, width=6, d_ff=d_ff, dropout=0.0).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64) * 2
    hidden = _linear(x, ffn.up_proj)
    value, gate = hidden[..., :d_ff], hidden[..., d_ff:]
    expected = _linear(value * act(gate), ffn.down_proj)
    torch.testing.assert_close(ffn(x), expected)


@pytest.mark.parametrize("approximate,act", [("tanh", _gelu_tanh), ("none", _gelu_erf)])
def test_gelu_mlp_follows_its_formula(approximate, act):
    """The GELU MLP is ``Down(GELU(Up(x)))`` with the tanh (DiT) or the exact erf GELU."""
    spec = {"type": "gelu_mlp", "bias": True, "zero_init": False, "approximate": approximate}
    mlp = FFN.build(spec, width=6, d_ff=10, dropout=0.0).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64) * 2
    torch.testing.assert_close(mlp(x), _linear(act(_linear(x, mlp.up_proj)), mlp.down_proj))


def test_lerp_skip_moves_from_the_skip_towards_the_upsampled_tokens():
    """``skip + f * (up(x) - skip)`` at f = 0.2 (at the default 0.5 swapped lerp arguments would not show)."""
    split = SKIP.build({"type": "lerp", "init": 0.2}, in_width=8, out_width=4).double()
    assert split.fac.item() == pytest.approx(0.2)
    x, skip = torch.randn(2, 2, 3, 8, dtype=torch.float64), torch.randn(2, 4, 6, 4, dtype=torch.float64)
    up = split.up(x)
    torch.testing.assert_close(split(x, skip), skip + 0.2 * (up - skip))
