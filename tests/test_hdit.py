"""HDiT: the paper's sizes, initialisation, conditioning, shapes, optimiser groups and errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import hourglass
from hourglass import count_gmacs, create_model, list_models
from hourglass.backends import use_backends
from tests.conftest import unzero_

# HDiT (Crowson et al. 2024, arXiv 2401.11605), Table 7: (params in millions, GMAC at the native resolution),
# to one decimal; the table prints them rounded (117M / 31, 85M / 206, 557M / 198 GFLOP).
PAPER = {"hdit_imagenet128": (117.0, 31.4), "hdit_ffhq1024": (85.1, 206.1), "hdit_imagenet256": (557.4, 197.6)}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_match_params_and_gmacs(name):
    with torch.device("meta"):
        model = create_model(name)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    want_params, want_gmacs = PAPER[name]
    assert abs(params / want_params - 1) < 0.005, params
    assert abs(count_gmacs(model) / want_gmacs - 1) < 0.02


def test_list_models_and_overrides():
    assert {"hdit_s", "hdit_b", "hdit_l", "hdit_xl", "hdit_test"} <= set(list_models("hdit*"))
    model = create_model("hdit_test", num_classes=3, in_chans=1)
    assert model.spec.num_classes == 3 and model.spec.in_channels == 1
    with pytest.raises(KeyError, match="Did you mean 'hdit_test'"):
        create_model("hdit_tst")


def test_fresh_model_outputs_exact_zero():
    model = create_model("hdit_test")
    out = model(torch.randn(2, 3, 32, 32), torch.tensor([0.5, 3.0]), class_cond=torch.tensor([1, 10]))
    assert out.shape == (2, 3, 32, 32) and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("name", ["hdit_test", "hdit_swin_test"])
def test_non_square_and_other_resolutions(name):
    model = unzero_(create_model(name)).eval()
    cond = {"class_cond": torch.tensor([2])} if model.spec.num_classes else {}
    for h, w in [(32, 64), (64, 32), (48, 32)]:
        out = model(torch.randn(1, 3, h, w), torch.tensor([1.0]), **cond)
        assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    model = unzero_(create_model("hdit_test"))
    x, sigma, cls = torch.randn(2, 3, 32, 32), torch.tensor([0.3, 2.0]), torch.tensor([0, 4])

    def grads():
        model.zero_grad()
        model(x, sigma, class_cond=cls).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.set_gradient_checkpointing(True)
    for a, b in zip(plain, grads(), strict=True):
        torch.testing.assert_close(a, b)


def test_param_groups_follow_the_paper():
    model = create_model("hdit_test")
    groups = {g["name"]: g for g in model.param_groups(lr=3e-4)}
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()), "every parameter exactly once"
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups.values():
        for p in g["params"]:
            n = names[id(p)]
            is_linear_weight = n.endswith(".weight") and p.ndim == 2 and "class_emb" not in n
            assert (g["weight_decay"] > 0) == is_linear_weight, n
            is_mapping = n.startswith("mapping.net.") or "norm.linear" in n
            assert g["lr"] == pytest.approx(1e-4 if is_mapping else 3e-4), n


def test_conditioning_changes_the_output():
    model = unzero_(create_model("hdit_test")).eval()
    x = torch.randn(1, 3, 32, 32)
    a = model(x, torch.tensor([1.0]), class_cond=torch.tensor([1]))
    b = model(x, torch.tensor([1.0]), class_cond=torch.tensor([2]))
    c = model(x, torch.tensor([2.0]), class_cond=torch.tensor([1]))
    d = model(x, torch.tensor([1.0]), class_cond=torch.tensor([1]), aug_cond=torch.ones(1, 9))
    assert not torch.allclose(a, b) and not torch.allclose(a, c) and not torch.allclose(a, d)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m: m(torch.randn(1, 4, 32, 32), 1.0, class_cond=torch.tensor([0])), "4 channels"),
        (lambda m: m(torch.randn(1, 3, 30, 32), 1.0, class_cond=torch.tensor([0])), "divisible by 8x8"),
        (lambda m: m(torch.randn(1, 3, 32, 32), float("nan"), class_cond=torch.tensor([0])), "finite and > 0"),
        (lambda m: m(torch.randn(1, 3, 32, 32), -1.0, class_cond=torch.tensor([0])), "finite and > 0"),
        (lambda m: m(torch.randn(1, 3, 32, 32), 1.0, class_cond=torch.tensor([11])), r"ids must be in \[0, 10\]"),
        (lambda m: m(torch.randn(1, 3, 32, 32), 1.0), "class-conditional"),
        (lambda m: m(torch.randn(1, 3, 32, 32).long(), 1.0, class_cond=torch.tensor([0])), "floating-point"),
        (lambda m: m(torch.randn(2, 3, 32, 32), torch.ones(3), class_cond=torch.tensor([0, 1])), r"shape \(2,\)"),
        (lambda m: m(torch.randn(1, 3, 32, 32), 1.0, class_cond=torch.tensor([0]), aug_cond=torch.ones(1, 4)),
         "aug_cond"),
    ],
)
def test_bad_inputs_give_clear_errors(call, match):
    model = create_model("hdit_test")
    with pytest.raises((ValueError, TypeError), match=match):
        call(model)


@pytest.mark.parametrize(
    "levels,match",
    [
        ([{"depth": 1, "width": 96}, {"depth": 1, "width": 64}], "levels\\[0\\].width: 96 is not divisible by the attention's d_head 64"),
        ([{"depth": 1, "width": 64, "attention": {"type": "neighborhood", "kernel_size": 9}},
          {"depth": 1, "width": 64}], "kernel_size: 9"),
        ([{"depth": 1, "width": 64, "attention": {"type": "shifted_window", "window_size": 3}},
          {"depth": 1, "width": 64}], "window_size: 3"),
    ],
)
def test_impossible_shapes_are_refused(levels, match):
    with pytest.raises(ValueError, match=match):
        create_model({"type": "hdit", "levels": levels, "input_size": 32, "patch_size": 4})


def test_backend_choice_does_not_change_weights_or_outputs():
    model = unzero_(create_model("hdit_test")).eval()
    keys = set(model.state_dict())
    x, sigma, cls = torch.randn(1, 3, 32, 32), torch.tensor([1.0]), torch.tensor([3])
    with torch.no_grad(), use_backends(neighborhood="torch", **{"global": "torch"}):
        ref = model(x, sigma, class_cond=cls)
    with torch.no_grad(), use_backends(neighborhood="torch", **{"global": "sdpa"}):
        other = model(x, sigma, class_cond=cls)
    torch.testing.assert_close(ref, other, atol=1e-5, rtol=1e-5)
    assert set(model.state_dict()) == keys


#: drop timm's modules and import it again (a reload, or a test that restores sys.modules)
_REIMPORT_TIMM = "import sys; [sys.modules.pop(k) for k in list(sys.modules) if k.split('.')[0] == 'timm']; import timm; "


@pytest.mark.parametrize("order", ["hourglass_first", "timm_first", "timm_reimported"])
def test_timm_create_model(order):
    imports = {"hourglass_first": "import hourglass, timm; ", "timm_first": "import timm, hourglass; ",
               "timm_reimported": "import timm, hourglass; " + _REIMPORT_TIMM}[order]
    code = (
        f"{imports}m = timm.create_model('hdit_test'); "
        "assert type(m).__name__ == 'HDiT'; "
        "names = timm.list_models('hdit*'); assert 'hdit_l' in names and 'hdit_imagenet256' in names, names; "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_import_is_cheap():
    code = "import sys, hourglass; print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
    assert hourglass.__version__


@pytest.mark.slow
def test_ffhq1024_forward_at_1024_on_cpu():
    model = create_model("hdit_ffhq1024").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 1024, 1024), torch.tensor([2.0]))
    assert out.shape == (1, 3, 1024, 1024)
