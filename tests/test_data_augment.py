"""Karras non-leaking augmentation: identity at p=0, aug_cond layout, exact geometry."""

from __future__ import annotations

import math

import pytest
import torch

from hourglass.data import (
    Augmented,
    AugmentParams,
    KarrasAugmentSpec,
    apply_augment,
    augment_matrix,
    karras_augment,
    sample_augment_params,
)
from hourglass.registry import DATASET


def _image(c: int = 3, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_p0_is_identity_with_zero_cond():
    image = _image()
    for seed in range(20):
        out, cond = karras_augment(image, KarrasAugmentSpec(p=0.0), torch.Generator().manual_seed(seed))
        assert out is image and torch.equal(cond, torch.zeros(9))


def test_p1_aug_cond_layout():
    spec = KarrasAugmentSpec(p=1.0)
    conds = []
    for seed in range(200):
        params = sample_augment_params(spec, torch.Generator().manual_seed(seed))
        cond = params.aug_cond()
        expected = torch.tensor(
            [
                params.xflip,
                params.yflip,
                params.scale_exp,
                math.cos(params.rot) - 1,
                math.sin(params.rot),
                params.aniso * math.cos(params.aniso_angle),
                params.aniso * math.sin(params.aniso_angle),
                params.tx,
                params.ty,
            ]
        )
        torch.testing.assert_close(cond, expected)
        conds.append(cond)
    conds = torch.stack(conds)
    assert set(conds[:, 0].tolist()) == {0.0, 1.0} and set(conds[:, 1].tolist()) == {0.0, 1.0}
    assert 0.35 < conds[:, 0].mean() < 0.65 and 0.35 < conds[:, 1].mean() < 0.65  # flips at 1/2
    assert (conds[:, [2, 4, 5, 6, 7, 8]] != 0).all()  # with p = 1 every transform is applied
    torch.testing.assert_close((conds[:, 3] + 1) ** 2 + conds[:, 4] ** 2, torch.ones(200))
    assert conds[:, 3].min() < -1.8 and conds[:, 4].min() < -0.9 and conds[:, 4].max() > 0.9  # rot over (-pi, pi)
    assert 0.7 < conds[:, 2].std() < 1.3 and 0.7 < conds[:, 7].std() < 1.3  # standard normal exponents/shifts


def test_probability_p_per_transform():
    spec = KarrasAugmentSpec(p=0.25)
    draws = [sample_augment_params(spec, torch.Generator().manual_seed(s)) for s in range(2000)]
    rate = sum(d.scale_exp != 0 for d in draws) / len(draws)
    assert 0.2 < rate < 0.3
    xrate = sum(d.xflip for d in draws) / len(draws)
    assert 0.45 < xrate < 0.55  # x-flip is drawn at 1/2 whatever p is


def test_disabling_a_transform_keeps_the_others_draws():
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    full = sample_augment_params(KarrasAugmentSpec(p=1.0), g())
    no_rot = sample_augment_params(KarrasAugmentSpec(p=1.0, rotate=False), g())
    assert no_rot.rot == 0 and no_rot._replace(rot=full.rot) == full


@pytest.mark.parametrize("xflip, yflip", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_flags_actually_flip(xflip, yflip):
    image = _image()
    out, cond = apply_augment(image, AugmentParams(xflip=xflip, yflip=yflip))
    dims = [d for d, on in ((2, xflip), (1, yflip)) if on]
    assert torch.equal(out, image.flip(dims))
    assert cond[0] == xflip and cond[1] == yflip
    # the grid_sample path agrees with the exact flip
    tiny = AugmentParams(xflip=xflip, yflip=yflip, scale_exp=1e-12)
    resampled, _ = apply_augment(image, tiny, KarrasAugmentSpec(interpolation="bilinear"))
    torch.testing.assert_close(resampled, image.flip(dims), atol=1e-5, rtol=0)


def test_sampled_x_flip_flips():
    image = _image()
    spec = KarrasAugmentSpec(p=1.0, yflip=False, scale=False, rotate=False, aniso=False, translate=False)
    for seed in range(10):
        out, cond = karras_augment(image, spec, torch.Generator().manual_seed(seed))
        assert torch.equal(out, image.flip(-1) if cond[0] == 1 else image)
        assert (cond[1:] == torch.tensor([0, 0, 0, 0, 0, 0, 0, 0])).all()


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_rotation_and_translation_geometry(mode):
    image = _image(h=16, w=16)
    spec = KarrasAugmentSpec(interpolation=mode)
    out, cond = apply_augment(image, AugmentParams(rot=math.pi / 2), spec)
    torch.testing.assert_close(out, torch.rot90(image, 1, (1, 2)), atol=1e-5, rtol=0)  # counter-clockwise
    assert cond[4] == pytest.approx(1.0) and cond[3] == pytest.approx(-1.0)
    out, _ = apply_augment(image, AugmentParams(tx=1.0), spec)  # 1/8 of 16 px = 2 px to the right
    torch.testing.assert_close(out[:, :, 2:], image[:, :, :-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, :, :2], image[:, :, :2].flip(-1), atol=1e-5, rtol=0)  # reflection padding
    out, _ = apply_augment(image, AugmentParams(ty=-0.5), spec)  # 1 px up
    torch.testing.assert_close(out[:, :-1], image[:, 1:], atol=1e-5, rtol=0)


def test_non_square_scale_and_matrix():
    image = _image(h=8, w=16)
    params = AugmentParams(scale_exp=5.0)  # scale 2: the centre 4x8 block fills the image
    m = augment_matrix(params, 8, 16)
    torch.testing.assert_close(m, torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64)))
    out, _ = apply_augment(image, params, KarrasAugmentSpec(interpolation="bilinear"))
    assert out.shape == image.shape
    torch.testing.assert_close(out.mean(), image[:, 2:6, 4:12].mean(), atol=0.05, rtol=0)
    aniso = augment_matrix(AugmentParams(aniso=5.0, aniso_angle=0.3), 8, 16)
    assert torch.linalg.det(aniso[:2, :2]).item() == pytest.approx(1.0)  # area preserving


def test_output_stays_in_range_and_dtype():
    image = torch.sign(_image())  # hard edges make bicubic overshoot
    spec = KarrasAugmentSpec(p=1.0)
    for seed in range(10):
        out, cond = karras_augment(image, spec, torch.Generator().manual_seed(seed))
        assert out.shape == image.shape and out.dtype == image.dtype and cond.shape == (9,)
        assert out.min() >= -1 and out.max() <= 1
    half = apply_augment(image.to(torch.bfloat16), AugmentParams(rot=0.3))[0]
    assert half.dtype == torch.bfloat16


def test_augmented_dataset_wrapper():
    base = DATASET.build({"type": "shapes", "size": 12}, resolution=16)
    aug = Augmented(base, {"p": 1.0}, seed=3)
    assert (aug.num_classes, aug.channels, aug.resolution, aug.class_names) == (
        base.num_classes,
        base.channels,
        base.resolution,
        base.class_names,
    )
    assert len(aug) == 12 and aug.uses_draw_keys
    a, b = aug[(4, 99)], aug[(4, 99)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["aug_cond"], b["aug_cond"])
    assert a["class_cond"] == base[4]["class_cond"]
    assert (a["aug_cond"] != 0).sum() >= 6
    assert not torch.equal(aug[(4, 100)]["aug_cond"], a["aug_cond"])
    assert not torch.equal(Augmented(base, {"p": 1.0}, seed=4)[(4, 99)]["aug_cond"], a["aug_cond"])
    off = Augmented(base, KarrasAugmentSpec(p=0.0))
    assert torch.equal(off[(4, 99)]["image"], base[4]["image"]) and torch.equal(off[4]["aug_cond"], torch.zeros(9))


def test_spec_fields_are_described():
    for name, field in KarrasAugmentSpec.model_fields.items():
        assert field.description, f"KarrasAugmentSpec.{name} has no description"


def test_spec_validation():
    with pytest.raises(ValueError, match="less than or equal to 1"):
        KarrasAugmentSpec(p=1.5)
    with pytest.raises(ValueError, match="one image"):
        apply_augment(torch.zeros(2, 3, 8, 8), AugmentParams(rot=1.0))
