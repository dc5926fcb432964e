"""hourglass's component contract: the checks every registered component passes, runnable by anyone.

:func:`check_component` is the one contract: hourglass's own ``tests/test_components.py`` runs it
over every registered component of every family (plugins included), and a plugin's test suite
calls it on its own components::

    from hourglass.testing import check_component

    def test_passes_hourglass_component_checks():
        assert check_component("ffn", "my_ffn_mlp") == ["spec", "forward", "gradients", "state_dict", "meta"]

It is also re-exported by :mod:`hourglass.plugin`. A failed check raises :class:`ComponentCheckError`
(an ``AssertionError``) whose message names the family, the component, the check and why.
"""

from __future__ import annotations

from typing import Any

import torch

from hourglass.registry import REGISTRIES, Registry, RegistryError
from hourglass.testing._common import ComponentCheckError, check_describe, check_spec, fail, resolve_specs, unzero_
from hourglass.testing._data import check_dataset
from hourglass.testing._diffusion import (
    check_denoiser,
    check_sampler,
    check_schedule,
    check_sigma_density,
    check_weighting,
)
from hourglass.testing._models import check_model, model_facts, preset_data
from hourglass.testing._modules import MODULE_FAMILIES, run_module_checks
from hourglass.testing._trackers import check_tracker
from hourglass.testing._vae import check_vae

__all__ = ["check_component", "ComponentCheckError", "CHECKED_FAMILIES", "unzero_"]

_OTHER_FAMILIES = {
    "denoiser": check_denoiser,
    "weighting": check_weighting,
    "sigma_density": check_sigma_density,
    "schedule": check_schedule,
    "dataset": check_dataset,
    "vae": check_vae,
    "tracker": check_tracker,
}

#: the families :func:`check_component` checks (every family of :data:`hourglass.registry.REGISTRIES`)
CHECKED_FAMILIES: tuple[str, ...] = (*MODULE_FAMILIES, "model", *_OTHER_FAMILIES, "sampler")


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

    Every family (``B = 2`` throughout):

    * ``spec``: the class subclasses its family's contract and has a docstring; the default spec
      and the one under test have ``type == name``, are frozen, survive ``model_dump`` and JSON
      round trips and refuse unknown options; ``describe`` works. The family's declared facts are
      part of it: an attention kind's ``kernel`` is registered with its reference backend,
      ``mixes_tokens()`` is ``kernel is not None``, ``connects_all_tokens`` only with a kernel,
      ``label`` a non-empty str, ``heads`` ``None`` or a positive int, ``grid_problems`` /
      ``width_problems`` lists of :class:`hourglass.spec.Problem`; a positional encoding's
      ``encoding`` is ``"relative"``, ``"absolute"`` or ``"none"``; a model's ``test_preset`` is a
      registered preset of its family that has no ``shape_problems()``, its ``stride`` divides the
      input and every ``attention_sites()`` spec is an attention kind.

    Module families (``attention``, ``pos_emb``, ``ffn``, ``norm``, ``merge``, ``skip``,
    ``mapping``) and ``model``:

    * ``forward``: builds from the spec with the context a parent passes; output of the expected
      shape, float32 and finite (attention: at ``layer_index`` 0 and 1). Then, with zero-initialised
      weights filled with noise, what the module does matches what its class declares (an output
      entry counts as changed beyond ``1e-5 (1 + max |output|)``): attention mixes tokens exactly
      when it names a kernel, reaches every token if it ``connects_all_tokens``, and
      ``attention_macs`` is a non-negative int (0 without a kernel); a relative encoding maps
      ``pos (h, w, 2)`` to angles ``(h, w, n_heads, d)`` with ``2 d <= d_head``, ``"none"`` is the
      identity; a norm returns ``(y, gate | None)`` and depends on ``cond`` exactly when
      ``conditional``; a mapping returns ``(B, width)``, depends on sigma, class and
      ``mapping_cond``, and on ``aug_cond`` exactly when ``embeds_aug(spec)``; a model refuses an
      input with the wrong channel count.
    * ``gradients``: with zero-initialised weights filled with noise, every parameter gets a finite,
      non-zero gradient (skipped without parameters).
    * ``state_dict``: eval-mode forward is deterministic and a copy loaded from the ``state_dict``
      computes exactly the same output.
    * ``meta``: it builds on the meta device with the same parameter count.

    Inputs: attention, pos_emb (absolute and none), ffn, norm: ``x (B, *grid, width)`` (norm:
    ``cond (B, 16)`` with ``cond_dim = 16`` when conditional, else ``None`` and ``cond_dim = 0``;
    relative pos_emb: ``pos (*grid, 2)``, ``d_head = width / 2``, 2 heads); merge:
    ``(B, *grid, width) -> (B, h/2, w/2, 2 width)``; skip: ``(B, h/2, w/2, 2 width), skip
    (B, *grid, width) -> skip's shape``; mapping: ``sigma (B,), class (B,) of 4, aug (B, 9),
    mapping_cond (B, 5) -> (B, width)``; model: its test preset (``options`` override its fields),
    ``x (B, C_in, H, W), sigma (B,), class_cond, aug_cond (B, 9) zeros, mapping_cond ->
    (B, C_out, H, W)``. A model also gets:

    * ``stages``: ``stages()`` is a non-empty list of ``Stage``; each prefix (with a trailing dot)
      holds parameters, no parameter lies in two stages, none of a claimed module is left out, each
      stage's attention is a registered kind and its prefixes hold ``layers`` modules of that spec
      (none when the kind mixes no tokens).
    * ``param_groups``: non-empty groups with ``params``, ``lr``, ``weight_decay`` and ``name`` that
      hold every trainable parameter exactly once; AdamW accepts them.
    * ``checkpointing``: with ``set_gradient_checkpointing(True)`` layers are recomputed in the
      backward pass, and the output and every gradient match those without (within ``1e-5``).

    The other families, one check each:

    * ``denoiser``: built around a bounded toy backbone ``(B, 3, 8, 8)``: ``D(x, sigma, **cond)``
      keeps shape and dtype, passes ``cond`` to the backbone and is finite at sigma 0.02, 1 and 80;
      ``|D(x; 1e-4) - x| <= 1e-3`` (the sigma -> 0 limit); ``loss(x0, noise, sigma, weighting)`` is
      ``(B,)``, finite, non-negative, doubles with the weighting and trains the backbone.
    * ``weighting``: ``w(sigma (13,), sigma_data)`` for sigma in ``[1e-3, 1e3]`` and sigma_data 0.5
      and 1: finite, positive, shape and dtype (float32, float64) of sigma, each sample's weight
      independent of the batch and, when it has ``x0_weight``, equal to
      ``x0_weight * c_out^2`` (relative tolerance ``1e-5``).
    * ``sigma_density``: built with ``sigma_data = 0.5, image_size = (32, 32)`` as the trainer does;
      ``sample(64, generator, device="cpu")`` is float32 ``(64,)``, positive, finite, the same
      under the same seed and different under another; ``sample(1)`` is ``(1,)``; ``dtype`` is honoured.
    * ``schedule``: ``schedule(n)`` for n in 1, 2, 10, 50 is float32 ``(n + 1,)``, finite, strictly
      decreasing, positive but for its final 0, from ``sigma_max`` to ``sigma_min`` (relative
      ``1e-6``) when the spec has them; ``dtype`` is honoured.
    * ``sampler``: ``sampler_steps`` Karras steps (sigma 20 to 0.01) on a Gaussian toy
      ``N(0.3, 0.4^2)`` with its exact denoiser, 250 samples of ``(1, 4, 4)``: shape and dtype kept,
      one callback per step in order, no noise drawn unless ``stochastic``, sample mean and std
      within 0.05 of the data's, reproducible under the same noise seeds.
    * ``dataset``: built at resolution 16, split ``"train"``: ``len > 0``; items 0, ``n // 2`` and
      ``n - 1`` are ``{"image": (channels, 16, 16) float32 in [-1, 1], "class_cond": () int64 in
      [0, num_classes) (0 when unconditional), "aug_cond": (9,) float32}``; ``num_classes`` and
      ``channels`` equal ``classes_of(spec)`` / ``channels_of(spec)`` where those are not ``None``
      (likewise ``mapping_cond_dim`` / ``cond_channels`` and ``mapping_cond_dim_of`` / ``cond_channels_of``;
      items then carry ``"mapping_cond": (D,)`` / ``"cond_image": (C', h, w)`` float32);
      ``class_names`` has ``num_classes`` names; the same ``(index, draw)`` key gives the same item;
      some pixel of those items is below 0 (images left in ``[0, 1]`` are the usual slip).
      Datasets that read files need ``options`` (``imagefolder``: ``{"root": folder}``).
    * ``vae``: built from its spec (``autoencoder_kl`` needs ``options={"path": folder}``, a folder
      written by ``AutoencoderKL.save_pretrained``): frozen (no parameter requires grad; eval mode
      after ``train()``); ``image_channels``, ``latent_channels``, ``downsample_factor`` positive ints
      equal to its ``*_of(spec)`` declarations where those are not ``None``; ``B`` random images of
      ``4 f x 4 f`` in [-1, 1] encode to float32 ``(B, latent_channels, 4, 4)`` and decode back to
      float32 ``(B, image_channels, 4 f, 4 f)`` in [-1, 1], finite, without gradients, the same twice
      (encode: under the same generator seed), another seed changing the latents exactly when it is
      ``stochastic``; a batch equals its items done alone within ``1e-4`` of the output's scale
      (encode only when not ``stochastic``).
    * ``tracker``: ``availability_problems(spec)`` is an empty list (its packages are installed);
      in a temporary run directory holding a small PNG, two sessions as the trainer runs them: a new
      run (``start(run_dir, recipe_data, None)``, ``log`` of steps 1 and 2, step 2 a diverged record
      with a NaN loss and the strings ``event`` and ``message``, ``log_image(2, "samples", png)``,
      ``finish()``) and, on a new instance, a run resumed at step 1 (``log`` of steps 2 and 3,
      ``log_image(3, ...)``, ``finish()``); every call returns ``None`` without raising and ``log``
      leaves its metrics unchanged. A tracker that talks to a service must be pointed at a local one
      (``wandb``: ``WANDB_MODE=offline``; ``mlflow``: ``options={"tracking_uri": "file:/tmp/mlruns"}``
      with ``MLFLOW_ALLOW_FILE_STORE=true``).

    Args:
        family: family name or registry.
        name: the registered name.
        options: spec fields to check instead of the defaults, e.g. ``{"dilations": [1, 3]}``
            (the ``spec`` check covers the default spec too); required fields go here.
        grid: token grid ``(h, w)`` of the module checks (use a larger one if your default spec
            needs it, e.g. a window that must fit); models use their test preset's size instead.
        width: channels of the module checks (divisible by the default ``d_head`` for attention).
        context: extra build context merged over the default one.
        sampler_steps: steps of the sampler check (raise it for a first-order stochastic sampler).
        seed: base seed of the random inputs and initialisations.

    Returns:
        The names of the checks that ran (all passed), e.g. ``["spec", "forward", "gradients",
        "state_dict", "meta"]`` for a module, ``["spec", "sampler"]`` for a sampler.

    Raises:
        ComponentCheckError: the first failed check, with the reason.
        RegistryError: ``name`` is not registered in ``family``, or ``family`` is unknown.
        pydantic.ValidationError: ``options`` do not validate against the component's spec.
        ValueError: a ``grid`` that is not two even sides, required options missing, or an
            attention spec whose ``grid_problems`` / ``width_problems`` refuse ``grid`` / ``width``.
    """
    registry = family if isinstance(family, Registry) else REGISTRIES.get(family)  # type: ignore[arg-type]
    fam = getattr(registry, "family", family)
    if registry is None or fam not in CHECKED_FAMILIES:
        raise RegistryError(f"unknown component family {fam!r}; known families: {', '.join(CHECKED_FAMILIES)}")
    obj = registry.get(name)
    if len(grid) != 2 or min(grid) < 2 or any(g % 2 for g in grid):
        raise ValueError(f"grid must be two even sides >= 2 (merge halves it), got {grid!r}")
    grid = (int(grid[0]), int(grid[1]))
    contract = REGISTRIES[fam].contract
    if contract is not None and not (isinstance(obj, type) and issubclass(obj, contract)):
        raise fail(fam, name, "spec", f"{obj!r} does not subclass {contract.__qualname__}, the {fam} contract")
    context = dict(context or {})
    state = torch.random.get_rng_state()
    try:
        base = preset_data(registry, name) if fam == "model" else {}
        default, spec = resolve_specs(registry, name, base, options)
        check_spec(registry, name, [default] if spec == default else [default, spec])
        module_family = MODULE_FAMILIES.get(fam)
        if module_family is not None and module_family.facts is not None:
            module_family.facts(registry, name, spec, grid, width)
        if fam == "model":
            model_facts(registry, name, spec)
        check_describe(registry, name)
        if module_family is not None:
            return ["spec", *run_module_checks(registry, spec, module_family, grid, width, context, seed)]
        if fam == "model":
            return ["spec", *check_model(registry, spec, context, seed)]
        if fam == "sampler":
            return ["spec", *check_sampler(registry, spec, context, seed, sampler_steps)]
        return ["spec", *_OTHER_FAMILIES[fam](registry, spec, context, seed)]
    finally:
        torch.random.set_rng_state(state)

