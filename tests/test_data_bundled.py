"""The bundled ``digits`` (scikit-learn) and ``lfw`` (scikit-image) datasets."""

from __future__ import annotations

import pytest
import torch

from hourglass.registry import DATASET


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [8, 16, (16, 24)])
def test_digits(channels, resolution):
    ds = DATASET.build({"type": "digits", "channels": channels}, resolution=resolution, split="train")
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    assert len(ds) == 1797 and ds.num_classes == 10 and ds.class_names == [str(d) for d in range(10)]
    assert (ds.channels, ds.resolution) == (channels, (h, w))
    images = torch.stack([ds[i]["image"] for i in range(0, 1797, 60)])
    assert images.shape[1:] == (channels, h, w)
    assert images.min() == -1 and images.max() <= 1 and images.max() > 0.9
    labels = [int(ds[i]["class_cond"]) for i in range(20)]
    assert labels[:10] == list(range(10))  # load_digits starts 0, 1, ..., 9
    if channels == 3:
        assert torch.equal(images[:, 0], images[:, 2])


def test_digits_at_native_size_is_the_raw_data():
    from sklearn.datasets import load_digits

    ds = DATASET.build("digits", resolution=8)
    raw = torch.tensor(load_digits().images[3], dtype=torch.float32)
    torch.testing.assert_close(ds[3]["image"][0], raw / 8 - 1)


def test_digits_subset_and_unconditional():
    ds = DATASET.build({"type": "digits", "digits": [3, 7]}, resolution=8)
    assert ds.num_classes == 2 and ds.class_names == ["3", "7"]
    assert 350 < len(ds) < 370
    assert {int(ds[i]["class_cond"]) for i in range(len(ds))} == {0, 1}
    unc = DATASET.build({"type": "digits", "class_cond": False}, resolution=8)
    assert unc.num_classes == 0 and unc.class_names == [] and int(unc[5]["class_cond"]) == 0
    with pytest.raises(ValueError, match="0..9"):
        DATASET.build({"type": "digits", "digits": [3, 12]}, resolution=8)
    with pytest.raises(ValueError, match="no split 'val'.*no official split"):
        DATASET.build("digits", resolution=8, split="val")


@pytest.mark.parametrize("channels", [1, 3])
def test_lfw(channels):
    ds = DATASET.build({"type": "lfw", "channels": channels}, resolution=32, split="train")
    assert len(ds) == 200 and ds.num_classes == 2 and ds.class_names == ["face", "non_face"]
    assert ds[0]["image"].shape == (channels, 32, 32)
    assert int(ds[0]["class_cond"]) == 0 and int(ds[99]["class_cond"]) == 0
    assert int(ds[100]["class_cond"]) == 1 and int(ds[199]["class_cond"]) == 1
    images = torch.stack([ds[i]["image"] for i in range(0, 200, 10)])
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.2


def test_lfw_at_native_size_and_subsets():
    from skimage import data

    ds = DATASET.build({"type": "lfw", "subset": "non_faces"}, resolution=25)
    assert len(ds) == 100 and ds.num_classes == 0 and ds.class_names == []
    raw = torch.tensor(data.lfw_subset()[100], dtype=torch.float32)
    torch.testing.assert_close(ds[0]["image"][0], raw * 2 - 1)
    faces = DATASET.build({"type": "lfw", "subset": "faces"}, resolution=25)
    torch.testing.assert_close(faces[0]["image"][0], torch.tensor(data.lfw_subset()[0], dtype=torch.float32) * 2 - 1)
