"""The public API for plugin authors: everything a third-party package needs to add components.

A plugin is an installable distribution that declares an entry point in the group
``hourglass.plugins``::

    [project.entry-points."hourglass.plugins"]
    dinat = "hourglass_dinat:register"

hourglass loads every such entry point lazily, once, on the first access to any registry. An
entry point names either a callable (called with no arguments; the recommended form, shown
above) or a module (imported for the registrations it performs). A plugin that raises while
loading is rolled back (none of its registrations stay), reported with a ``RuntimeWarning``
naming it, and the rest of hourglass keeps working; ``HOURGLASS_STRICT_PLUGINS=1`` (or
``hourglass --strict-plugins``) turns that into an error, and ``HOURGLASS_DISABLE_PLUGINS=a,b``
skips plugins by entry-point or distribution name.

Why a ``register()`` callable rather than decorators that run at import: hourglass records which
distribution provided each component (``hourglass list``, ``hourglass plugins``) while it runs the
entry point. Registrations made by a plain ``import`` of the plugin package before the registries
were first used would be attributed to ``hourglass`` instead. :func:`register` is idempotent, so
an entry point that runs twice (``load_plugins(force=True)``) is harmless.

This module re-exports, unchanged, the pieces of hourglass that plugin code builds on:

* specs: :class:`Spec` (frozen, ``extra="forbid"``), :func:`Component` (a registry-typed field),
  pydantic's ``Field``;
* registries: one :class:`Registry` per family (``ATTENTION``, ``FFN``, ``SAMPLER``, ...),
  :data:`REGISTRIES` by family name, :func:`register`, :func:`get_registry`;
* base classes: :class:`SelfAttention` / :class:`AttentionSpec` (an attention kind only writes
  ``attend(q, k, v, scale)`` and ``attention_macs(batch, h, w)``), :class:`Sampler` /
  :class:`SamplerSpec` (a sampler writes ``_sample(run, x, sigmas)`` against :class:`SamplerRun`);
* attention kernels: :func:`neighborhood_attention`, :func:`shifted_window_attention`,
  :func:`global_attention` (each dispatches to the runtime backend: pure PyTorch, NATTEN, flex, ...);
* :func:`check_component`: hourglass's own component contract (the checks its parametrised
  ``tests/test_components.py`` runs on every built-in), runnable from a plugin's test suite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, ValidationError
from torch import Tensor, nn

from hourglass.backends import BACKENDS, global_attention, neighborhood_attention, shifted_window_attention
from hourglass.diffusion._sampler_base import Sampler, SamplerSpec
from hourglass.diffusion._sampler_base import _Run as SamplerRun
from hourglass.diffusion.noise import NoiseSampler
from hourglass.diffusion.samplers import get_ancestral_step
from hourglass.nn._init import zero_init
from hourglass.nn.attention import AttentionSpec, SelfAttention, scale_for_cosine_sim
from hourglass.nn.pos_emb import make_axial_pos
from hourglass.registry import (
    ATTENTION,
    DATASET,
    DENOISER,
    FFN,
    MAPPING,
    MERGE,
    MODEL,
    NORM,
    PLUGIN_GROUP,
    POS_EMB,
    REGISTRIES,
    SAMPLER,
    SCHEDULE,
    SIGMA_DENSITY,
    SKIP,
    WEIGHTING,
    PluginError,
    PluginStatus,
    Registry,
    RegistryError,
    load_plugins,
    plugin_statuses,
)
from hourglass.spec import Component, Problem, Spec

__all__ = [
    # specs
    "Spec",
    "Component",
    "Field",
    "Problem",
    # registries
    "Registry",
    "RegistryError",
    "PluginError",
    "PluginStatus",
    "PLUGIN_GROUP",
    "REGISTRIES",
    "ATTENTION",
    "POS_EMB",
    "FFN",
    "NORM",
    "MERGE",
    "SKIP",
    "MAPPING",
    "MODEL",
    "DENOISER",
    "WEIGHTING",
    "SIGMA_DENSITY",
    "SAMPLER",
    "SCHEDULE",
    "DATASET",
    "get_registry",
    "register",
    "load_plugins",
    "plugin_statuses",
    # base classes and helpers
    "AttentionSpec",
    "SelfAttention",
    "scale_for_cosine_sim",
    "zero_init",
    "Sampler",
    "SamplerSpec",
    "SamplerRun",
    "get_ancestral_step",
    "NoiseSampler",
    # attention kernels
    "BACKENDS",
    "neighborhood_attention",
    "shifted_window_attention",
    "global_attention",
    # the component contract
    "ComponentCheckError",
    "check_component",
    "CHECKED_FAMILIES",
]


def get_registry(family: str | Registry) -> Registry:
    """The registry of ``family`` (``"attention"``, ``"ffn"``, ``"sampler"``, ...).

    Args:
        family: a family name (a key of :data:`REGISTRIES`) or a :class:`Registry` (returned as is).

    Raises:
        RegistryError: an unknown family; the message lists the known ones.
    """
    if isinstance(family, Registry):
        return family
    try:
        return REGISTRIES[family]
    except (KeyError, TypeError):
        raise RegistryError(
            f"unknown component family {family!r}; known families: {', '.join(REGISTRIES)}"
        ) from None


def register(family: str | Registry, name: str, obj: Any = None, *, override: bool = False) -> Any:
    """Register ``obj`` as component ``name`` of ``family``; without ``obj``, a class decorator.

    Call it from your plugin's entry-point callable so hourglass records your distribution as the
    provider (see the module docstring). The class must carry a pydantic ``Spec`` whose ``type``
    field is ``Literal[name]`` with that default.

    Registering the very same object again under the same name is allowed (it refreshes the
    provider record), so an entry point may run more than once. A *different* object under a
    taken name raises unless ``override=True``.

    Args:
        family: family name (``"attention"``) or its :class:`Registry` (``ATTENTION``).
        name: the registry key recipes use, snake_case (``"dinat"``).
        obj: the component class; omit it to use ``register(...)`` as a decorator.
        override: replace an existing, different component of that name.

    Returns:
        ``obj`` (or, without ``obj``, a decorator returning its argument).

    Raises:
        RegistryError: unknown family, a taken name, or a spec whose ``type`` does not match.
    """
    registry = get_registry(family)

    def add(component: Any) -> Any:
        same = name in registry and registry.get(name) is component
        registry.add(name, component, override=override or same)
        return component

    return add if obj is None else add(obj)


# -- the component contract --------------------------------------------------------------------
class ComponentCheckError(AssertionError):
    """A component broke hourglass's component contract; the message says which check and why.

    Subclasses ``AssertionError`` so pytest reports it as a test failure with its message.
    """


_B, _COND = 2, 16
_MU, _S0 = 0.3, 0.4  # the Gaussian toy of the sampler check: data ~ N(_MU, _S0^2) per pixel


def _attention_case(registry: Registry, spec: Spec, grid: tuple[int, int], width: int, layer_index: int = 1):
    h, w = grid
    x = torch.randn(_B, h, w, width)
    context = {"width": width, "pos_emb": {"type": "axial_rope"}, "layer_index": layer_index}
    return context, (x, make_axial_pos(h, w)), tuple(x.shape)


def _pos_emb_case(registry: Registry, spec: Spec, grid: tuple[int, int], width: int):
    h, w = grid
    context = {"width": width, "d_head": 64, "n_heads": 2, "grid_size": (h, w)}
    if registry.get(spec.type).encoding == "relative":
        return context, (make_axial_pos(h, w),), (h, w, 2, 64 // 4)
    x = torch.randn(_B, h, w, width)
    return context, (x,), tuple(x.shape)


def _ffn_case(registry: Registry, spec: Spec, grid: tuple[int, int], width: int):
    x = torch.randn(_B, *grid, width)
    return {"width": width, "d_ff": 3 * width, "dropout": 0.0}, (x,), tuple(x.shape)


def _norm_case(registry: Registry, spec: Spec, grid: tuple[int, int], width: int):
    x = torch.randn(_B, *grid, width)
    return {"width": width, "cond_dim": _COND}, (x, torch.randn(_B, _COND)), tuple(x.shape)


def _merge_case(registry: Registry, spec: Spec, grid: tuple[int, int], width: int):
    h, w = grid
    x = torch.randn(_B, h, w, width)
    return {"in_width": width, "out_width": 2 * width}, (x,), (_B, h // 2, w // 2, 2 * width)


def _split_case(registry: Registry, spec: Spec, grid: tuple[int, int], width: int):
    h, w = grid
    x, skip = torch.randn(_B, h // 2, w // 2, 2 * width), torch.randn(_B, h, w, width)
    return {"in_width": 2 * width, "out_width": width}, (x, skip), tuple(skip.shape)


def _mapping_case(registry: Registry, spec: Spec, grid: tuple[int, int], width: int):
    sigma = torch.rand(_B) + 0.1
    args = (sigma, torch.tensor([0, 3]), torch.randn(_B, 9), torch.randn(_B, 5))
    return {"num_classes": 4, "mapping_cond_dim": 5}, args, (_B, spec.width)


_MODULE_CASES: dict[str, Callable[..., tuple[dict, tuple, tuple]]] = {
    "attention": _attention_case,
    "pos_emb": _pos_emb_case,
    "ffn": _ffn_case,
    "norm": _norm_case,
    "merge": _merge_case,
    "skip": _split_case,
    "mapping": _mapping_case,
}

#: families whose components :func:`check_component` also runs (the others get the spec checks).
CHECKED_FAMILIES: tuple[str, ...] = (*_MODULE_CASES, "sampler")


def _fail(family: str, name: str, check: str, why: str) -> ComponentCheckError:
    return ComponentCheckError(f"{family} {name!r} fails the {check!r} check: {why}")


def _output(result: Any) -> Tensor:
    return result[0] if isinstance(result, tuple) else result


def _check_spec(registry: Registry, name: str) -> None:
    fam = registry.family
    obj = registry.get(name)
    doc = (obj.__doc__ or "").strip()
    if not doc:
        raise _fail(fam, name, "spec", "the component class has no docstring; `hourglass show` prints its first paragraph")
    spec = registry.validate(name)
    if spec.type != name:
        raise _fail(fam, name, "spec", f"its default spec has type {spec.type!r}")
    if not spec.model_config.get("frozen"):
        raise _fail(fam, name, "spec", "its Spec is not frozen; derive it from hourglass.plugin.Spec")
    if registry.validate(spec.model_dump()) != spec:
        raise _fail(fam, name, "spec", "model_dump() does not validate back to an equal spec")
    if type(spec).model_validate_json(spec.model_dump_json()) != spec:
        raise _fail(fam, name, "spec", "the JSON round trip (how checkpoints store specs) changes the spec")
    try:
        registry.validate({"type": name, "no_such_option__": 1})
    except ValidationError:
        pass
    else:
        raise _fail(fam, name, "spec", "an unknown option was accepted; its Spec must forbid extra keys")
    registry.describe(name)


def _unzero(module: nn.Module, std: float = 0.2) -> None:
    """Fill all-zero (zero-initialised) parameters with noise so gradients reach every layer."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.randn_like(p) * std)


def _check_module(registry: Registry, spec: Spec, grid: tuple[int, int], width: int, context: dict[str, Any],
                  seed: int) -> list[str]:
    fam, name = registry.family, spec.type
    case = _MODULE_CASES[fam]
    done: list[str] = []

    def build(seed_: int, **extra: Any) -> tuple[nn.Module, tuple, tuple]:
        torch.manual_seed(seed_)
        ctx, args, shape = case(registry, spec, grid, width, **extra)
        ctx = {**ctx, **context}
        try:
            module = registry.build(spec, **ctx)
        except Exception as exc:
            raise _fail(fam, name, "forward", f"building it from spec {spec!r} with context {ctx} raised "
                        f"{type(exc).__name__}: {exc}") from exc
        return module, args, shape

    variants = [{"layer_index": 0}, {"layer_index": 1}] if fam == "attention" else [{}]
    for extra in variants:
        module, args, shape = build(seed, **extra)
        out = _output(module(*args))
        where = f" (layer_index {extra['layer_index']})" if extra else ""
        if not isinstance(out, Tensor):
            raise _fail(fam, name, "forward", f"returned {type(out).__name__}, not a tensor{where}")
        if tuple(out.shape) != shape:
            raise _fail(fam, name, "forward", f"output shape {tuple(out.shape)}, expected {shape}{where}")
        if out.dtype != torch.float32:
            raise _fail(fam, name, "forward", f"float32 inputs gave a {out.dtype} output{where}")
        if not bool(torch.isfinite(out).all()):
            raise _fail(fam, name, "forward", f"the output has NaN or inf entries{where}")
        macs = getattr(module, "attention_macs", None)
        if callable(macs):
            value = macs(_B, *grid)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _fail(fam, name, "forward", f"attention_macs({_B}, {grid[0]}, {grid[1]}) returned {value!r}, "
                            "expected a non-negative int")
    done.append("forward")

    module, args, _ = build(seed)
    if any(True for _ in module.parameters()):
        _unzero(module)
        args = tuple(a.detach().requires_grad_() if a.is_floating_point() else a for a in args)
        (_output(module(*args)).float() ** 2).mean().backward()
        for pname, p in module.named_parameters():
            if p.grad is None:
                raise _fail(fam, name, "gradients", f"parameter {pname} got no gradient (unused in forward?)")
            if not bool(torch.isfinite(p.grad).all()):
                raise _fail(fam, name, "gradients", f"parameter {pname} has a non-finite gradient")
            if not bool(p.grad.abs().sum() > 0):
                raise _fail(fam, name, "gradients", f"parameter {pname} got an all-zero gradient")
        done.append("gradients")

    module, args, _ = build(seed + 1)
    _unzero(module)
    clone, _, _ = build(seed + 2)
    clone.load_state_dict(module.state_dict())
    module.eval(), clone.eval()
    with torch.no_grad():
        first, again, cloned = _output(module(*args)), _output(module(*args)), _output(clone(*args))
    if not torch.equal(first, again):
        raise _fail(fam, name, "state_dict", "two eval-mode forward passes on the same input differ")
    if not torch.equal(first, cloned):
        diff = (first - cloned).abs().max().item()
        raise _fail(fam, name, "state_dict", f"a copy loaded from its state_dict computes something else "
                    f"(max difference {diff:.3g}): some state is not in the state_dict")
    done.append("state_dict")

    ctx = {**case(registry, spec, grid, width)[0], **context}
    with torch.device("meta"):
        meta = registry.build(spec, **ctx)
    n_meta = sum(p.numel() for p in meta.parameters())
    n_real = sum(p.numel() for p in module.parameters())
    if n_meta != n_real:
        raise _fail(fam, name, "meta", f"built on the meta device it has {n_meta} parameters, on CPU {n_real}; "
                    "`hourglass build` counts on the meta device")
    done.append("meta")
    return done


class _GaussianToy:
    """The exact denoiser of data ~ N(_MU, _S0^2): ``D(x; sigma) = (S0^2 x + sigma^2 MU) / (S0^2 + sigma^2)``."""

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        s = sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return (_S0**2 * x + s**2 * _MU) / (_S0**2 + s**2)


def _check_sampler(registry: Registry, spec: Spec, steps: int, context: dict[str, Any]) -> list[str]:
    fam, name = registry.family, spec.type
    sampler = registry.build(spec, **context)
    sigmas = SCHEDULE.build({"type": "karras", "sigma_min": 0.01, "sigma_max": 20.0})(steps)
    seeds = list(range(250))
    x = torch.randn(250, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])
    seen: list[int] = []
    noise_calls: list[int] = []
    source = NoiseSampler(seeds)

    def noise(like: Tensor) -> Tensor:
        noise_calls.append(1)
        return source(like)

    out = sampler(_GaussianToy(), x, sigmas, noise=noise, callback=lambda info: seen.append(info["i"]))
    if not isinstance(out, Tensor) or out.shape != x.shape or out.dtype != x.dtype:
        raise _fail(fam, name, "sampler", f"returned {getattr(out, 'shape', type(out).__name__)}, expected a "
                    f"{x.dtype} tensor of shape {tuple(x.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise _fail(fam, name, "sampler", "the samples have NaN or inf entries")
    if sorted(set(seen)) != list(range(steps)) or seen != sorted(seen):
        raise _fail(fam, name, "sampler", f"the callback saw steps {seen}; expected every step 0..{steps - 1} in "
                    "order (call run.report once per step)")
    stochastic = bool(getattr(sampler, "stochastic", False))
    if not stochastic and noise_calls:
        raise _fail(fam, name, "sampler", "its `stochastic` property is False but it drew noise")
    mean, std = out.mean().item(), out.std().item()
    if not (math.isclose(mean, _MU, abs_tol=0.05) and math.isclose(std, _S0, abs_tol=0.05)):
        raise _fail(fam, name, "sampler", f"{steps} steps on data N({_MU}, {_S0}^2) with the exact denoiser gave "
                    f"samples of mean {mean:.3f} and std {std:.3f}")
    again = sampler(_GaussianToy(), x, sigmas, noise=NoiseSampler(seeds))
    if not torch.equal(out, again):
        raise _fail(fam, name, "sampler", "the same start and noise seeds gave different samples")
    return ["sampler"]


def check_component(
    family: str | Registry,
    name: str,
    *,
    options: dict[str, Any] | None = None,
    grid: tuple[int, int] = (8, 8),
    width: int = 128,
    context: dict[str, Any] | None = None,
    sampler_steps: int = 50,
    seed: int = 0,
) -> list[str]:
    """Run hourglass's component contract on the registered component ``name`` of ``family``.

    These are the checks hourglass's own parametrised component tests apply to every built-in
    (so a plugin component that passes here passes there too, once installed):

    * ``spec``: the class has a docstring; the default spec has ``type == name``, is frozen,
      survives ``model_dump`` and JSON round trips, refuses unknown options; ``describe`` works.
    * ``forward`` (module families): builds from its default spec with the context a parent
      passes, the output has the expected shape, float32 dtype and finite values
      (attention: at ``layer_index`` 0 and 1, and ``attention_macs`` is a non-negative int).
    * ``gradients``: with zero-initialised weights filled with noise, every parameter gets a
      finite, non-zero gradient.
    * ``state_dict``: eval-mode forward is deterministic and a copy loaded from the
      ``state_dict`` computes exactly the same output.
    * ``meta``: it builds on the meta device with the same parameter count.
    * ``sampler`` (samplers): ``sampler_steps`` Karras steps on a Gaussian toy with its exact
      denoiser: shape/dtype kept, one callback per step, no noise drawn unless ``stochastic``,
      sample mean and std within 0.05 of the data's, reproducible under the same noise seeds.

    Inputs (``B = 2``): attention, pos_emb, ffn, norm: ``x (B, *grid, width)`` (norm also
    ``cond (B, 16)``); merge: ``(B, *grid, width) -> (B, h/2, w/2, 2 width)``; split:
    ``(B, h/2, w/2, 2 width), skip (B, *grid, width) -> skip's shape``; mapping:
    ``sigma (B,), class (B,), aug (B, 9), mapping_cond (B, 5) -> (B, spec.width)``.

    Args:
        family: family name or registry.
        name: the registered name.
        options: spec fields to check instead of the defaults, e.g. ``{"dilations": [1, 3]}``
            (the ``spec`` check always covers the default spec too).
        grid: token grid ``(h, w)`` of the module checks (use a larger one if your default spec
            needs it, e.g. a window that must fit).
        width: channels of the module checks (divisible by the default ``d_head`` for attention).
        context: extra build context merged over the default one.
        sampler_steps: steps of the sampler check (raise it for a first-order stochastic sampler).
        seed: base seed of the random inputs and initialisations.

    Returns:
        The names of the checks that ran (all passed).

    Raises:
        ComponentCheckError: the first failed check, with the reason.
        RegistryError: ``name`` is not registered in ``family``.
        pydantic.ValidationError: ``options`` do not validate against the component's spec.
        ValueError: a ``grid`` that is not two even sides.
    """
    registry = get_registry(family)
    registry.get(name)
    if len(grid) != 2 or min(grid) < 2 or any(g % 2 for g in grid):
        raise ValueError(f"grid must be two even sides >= 2 (merge halves it), got {grid!r}")
    context = dict(context or {})
    _check_spec(registry, name)
    spec = registry.validate({**(options or {}), "type": name})
    done = ["spec"]
    state = torch.random.get_rng_state()
    try:
        if registry.family in _MODULE_CASES:
            done += _check_module(registry, spec, tuple(grid), width, context, seed)
        elif registry.family == "sampler":
            done += _check_sampler(registry, spec, sampler_steps, context)
    finally:
        torch.random.set_rng_state(state)
    return done
