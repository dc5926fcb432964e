"""The component contract (:mod:`hourglass.testing`) catches broken components.

Each case subclasses a built-in, breaks one rule, registers it in a private registry of its family
(no global state) and expects :func:`check_component` to fail naming the check and why.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest
import torch
from pydantic import create_model
from torch import nn

from hourglass.data import DigitsDataset, ShapesDataset
from hourglass.diffusion.denoiser import KarrasDenoiser
from hourglass.diffusion.schedules import KarrasSchedule
from hourglass.diffusion.sigma_density import LogNormalDensity
from hourglass.diffusion.weighting import EDMWeighting, SNRWeighting
from hourglass.models.dit import DiT
from hourglass.nn.attention import GlobalAttention, NeighborhoodAttention, NoAttention
from hourglass.nn.dit_mapping import DiTEmbedder
from hourglass.nn.mapping import MappingNetwork
from hourglass.nn.norm import LayerNorm, RMSNorm
from hourglass.nn.pos_emb import AxialRoPE, SinCos2D
from hourglass.registry import PRESET, TRACKER, Registry, RegistryError
from hourglass.testing import ComponentCheckError, check_component
from hourglass.trackers.jsonl import JsonlTracker

BAD = "bad"


def _broken(family: str, base: type, **attrs) -> Registry:
    """A private ``family`` registry holding ``base`` renamed to ``"bad"`` with ``attrs`` replaced."""
    spec = create_model(f"Bad{base.Spec.__name__}", __base__=base.Spec, type=(Literal[BAD], BAD))
    cls = type(f"Broken{base.__name__}", (base,), {"Spec": spec, "__doc__": "Broken on purpose.", **attrs})
    registry = Registry(family)
    registry.add(BAD, cls)
    return registry


def _expect(registry: Registry, match: str, **kwargs) -> None:
    with pytest.raises(ComponentCheckError, match=match):
        check_component(registry, BAD, **kwargs)


# -- schedule ----------------------------------------------------------------------------------------
def _rising(self, n, device=None, dtype=torch.float32):
    sigmas = KarrasSchedule.__call__(self, n, device, dtype)
    return torch.cat([sigmas[:-1].flip(0), sigmas[-1:]])


def _no_final_zero(self, n, device=None, dtype=torch.float32):
    sigmas = KarrasSchedule.__call__(self, n, device, dtype)
    return torch.cat([sigmas[:-1], sigmas[-2:-1] / 2])


@pytest.mark.parametrize("attrs,match", [
    ({"__call__": _rising}, "'schedule' check: schedule.2.: sigmas must be strictly decreasing"),
    ({"__call__": _no_final_zero}, "'schedule' check: schedule.1. ends in 40; it must end in 0"),
    ({"__call__": lambda self, n, **kw: 2 * KarrasSchedule.__call__(self, n, **kw)},
     "'schedule' check: schedule.1. runs from 160 .* expected sigma_max 80"),
    ({"__call__": lambda self, n, **kw: KarrasSchedule.__call__(self, n)}, "is not float64"),
])
def test_broken_schedules_are_caught(attrs, match):
    _expect(_broken("schedule", KarrasSchedule, **attrs), match)


# -- sigma density -----------------------------------------------------------------------------------
def _global_rng(self, n, generator=None, device=None, dtype=torch.float32):
    return self.icdf(torch.rand(n, dtype=torch.float64).clamp(1e-7, 1 - 1e-7)).to(dtype)


@pytest.mark.parametrize("attrs,match", [
    ({"icdf": lambda self, u: -LogNormalDensity.icdf(self, u)}, "'sigma_density' check: draws must be positive"),
    ({"sample": _global_rng}, "same seed differ; draw from the generator"),
    ({"sample": lambda self, n, **kw: LogNormalDensity.sample(self, n, **kw)[:, None]}, r"expected float32 of shape \(64,\)"),
    ({"icdf": lambda self, u: torch.full_like(u, 0.5)}, "different seeds gave the same draws"),
])
def test_broken_sigma_densities_are_caught(attrs, match):
    _expect(_broken("sigma_density", LogNormalDensity, **attrs), match)


# -- weighting ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("base,attrs,match", [
    (EDMWeighting, {"__call__": lambda self, s, sd: -torch.ones_like(s)}, "weights must be finite and positive"),
    (EDMWeighting, {"__call__": lambda self, s, sd: torch.ones(())}, r"expected torch.float32 of shape \(13,\)"),
    (SNRWeighting, {"__call__": lambda self, s, sd: SNRWeighting.__call__(self, s, sd) / s.mean()},
     "a sample's weight depends on the rest of the batch"),
    (SNRWeighting, {"x0_weight": lambda self, s, sd: torch.ones_like(s)}, r"not x0_weight\(sigma\) \* c_out\(sigma\)\^2"),
])
def test_broken_weightings_are_caught(base, attrs, match):
    _expect(_broken("weighting", base, **attrs), match)


# -- denoiser ----------------------------------------------------------------------------------------
def _no_skip(self, x, sigma, **cond):
    sigma, c_skip, c_out, c_in = self._scalings_for(x, sigma)
    return c_out * self.inner_model(c_in * x, sigma, **cond)


@pytest.mark.parametrize("attrs,match", [
    ({"forward": _no_skip}, r"D\(x, sigma=0.0001\) is .* away from x"),
    ({"forward": lambda self, x, sigma, **cond: KarrasDenoiser.forward(self, x, sigma)},
     "did not pass class_cond on to the backbone"),
    ({"loss": lambda self, x0, noise, sigma, weighting, **cond: KarrasDenoiser.loss(self, x0, noise, sigma, "edm")},
     "doubling the weighting did not double the loss"),
    ({"loss": lambda self, *args, **kw: -KarrasDenoiser.loss(self, *args, **kw)}, "negative losses"),
])
def test_broken_denoisers_are_caught(attrs, match):
    _expect(_broken("denoiser", KarrasDenoiser, **attrs), match)


# -- dataset -----------------------------------------------------------------------------------------
def _zero_to_one(self, index, generator):
    image, label = ShapesDataset.load(self, index, generator)
    return (image + 1) / 2, label


def _global_jitter(self, index, generator):
    image, label = ShapesDataset.load(self, index, generator)
    return (image + 0.01 * torch.rand(image.shape)).clamp(-1, 1), label


@pytest.mark.parametrize("base,attrs,match", [
    (ShapesDataset, {"load": _zero_to_one}, r"the images look scaled to \[0, 1\]"),
    (DigitsDataset, {"classes_of": classmethod(lambda cls, spec: len(spec.digits) + 1)},
     r"classes_of\(spec\) declares 11 but the built dataset has 10"),
    (DigitsDataset, {"channels_of": classmethod(lambda cls, spec: 3)}, r"channels_of\(spec\) declares 3"),
    (DigitsDataset, {"load": lambda self, i, g: (DigitsDataset.load(self, i, g)[0], 10)}, "class_cond 10 is not a class id"),
    (ShapesDataset, {"load": _global_jitter}, "gave two different items"),
    (ShapesDataset, {"__len__": lambda self: 0}, "it has no items"),
])
def test_broken_datasets_are_caught(base, attrs, match):
    _expect(_broken("dataset", base, **attrs), match)


# -- vae ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests._vae import make_tiny_vae

    return str(make_tiny_vae(tmp_path_factory.mktemp("vae")))


def _vae_base():
    from hourglass.vae import AutoencoderKLVAE

    return AutoencoderKLVAE


def _trainable(self, spec):
    _vae_base().__init__(self, spec)
    self.model.encoder.conv_in.weight.requires_grad_(True)


def _unclipped(self, latents):
    return _vae_base().decode(self, latents) * 2


def _batch_norm_latents(self, images, *, generator=None):
    latents = _vae_base().encode(self, images, generator=generator)
    return latents - latents.mean(0, keepdim=True)


@pytest.mark.parametrize("attrs,options,match", [
    ({"__init__": _trainable}, {}, r"'vae' check: parameters \['model.encoder.conv_in.weight'\] require grad"),
    ({"train": nn.Module.train}, {}, r"train\(\) put it in training mode"),
    ({"latent_channels_of": classmethod(lambda cls, spec: 8)}, {}, r"latent_channels_of\(spec\) declares 8 but"),
    ({"decode": _unclipped}, {}, r"decoded pixels span .*; decode returns images in \[-1, 1\]"),
    ({"encode": lambda self, images, *, generator=None: images[:, :4, ::4, ::4]}, {},
     r"encode of \(2, 3, 16, 16\) images returned torch.float32 \(2, 3, 4, 4\); expected float32 \(2, 4, 4, 4\)"),
    ({"stochastic": False}, {"latents": "sample"}, "other latents, but it declares stochastic = False"),
    ({"stochastic": True}, {}, "the same latents, but it declares stochastic = True"),
    ({"encode": _batch_norm_latents}, {}, "encode of a batch differs from its items done one at a time"),
    ({"decode": lambda self, z: _vae_base().decode(self, z + torch.randn_like(z)).clamp(-1, 1)}, {},
     "decode gave two different results"),
])
def test_broken_vaes_are_caught(attrs, options, match, tiny_vae):
    _expect(_broken("vae", _vae_base(), **attrs), match, options={"path": tiny_vae, **options})


# -- tracker -----------------------------------------------------------------------------------------
def _floats_only(self, step, metrics):
    JsonlTracker.log(self, step, {k: float(v) for k, v in metrics.items()})  # float("diverged") raises


def _pops_strings(self, step, metrics):
    for key in [k for k, v in metrics.items() if isinstance(v, str)]:
        metrics.pop(key)  # the next tracker of the run would not see event / message
    JsonlTracker.log(self, step, metrics)


def _starts_only_new_runs(self, run_dir, recipe_data, resumed_step):
    if resumed_step is not None:
        raise RuntimeError("no run to resume")
    JsonlTracker.start(self, run_dir, recipe_data, resumed_step)


@pytest.mark.parametrize("attrs,match", [
    ({"log": _floats_only}, r"'tracker' check: log\(2, ...\) of a new run raised ValueError"),
    ({"log": _pops_strings}, r"'tracker' check: log\(2, metrics\) changed the metrics it was given"),
    ({"start": _starts_only_new_runs}, "'tracker' check: start.. of a run resumed at step 1 raised RuntimeError"),
    ({"finish": lambda self: True}, r"'tracker' check: finish\(\) of a new run returned True"),
    ({"requires": ("no_such_module_for_hourglass",), "install": "pip install no-such-module"},
     "'tracker' check: it cannot start here: the bad tracker needs the no_such_module_for_hourglass package"),
])
def test_broken_trackers_are_caught(attrs, match):
    _expect(_broken("tracker", JsonlTracker, **attrs), match)


def test_a_tracker_needing_a_package_must_say_how_to_install_it():
    no_install = type("NoInstall", (JsonlTracker,), {"requires": ("wandb",), "__doc__": "Broken on purpose."})
    with pytest.raises(RegistryError, match="tracker 'no_install': a tracker with requires must set install"):
        TRACKER.add("no_install", no_install)
    assert not TRACKER.registered("no_install")


# -- model -------------------------------------------------------------------------------------------
@pytest.fixture
def bad_preset():
    """The ``dit_test`` preset, registered as a preset of the family ``"bad"`` for the test's length."""
    PRESET.add("bad_test", {**PRESET.get("dit_test"), "type": BAD})
    yield "bad_test"
    PRESET.unregister("bad_test")


def _with_unused(self, spec):
    DiT.__init__(self, spec)
    self.unused = nn.Parameter(torch.ones(3))


def _stages(**change):
    return lambda self: [dataclasses.replace(stage, **change) for stage in DiT.stages(self)]


@pytest.mark.parametrize("attrs,match", [
    ({"test_preset": None}, "'spec' check: it declares no test_preset"),
    ({"__init__": _with_unused}, "'gradients' check: parameter unused got no gradient"),
    ({"check_inputs": lambda self, x, sigma, *a: sigma}, "'forward' check: an input with 4 channels .* raised"),
    ({"stages": _stages(prefixes=("blocks.",))}, "'stages' check: .* no parameter lies under prefix 'blocks.'"),
    ({"stages": _stages(layers=3)}, "'stages' check: stage 'layers' declares 3 layers"),
    ({"param_groups": lambda self, *a, **kw: DiT.param_groups(self)[:-1]}, "'param_groups' check: .* in no group"),
    ({"run_layer": lambda self, layer, *args: layer(*args)}, "'checkpointing' check: .* no layer is recomputed"),
])
def test_broken_models_are_caught(attrs, match, bad_preset):
    _expect(_broken("model", DiT, **{"test_preset": bad_preset, **attrs}), match)


# -- declared facts of the module families -------------------------------------------------------------
def _wide_theta(self, pos):
    theta = AxialRoPE.forward(self, pos)
    return torch.cat((theta, theta, theta), dim=-1)


def _nosy_norm(self, x, cond=None):
    y, _ = LayerNorm.forward(self, x)
    return (y if cond is None else y + cond.mean()), None


@pytest.mark.parametrize("family,base,attrs,options,match", [
    ("attention", GlobalAttention, {"kernel": None, "connects_all_tokens": False}, {},
     r"'forward' check: its kernel is None \(no token mixing\) but changing token \(0, 0\) changed"),
    ("attention", GlobalAttention, {"kernel": "no_such_kernel"}, {}, "'spec' check: its kernel 'no_such_kernel' is not"),
    ("attention", NeighborhoodAttention, {"connects_all_tokens": True}, {"kernel_size": 3},
     "'forward' check: it declares connects_all_tokens but changing token .* left"),
    ("attention", GlobalAttention, {"label": classmethod(lambda cls, spec: "")}, {}, "label.spec. returned ''"),
    ("attention", NeighborhoodAttention, {"grid_problems": classmethod(lambda cls, spec, grid, layers=(0,): ["small"])},
     {}, "must return a list of hourglass.spec.Problem"),
    ("attention", NoAttention, {"attention_macs": lambda self, b, h, w: 5}, {}, "mixes no tokens; expected 0"),
    ("pos_emb", SinCos2D, {"encoding": "none"}, {}, r"its encoding is 'none' but forward\(x\) is not x"),
    ("pos_emb", SinCos2D, {"encoding": "rope"}, {}, "'spec' check: its encoding is 'rope'"),
    ("pos_emb", AxialRoPE, {"forward": _wide_theta}, {}, r"with 2 d <= d_head=64; got \(8, 8, 2, 48\)"),
    ("norm", RMSNorm, {"conditional": True}, {}, "declares conditional = True but its output does not depend"),
    ("norm", LayerNorm, {"forward": _nosy_norm}, {}, "declares conditional = False but its output depends on cond"),
    ("mapping", DiTEmbedder, {"embeds_aug": classmethod(lambda cls, spec: True)}, {},
     r"embeds_aug\(spec\) is True but its output does not depend on aug_cond"),
    ("mapping", MappingNetwork, {"embeds_aug": classmethod(lambda cls, spec: False)}, {},
     r"embeds_aug\(spec\) is False but its output depends on aug_cond"),
])
def test_broken_declared_facts_are_caught(family, base, attrs, options, match):
    _expect(_broken(family, base, **attrs), match, options=options)


def test_components_outside_their_family_contract_and_missing_options_are_refused():
    registry = Registry("attention")

    class _Spec(GlobalAttention.Spec):
        type: Literal["bad"] = "bad"

    class NotAKind(nn.Module):
        """An attention that does not subclass AttentionKind."""

        Spec = _Spec

    registry.add(BAD, NotAKind)
    _expect(registry, "'spec' check: .* does not subclass AttentionKind")
    with pytest.raises(ValueError, match="has required options root without defaults"):
        check_component("dataset", "imagefolder")
    with pytest.raises(ValueError, match="does not fit the check's 8x8 grid"):
        check_component("attention", "shifted_window", options={"window_size": 3})
