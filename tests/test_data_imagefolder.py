"""The ``imagefolder`` dataset: discovery, classes, pixel conversion, transforms and bad files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hourglass.data import ImageFolderDataset, pil_to_tensor
from hourglass.registry import DATASET

RED = (255, 0, 0)


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A mixed folder: 3 classes, nested folders, many formats and modes, and 3 broken files."""
    root = tmp_path / "images"
    (root / "cats" / "nested" / "deeper").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / "birds").mkdir()
    (root / ".hidden").mkdir()
    _noise(20, 30).save(root / "cats" / "a.png")
    _noise(24, 24, 1).save(root / "cats" / "b.JPG", quality=95)
    _noise(16, 16, 2).save(root / "cats" / "nested" / "c.webp")
    _noise(16, 16, 3).save(root / "cats" / "nested" / "deeper" / "d.bmp")
    Image.new("L", (16, 16), 100).save(root / "dogs" / "grey.png")
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere, alpha: left half transparent, right half half-opaque
    rgba[:, 8:, 3] = 128
    Image.fromarray(rgba, "RGBA").save(root / "dogs" / "rgba.png")
    ramp = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 256 + 3
    Image.fromarray(ramp).save(root / "dogs" / "sixteen.png")  # mode I;16
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(root / "dogs" / "palette.gif")
    Image.new("RGB", (2, 2), (0, 0, 255)).save(root / "dogs" / "tiny.png")
    _noise(16, 16, 4).save(root / "birds" / "e.tiff")
    (root / "dogs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png at all" * 3)
    data = _png_bytes(_noise(16, 16, 5))
    (root / "dogs" / "truncated.png").write_bytes(data[: len(data) // 2])
    data = _png_bytes(_noise(32, 32, 6), "JPEG")
    (root / "birds" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "dogs" / "notes.txt").write_text("not an image")
    _noise(16, 16, 7).save(root / ".hidden" / "ignored.png")
    _noise(16, 16, 8).save(root / "loose.png")
    return root


def _build(root: Path, resolution=16, expect_warnings: int | None = None, **fields):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = DATASET.build({"type": "imagefolder", "root": str(root), **fields}, resolution=resolution)
    messages = [str(w.message) for w in caught]
    if expect_warnings is not None:
        assert len(messages) == expect_warnings, messages
    return ds, messages


def test_subfolder_classes_counts_and_one_warning(folder: Path):
    ds, messages = _build(folder, classes="subfolders", expect_warnings=2)
    assert isinstance(ds, ImageFolderDataset)
    assert ds.class_names == ["birds", "cats", "dogs"] and ds.num_classes == 3
    # 13 candidates in class folders; corrupt.png and truncated.png fail verify
    assert len(ds) == 11
    assert np.bincount(ds.labels).tolist() == [2, 4, 5]
    assert "cats/nested/deeper/d.bmp" in ds.files and not any("hidden" in f for f in ds.files)
    skipped = [m for m in messages if m.startswith("skipped")]
    assert len(skipped) == 1
    assert skipped[0].startswith("skipped 2 of 13 images")
    assert "dogs/corrupt.png (" in skipped[0] and "dogs/truncated.png (" in skipped[0]
    assert any("ignored 1 image(s) lying directly in" in m for m in messages)
    assert int(ds[ds.files.index("dogs/grey.png")]["class_cond"]) == 2


def test_unconditional_includes_loose_files(folder: Path):
    ds, messages = _build(folder, expect_warnings=1)
    assert ds.num_classes == 0 and ds.class_names == [] and len(ds) == 12
    assert "loose.png" in ds.files
    with pytest.warns(UserWarning, match="truncated.jpg"):
        assert all(int(ds[i]["class_cond"]) == 0 for i in range(3))


@pytest.mark.parametrize("channels", [1, 3])
def test_every_item_has_the_contract(folder: Path, channels: int):
    ds, _ = _build(folder, channels=channels, resolution=(8, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncated JPEG
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (channels, 8, 12)
            assert item["image"].min() >= -1 and item["image"].max() <= 1
            assert torch.equal(item["aug_cond"], torch.zeros(9))


def test_pixel_conversions(folder: Path):
    ds, _ = _build(folder)
    get = lambda name: ds[ds.files.index(name)]["image"]  # noqa: E731
    grey = get("dogs/grey.png")
    torch.testing.assert_close(grey, torch.full((3, 16, 16), 100 / 255 * 2 - 1))
    rgba = get("dogs/rgba.png")  # over white: transparent -> white, half -> pinkish
    torch.testing.assert_close(rgba[:, :, :8], torch.ones(3, 16, 8))
    half = 128 / 255
    torch.testing.assert_close(rgba[:, 0, 12], torch.tensor([1.0, 1 - half, 1 - half]) * 2 - 1)
    sixteen = get("dogs/sixteen.png")
    ramp = torch.arange(256, dtype=torch.float32).view(16, 16) * 256 + 3
    torch.testing.assert_close(sixteen[0], ramp / 65535 * 2 - 1, atol=1e-6, rtol=0)
    assert torch.equal(sixteen[0], sixteen[2])
    palette = get("dogs/palette.gif")
    torch.testing.assert_close(palette[:, 3, 3], torch.tensor([10, 200, 30]) / 255 * 2 - 1)
    tiny = get("dogs/tiny.png")  # 2x2 upscaled to 16x16
    torch.testing.assert_close(tiny, torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1).expand(3, 16, 16))
    jpeg = get("cats/b.JPG")
    reference = torch.from_numpy(np.asarray(_noise(24, 24, 1), dtype=np.float32)).permute(2, 0, 1)[:, 4:20, 4:20]
    assert (jpeg - (reference / 255 * 2 - 1)).abs().mean() < 0.6  # resized from 24 to 16: roughly the same


def test_alpha_modes_and_single_channel():
    rgba = Image.fromarray(np.array([[[255, 0, 0, 0], [255, 0, 0, 255]]], dtype=np.uint8), "RGBA")
    torch.testing.assert_close(pil_to_tensor(rgba, 3, "white")[:, 0, 0], torch.ones(3))
    torch.testing.assert_close(pil_to_tensor(rgba, 3, "black")[:, 0, 0], torch.zeros(3))
    torch.testing.assert_close(pil_to_tensor(rgba, 3, "drop")[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(pil_to_tensor(rgba, 1, "white")[:, 0, 1], torch.tensor([0.299]))
    la = Image.fromarray(np.array([[[50, 0], [50, 255]]], dtype=np.uint8), "LA")
    out = pil_to_tensor(la, 1)
    torch.testing.assert_close(out[0, 0], torch.tensor([1.0, 50 / 255]))
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    torch.testing.assert_close(pil_to_tensor(cmyk, 3)[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_load_time_failure_substitutes_next_and_counts(folder: Path):
    ds, _ = _build(folder, classes="subfolders")
    bad = ds.files.index("birds/truncated.jpg")
    with pytest.warns(UserWarning, match="could not decode .*truncated.jpg"):
        item = ds[bad]
    assert torch.equal(item["image"], ds[bad + 1]["image"])
    assert int(item["class_cond"]) == int(ds.labels[bad + 1])
    assert ds.load_failures == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only the first failure warns
        ds[bad]
    assert ds.load_failures == 1  # known bad: skipped without a new attempt


def test_min_size_skips_small_images(folder: Path):
    ds, messages = _build(folder, min_size=10)
    assert "dogs/tiny.png" not in ds.files and len(ds) == 11
    assert any(m.startswith("skipped 1 of 14 images") and "min_size=10" in m and "2x2" in m for m in messages)


def test_flip_and_random_crop(folder: Path):
    plain, _ = _build(folder)
    flipped, _ = _build(folder, hflip=1.0)
    i = plain.files.index("cats/a.png")
    assert torch.equal(flipped[i]["image"], plain[i]["image"].flip(-1))
    crops, _ = _build(folder, crop="random", resolution=8)
    assert torch.equal(crops[(i, 11)]["image"], crops[(i, 11)]["image"])  # the draw seed fixes the crop
    seen = {tuple(crops[(i, s)]["image"].flatten()[:4].tolist()) for s in range(8)}
    assert len(seen) > 1


def test_empty_and_missing_folder_errors(tmp_path: Path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"no images found in '.*empty'.*\.png .*\.jpeg.*\.webp"):
        DATASET.build({"type": "imagefolder", "root": str(empty)}, resolution=16)
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=r"'.*missing' does not exist \(looked for \.png .*\.tiff"):
        DATASET.build({"type": "imagefolder", "root": str(missing)}, resolution=16)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one error naming the reasons, no warning before it
        with pytest.raises(FileNotFoundError, match=r"none of the 1 image files.*x\.png \(UnidentifiedImageError"):
            DATASET.build({"type": "imagefolder", "root": str(tmp_path / "bad")}, resolution=16)
    with pytest.raises(ValueError, match="no split 'val'.*point 'root'"):
        DATASET.build({"type": "imagefolder", "root": str(empty)}, resolution=16, split="val")


def test_availability_problems_find_a_missing_or_empty_folder_without_indexing(tmp_path: Path, monkeypatch):
    from hourglass.data.imagefolder import ImageFolderDatasetSpec

    def problems(root, **fields):
        spec = ImageFolderDatasetSpec(root=str(root), **fields)
        return DATASET.get("imagefolder").availability_problems(spec)

    (p,) = problems(tmp_path / "missing")
    assert p.path == "root" and "does not exist" in p.message and "data.dataset.root" in p.hint
    assert p.value == str(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    (p,) = problems(tmp_path / "file.png")
    assert "is a file, not a folder" in p.message
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    (p,) = problems(tmp_path / "empty")
    assert "holds no image file" in p.message and ".png" in p.message
    loose = tmp_path / "loose"
    loose.mkdir()
    _noise(8, 8).save(loose / "a.png")
    assert problems(loose) == []
    (p,) = problems(loose, classes="subfolders")
    assert "no image inside a class subfolder" in p.message and 'classes = "none"' in p.hint
    (loose / "cats").mkdir()
    _noise(8, 8).save(loose / "cats" / "b.png")
    assert problems(loose, classes="subfolders") == []
    monkeypatch.chdir(tmp_path)
    (p,) = problems("relative/missing")
    assert f"relative to the working directory {tmp_path}" in p.message
    import hourglass.data.imagefolder as imagefolder

    walk, calls = imagefolder.walk_files, []

    def first_only(*args, **kwargs):  # the check never lists the whole folder: it stops at the first image
        calls.append(kwargs.get("first", False))
        return walk(*args, **kwargs)

    monkeypatch.setattr(imagefolder, "walk_files", first_only)
    assert problems(loose) == [] and calls and all(calls)


def test_class_names_of_datasets_whose_spec_names_them():
    shapes, digits, lfw = (DATASET.get(n) for n in ("shapes", "digits", "lfw"))
    assert shapes.class_names_of(DATASET.validate({"type": "shapes", "classes": ["star", "ring"]})) == ["star", "ring"]
    assert digits.class_names_of(DATASET.validate({"type": "digits", "digits": [3, 7]})) == ["3", "7"]
    assert digits.class_names_of(DATASET.validate({"type": "digits", "class_cond": False})) is None
    assert lfw.class_names_of(DATASET.validate("lfw")) == ["face", "non_face"]
    assert DATASET.get("imagefolder").class_names_of(DATASET.validate({"type": "imagefolder", "root": "x"})) is None
