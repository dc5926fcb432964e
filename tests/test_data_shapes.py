"""The procedural ``shapes`` dataset and the item contract shared by the built-in datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from hourglass.data import SHAPE_NAMES, ShapesDataset, ShapesDatasetSpec
from hourglass.registry import DATASET


def _build(**fields):
    resolution = fields.pop("resolution", 16)
    split = fields.pop("split", "train")
    return DATASET.build({"type": "shapes", "size": 60, **fields}, resolution=resolution, split=split)


def test_item_contract_and_attributes():
    ds = _build()
    assert isinstance(ds, ShapesDataset)
    assert (ds.num_classes, ds.channels, ds.resolution) == (6, 3, (16, 16))
    assert ds.class_names == list(SHAPE_NAMES)
    item = ds[5]
    assert set(item) == {"image", "class_cond", "aug_cond"}
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["class_cond"].shape == () and item["class_cond"].dtype == torch.int64
    assert torch.equal(item["aug_cond"], torch.zeros(9))


def test_deterministic_per_seed_and_index():
    a, b = _build(seed=3), _build(seed=3)
    for i in (0, 7, 59):
        assert torch.equal(a[i]["image"], b[i]["image"])
    # order of access does not matter: item i is a pure function of (seed, i)
    assert torch.equal(a[(7, 123)]["image"], _build(seed=3)[7]["image"])
    other = _build(seed=4)
    assert not torch.equal(a[0]["image"], other[0]["image"])
    val = _build(seed=3, split="val")
    assert not torch.equal(a[0]["image"], val[0]["image"])


def test_class_balance_and_subset():
    ds = _build(size=61)
    counts = np.bincount([int(ds[i]["class_cond"]) for i in range(len(ds))], minlength=6)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 61
    sub = _build(classes=["star", "circle"])
    assert sub.num_classes == 2 and sub.class_names == ["star", "circle"]
    assert {int(sub[i]["class_cond"]) for i in range(10)} == {0, 1}
    assert sub.parameters(0)["kind"] == "star" and sub.parameters(1)["kind"] == "circle"


@pytest.mark.parametrize("resolution", [8, 16, (12, 24)])
@pytest.mark.parametrize("channels", [1, 3])
def test_value_range_shapes_and_antialiasing(resolution, channels):
    ds = _build(resolution=resolution, channels=channels)
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    images = torch.stack([ds[i]["image"] for i in range(12)])
    assert images.shape == (12, channels, h, w)
    assert images.min() >= -1 and images.max() <= 1
    # anti-aliased edges: some pixels lie strictly between the two colours of their image
    p = ds.parameters(0)
    fg = torch.tensor(p["foreground"], dtype=torch.float32) * 2 - 1
    bg = torch.tensor(p["background"], dtype=torch.float32) * 2 - 1
    if channels == 3:
        img = images[0]
        t = ((img - bg[:, None, None]) / (fg - bg)[:, None, None]).mean(0)
        assert ((t > 0.05) & (t < 0.95)).any()
        assert (t > 0.95).any() and (t < 0.05).any()  # the shape is drawn and the background shows


def test_every_shape_renders_distinctly():
    ds = _build(size=6, resolution=32)
    images = [ds[i]["image"] for i in range(6)]
    masks = []
    for i, img in enumerate(images):
        bg = torch.tensor(ds.parameters(i)["background"], dtype=torch.float32) * 2 - 1
        masks.append(((img - bg[:, None, None]).abs().sum(0) > 0.1).float().mean())
    assert all(0.02 < m < 0.6 for m in masks), masks


def test_errors():
    with pytest.raises(ValueError, match="at least 8"):
        _build(resolution=4)
    with pytest.raises(ValueError, match="unknown shape"):
        ShapesDatasetSpec(classes=["circle", "hexagon"])
    with pytest.raises(ValueError, match="no split 'test'"):
        _build(split="test")
    with pytest.raises(IndexError, match="out of range"):
        _build()[60]
    assert torch.equal(_build()[-1]["image"], _build()[59]["image"])


@pytest.mark.parametrize("name", ["shapes", "digits", "lfw", "imagefolder"])
def test_spec_fields_are_described_and_frozen(name):
    info = DATASET.describe(name)
    assert info["fields"], name
    for field, meta in info["fields"].items():
        assert meta["description"], f"{name}.{field} has no description"
    spec_cls = DATASET.spec_class(name)
    spec = spec_cls(root="x") if name == "imagefolder" else spec_cls()
    with pytest.raises(ValidationError, match="frozen"):
        spec.type = "other"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        spec_cls.model_validate({"type": name, "no_such_field": 1, **({"root": "x"} if name == "imagefolder" else {})})
