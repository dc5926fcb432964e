"""An image folder with corrupt, truncated, grey, RGBA, 16-bit and tiny files: handled or skipped and counted."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hourglass.data.imagefolder import ImageFolderDataset, ImageFolderDatasetSpec


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8), "RGB")
    root = tmp_path / "images"
    root.mkdir()
    files = {
        "a_rgb.png": _png(rgb),
        "b_grey.png": _png(rgb.convert("L")),
        "c_rgba.png": _png(Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA")),
        "d_16bit.png": _png(Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16))),
        "e_tiny.png": _png(rgb.resize((2, 2))),
        "f_one_pixel.png": _png(rgb.resize((1, 1))),
        "g_palette.png": _png(rgb.convert("P")),
        "h_good.jpg": _jpeg(rgb),
        # damage found at indexing (verify): skipped and counted
        "x_garbage.png": b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20,
        "x_empty.png": b"",
        "x_text.jpg": b"this is not a jpeg",
        "x_truncated.png": _png(rgb)[:60],
        # damage found only when decoding: replaced by the next readable image and counted
        "y_truncated.jpg": _jpeg(rgb.resize((64, 64)))[:400],
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


GOOD = 8


def test_unreadable_files_are_skipped_with_one_counting_warning(messy):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolderDataset(ImageFolderDatasetSpec(root=str(messy)), resolution=16)
    skipped = {name for name, _ in ds.skipped}
    assert {"x_garbage.png", "x_empty.png", "x_text.jpg", "x_truncated.png"} <= skipped, ds.skipped
    assert not skipped & {"a_rgb.png", "b_grey.png", "c_rgba.png", "d_16bit.png", "e_tiny.png", "g_palette.png"}
    messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(messages) == 1 and f"skipped {len(ds.skipped)} of" in messages[0], messages
    assert len(ds) + len(ds.skipped) == len(list(messy.iterdir()))
    print(f"FAULTS imagefolder: {len(list(messy.iterdir()))} files, {len(ds.skipped)} skipped at indexing")


@pytest.mark.parametrize("channels", [1, 3])
def test_every_readable_item_has_the_right_shape_and_range(messy, channels):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolderDataset(ImageFolderDatasetSpec(root=str(messy), channels=channels), resolution=16)
        for i in range(len(ds)):
            image, label = ds.load(i, None)
            assert image.shape == (channels, 16, 16), (ds.files[i], image.shape)
            assert image.isfinite().all() and image.min() >= -1 and image.max() <= 1
            assert label == 0
    late = [str(w.message) for w in caught if "could not decode" in str(w.message)]
    if any(name == "y_truncated.jpg" for name in map(str, ds.files)):
        assert ds.load_failures == 1 and len(late) == 1 and "y_truncated.jpg" in late[0]


@pytest.mark.filterwarnings("ignore:skipped")
def test_16_bit_keeps_its_precision(messy):
    ds = ImageFolderDataset(ImageFolderDatasetSpec(root=str(messy)), resolution=20)
    index = [str(f) for f in ds.files].index("d_16bit.png")
    pixels = ds.read(index)
    raw = np.asarray(Image.open(messy / "d_16bit.png")).astype(np.float64) / 65535
    assert np.allclose(pixels[0].numpy(), raw, atol=1e-6)  # not squashed to 8 bits or clipped


def test_min_size_skips_tiny_images_and_counts_them(messy):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolderDataset(ImageFolderDatasetSpec(root=str(messy), min_size=8), resolution=16)
    small = [name for name, why in ds.skipped if why.startswith("smaller than min_size")]
    assert sorted(small) == ["e_tiny.png", "f_one_pixel.png"]
    assert any(f"skipped {len(small)} of" in str(w.message) for w in caught)


def test_a_folder_of_only_broken_files_is_a_clear_error(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    (root / "a.png").write_bytes(b"nope")
    (root / "b.jpg").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as info:
            ImageFolderDataset(ImageFolderDatasetSpec(root=str(root)), resolution=16)
    assert str(root) in str(info.value) or "broken" in str(info.value), str(info.value)
