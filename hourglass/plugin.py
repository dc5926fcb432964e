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

This module is a facade: it defines only :func:`get_registry` and :func:`register` and re-exports,
unchanged, the pieces of hourglass that plugin code builds on:

* specs: :class:`Spec` (frozen, ``extra="forbid"``), :func:`Component` (a registry-typed field),
  pydantic's ``Field``, :class:`Problem` and :class:`SpecError` (what a spec or an attention kind's
  grid rule reports);
* registries: one :class:`Registry` per family (``ATTENTION``, ``FFN``, ``SAMPLER``, ...),
  :data:`REGISTRIES` by family name, :data:`PRESET` and :func:`register_preset` for model presets;
* each family's contract, the base class its components subclass: :class:`AttentionKind` (or
  :class:`SelfAttention` with :class:`AttentionSpec`: an attention kind then only writes
  ``attend(q, k, v, scale)`` and ``attention_macs(batch, h, w)``), :class:`PositionalEncoding`,
  :class:`NormLayer`, :class:`ConditioningMapping`, :class:`Backbone` with :class:`BackboneSpec`,
  :class:`Stage` and :class:`AttentionSite`, :class:`DatasetComponent` (or :class:`ImageDataset`),
  :class:`Autoencoder` (a VAE for latent diffusion), :class:`Tracker` (an experiment tracker the
  trainer logs to, with :func:`scalars` to keep a record's numbers),
  :class:`Sampler` with :class:`SamplerSpec` (a sampler writes ``solve(run, x, sigmas)`` against
  :class:`SamplerRun`);
* attention kernels and their backends: :func:`register_kernel`, :func:`register_backend`,
  :func:`call_kernel`, :func:`neighborhood_attention`, :func:`shifted_window_attention`,
  :func:`global_attention` (each dispatches to a runtime backend: pure PyTorch, NATTEN, flex, ...);
* the component contract of :mod:`hourglass.testing`: :func:`check_component`,
  :class:`ComponentCheckError`, :data:`CHECKED_FAMILIES` (import them from ``hourglass.testing``
  in new code; they stay here for existing plugin tests).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hourglass.backends import (
    BACKEND,
    BACKENDS,
    KERNEL,
    call_kernel,
    global_attention,
    neighborhood_attention,
    register_backend,
    register_kernel,
    shifted_window_attention,
)
from hourglass.data._base import DatasetComponent, ImageDataset
from hourglass.diffusion._sampler_base import Sampler, SamplerRun, SamplerSpec
from hourglass.diffusion.denoiser import Denoiser
from hourglass.diffusion.noise import NoiseSampler
from hourglass.diffusion.samplers import get_ancestral_step
from hourglass.diffusion.schedules import Schedule, ScheduleSpec
from hourglass.diffusion.sigma_density import SigmaDensity
from hourglass.diffusion.weighting import Weighting
from hourglass.models.base import AttentionSite, Backbone, BackboneSpec, Stage
from hourglass.models.factory import register_preset
from hourglass.nn._init import zero_init
from hourglass.nn.attention import AttentionKind, AttentionSpec, SelfAttention, scale_for_cosine_sim
from hourglass.nn.mapping import ConditioningMapping
from hourglass.nn.norm import NormLayer
from hourglass.nn.pos_emb import PositionalEncoding
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
    PRESET,
    REGISTRIES,
    SAMPLER,
    SCHEDULE,
    SIGMA_DENSITY,
    SKIP,
    TRACKER,
    VAE,
    WEIGHTING,
    Contract,
    PluginError,
    PluginStatus,
    Registry,
    RegistryError,
    load_plugins,
    plugin_statuses,
)
from hourglass.spec import Component, Problem, Spec, SpecError
from hourglass.testing import CHECKED_FAMILIES, ComponentCheckError, check_component
from hourglass.trackers import Tracker, scalars
from hourglass.vae import Autoencoder

__all__ = [
    # specs
    "Spec", "Component", "Field", "Problem", "SpecError",
    # registries and registration
    "Registry", "RegistryError", "PluginError", "PluginStatus", "PLUGIN_GROUP", "REGISTRIES", "PRESET",
    "ATTENTION", "POS_EMB", "FFN", "NORM", "MERGE", "SKIP", "MAPPING", "MODEL",
    "DENOISER", "WEIGHTING", "SIGMA_DENSITY", "SAMPLER", "SCHEDULE", "DATASET", "VAE", "TRACKER",
    "get_registry", "register", "register_preset", "load_plugins", "plugin_statuses",
    # contracts, base classes and helpers
    "Contract", "AttentionKind", "AttentionSpec", "SelfAttention", "scale_for_cosine_sim", "zero_init",
    "PositionalEncoding", "NormLayer", "ConditioningMapping",
    "Backbone", "BackboneSpec", "Stage", "AttentionSite", "DatasetComponent", "ImageDataset", "Autoencoder",
    "Tracker", "scalars",
    "Sampler", "SamplerSpec", "SamplerRun", "get_ancestral_step", "NoiseSampler",
    "Denoiser", "Weighting", "SigmaDensity", "Schedule", "ScheduleSpec",
    # attention kernels and their backends
    "KERNEL", "BACKEND", "BACKENDS", "register_kernel", "register_backend", "call_kernel",
    "neighborhood_attention", "shifted_window_attention", "global_attention",
    # the component contract (hourglass.testing)
    "check_component", "ComponentCheckError", "CHECKED_FAMILIES",
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
    field is ``Literal[name]`` with that default, and subclass the family's contract class where
    the family has one (e.g. :class:`AttentionKind`).

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
        RegistryError: unknown family, a taken name, a spec whose ``type`` does not match, or a
            class that does not subclass the family's contract.
    """
    decorator = get_registry(family).register(name, override=override)
    return decorator if obj is None else decorator(obj)
