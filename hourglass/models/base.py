"""The backbone contract: what every model family (HDiT, DiT, U-ViT, a plugin's) implements.

A backbone is ``F(x, sigma, class_cond, aug_cond, mapping_cond) -> (B, C_out, H, W)``, the network
inside a denoiser's preconditioning. The trainer, the CLI (``hourglass build``, ``flops``),
interop and the docs use only what this module declares:

* :class:`BackboneSpec`: the spec's shared fields (``in_channels``, ``out_channels``,
  ``num_classes``, ``mapping_cond_dim``, ``input_size``, ``patch_size``; checked when the family is
  registered), its ``stride``, whether it ``embeds_aug``, and its :meth:`~BackboneSpec.attention_sites`,
  from which :meth:`~BackboneSpec.shape_problems` asks each attention kind whether it fits.
* :class:`Backbone`: ``forward``, ``param_groups``, ``set_gradient_checkpointing``, ``stages``
  (the per-stage anatomy ``hourglass build`` prints), ``save_pretrained`` / ``from_pretrained``
  (pretrained folders, :mod:`hourglass.hub`) and a tiny ``test_preset`` for the component contract.

**Time input.** A backbone's second argument is a noise level ``sigma > 0`` unless its spec says
otherwise: a spec field ``time_input = "timestep"`` (U-ViT), or its ``mapping``'s (DiT's embedder),
makes it a DDPM timestep ``t >= 0`` (what official DiT/U-ViT checkpoints were trained on).
:func:`time_input_of` reads it; the input check, the denoisers and the recipe's cross-checks ask it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hourglass.debug import should_check_values
from hourglass.nn._groups import param_groups
from hourglass.registry import ATTENTION, MODEL, Contract
from hourglass.spec import Problem, Spec, as_pair

__all__ = ["AttentionSite", "Stage", "BackboneSpec", "Backbone", "REQUIRED_SPEC_FIELDS", "time_input_of"]

#: fields every backbone spec has (with these meanings), checked when a model family registers
REQUIRED_SPEC_FIELDS = ("in_channels", "out_channels", "num_classes", "mapping_cond_dim", "input_size", "patch_size")


def time_input_of(obj: Any) -> str:
    """What a backbone's second argument is: ``"log_sigma"`` (a noise level) or ``"timestep"``.

    Args:
        obj: a backbone spec, a backbone, or a wrapper of one (DDP's ``module``, ``torch.compile``'s
            ``_orig_mod``); anything else (a plain callable) counts as ``"log_sigma"``.
    Returns:
        The spec's ``time_input`` field, else its ``mapping``'s, else ``"log_sigma"``.
    """
    for _ in range(4):  # unwrap DDP / compile wrappers (modules without a spec of their own)
        if not isinstance(obj, nn.Module) or hasattr(obj, "spec"):
            break
        inner = getattr(obj, "_orig_mod", None) or getattr(obj, "module", None)
        if inner is None:
            break
        obj = inner
    spec = getattr(obj, "spec", obj)
    value = getattr(spec, "time_input", None)
    if not isinstance(value, str):
        value = getattr(getattr(spec, "mapping", None), "time_input", None)
    return value if isinstance(value, str) else "log_sigma"


@dataclass(frozen=True)
class AttentionSite:
    """Where an attention spec of a backbone runs, as its kind's grid rule needs to know.

    Attributes:
        path: spec path of the attention spec, e.g. ``"levels[0].attention"``.
        spec: the attention spec.
        width: channels of the tokens it mixes.
        width_path: spec path of that width, e.g. ``"levels[0].width"``.
        grid: token grid ``(h, w)`` at the spec's ``input_size``, as the kind sees it.
        layers: indices of the layers that use it, consecutive (decoder layers continue the encoder's
            count); a ``range``, never materialised, so a rule must not iterate it whole.
    """

    path: str
    spec: Any
    width: int
    width_path: str
    grid: tuple[int, int]
    layers: range


@dataclass(frozen=True)
class Stage:
    """One row of ``hourglass build``'s table: a run of transformer layers at one token grid.

    Attributes:
        name: e.g. ``"0"`` (an HDiT level) or ``"layers"``.
        prefixes: module-name prefixes (with a trailing dot) of the stage's parameters.
        grid: token grid ``(h, w)`` at the spec's ``input_size``.
        extra_tokens: tokens besides the grid (U-ViT's condition tokens).
        layers: transformer layers in the stage.
        width: token channels.
        d_ff: FFN hidden size.
        attention: the attention spec of its layers.
        dropout: dropout rate of its layers.
    """

    name: str
    prefixes: tuple[str, ...]
    grid: tuple[int, int]
    extra_tokens: int
    layers: int
    width: int
    d_ff: int | None
    attention: Any
    dropout: float = 0.0


class BackboneSpec(Spec):
    """Base of backbone specs. Subclasses declare the fields of :data:`REQUIRED_SPEC_FIELDS`."""

    @property
    def resolved_out_channels(self) -> int:
        """Output channels after defaults (``in_channels`` unless set)."""
        return self.out_channels or self.in_channels  # type: ignore[attr-defined]

    @property
    def stride(self) -> tuple[int, int]:
        """Pixels per token side at the coarsest grid: image sides must be multiples of it."""
        raise NotImplementedError

    @property
    def token_grid(self) -> tuple[int, int]:
        """Token grid ``(h, w)`` right after patching, at ``input_size``."""
        (h, w), (ph, pw) = as_pair(self.input_size), as_pair(self.patch_size)  # type: ignore[attr-defined]
        return h // ph, w // pw

    @property
    def embeds_aug(self) -> bool:
        """Whether the model embeds ``aug_cond`` (else training with augmentation would leak it)."""
        raise NotImplementedError

    def attention_sites(self) -> list[AttentionSite]:
        """Every attention spec of the model with its grid, width and layers."""
        raise NotImplementedError

    def shape_problems(self) -> list[Problem]:
        """Image size vs stride, then every attention kind's grid and width rules (paths relative to the spec)."""
        (h, w), (ph, pw) = as_pair(self.input_size), as_pair(self.patch_size)  # type: ignore[attr-defined]
        if min(h, w) < 1 or min(ph, pw) < 1:
            return [Problem("input_size", f"input_size {h}x{w} and patch_size {ph}x{pw} must be positive",
                            "use e.g. input_size = 256, patch_size = 4")]
        sh, sw = self.stride
        if h % sh or w % sw:
            return [Problem(
                "input_size", f"{h}x{w} is not divisible by the model's stride {sh}x{sw} (pixels per token at its "
                "coarsest grid: patch_size, times 2 per merge)",
                f"use a multiple of {sh}x{sw} (e.g. {max(sh, h // sh * sh)}x{max(sw, w // sw * sw)}), "
                "a smaller patch_size or fewer levels",
            )]
        problems = []
        for site in self.attention_sites():
            kind = ATTENTION.get(site.spec.type)
            problems += [p.under(site.path) for p in kind.grid_problems(site.spec, site.grid, site.layers)]
            problems += [p.under(site.width_path) for p in kind.width_problems(site.spec, site.width)]
        return problems


class Backbone(Contract, nn.Module):
    """Contract of the ``model`` family (see the module docstring).

    Subclasses set ``Spec`` (a :class:`BackboneSpec`) and ``test_preset``, keep the spec in
    ``self.spec`` and implement :meth:`compute` (the maths, on validated inputs) and :meth:`stages`;
    :meth:`forward` validates the inputs with :meth:`check_inputs` and calls :meth:`compute`.
    """

    Spec: ClassVar[type[BackboneSpec]]
    #: a tiny registered preset of this family (16-32 px) that the component contract builds
    test_preset: ClassVar[str | None] = None
    spec: BackboneSpec
    gradient_checkpointing: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("Spec")
        if spec is None:
            return
        if not issubclass(spec, BackboneSpec):
            raise TypeError(f"{cls.__name__}.Spec must subclass hourglass.models.base.BackboneSpec")
        missing = [f for f in REQUIRED_SPEC_FIELDS if f not in spec.model_fields]
        if missing:
            raise TypeError(f"{cls.__name__}.Spec lacks the backbone fields {', '.join(missing)}")

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """``{"test_preset": ...}``."""
        return {"test_preset": cls.test_preset}

    def forward(
        self,
        x: Tensor,
        sigma: Tensor | float,
        class_cond: Tensor | None = None,
        aug_cond: Tensor | None = None,
        mapping_cond: Tensor | None = None,
    ) -> Tensor:
        """Backbone output ``F`` (before preconditioning).

        Args:
            x: ``(B, C_in, H, W)``, sides multiples of ``spec.stride``.
            sigma: ``(B,)`` or a scalar noise level (> 0); a DDPM timestep (>= 0) when the spec's time
                input is ``"timestep"`` (see :func:`time_input_of`).
            class_cond: ``(B,)`` int64 in ``[0, num_classes]`` (``num_classes`` = no class).
            aug_cond: ``(B, 9)`` augmentation description.
            mapping_cond: ``(B, mapping_cond_dim)``.

        Returns:
            ``(B, C_out, H, W)``.

        Raises:
            ValueError / TypeError: an input of the wrong shape, dtype or device (see :meth:`check_inputs`).
        """
        sigma = self.check_inputs(x, sigma, class_cond, aug_cond, mapping_cond)
        return self.compute(x, sigma, class_cond, aug_cond, mapping_cond)

    def compute(self, x: Tensor, sigma: Tensor, class_cond: Tensor | None, aug_cond: Tensor | None,
                mapping_cond: Tensor | None) -> Tensor:
        """The backbone's maths on validated inputs: as :meth:`forward`, with ``sigma`` a ``(B,)`` tensor."""
        raise NotImplementedError

    def stages(self) -> list[Stage]:
        """The model's transformer stages, outermost first (for ``hourglass build``)."""
        raise NotImplementedError

    def param_groups(self, lr: float = 5e-4, weight_decay: float = 1e-2, mapping_lr_scale: float = 1 / 3):
        """AdamW groups: decay only Linear weights; modules tagged ``"mapping"`` at ``lr * mapping_lr_scale``.

        Returns:
            Non-empty groups, each with ``params``, ``lr``, ``weight_decay`` and ``name``.
        """
        return param_groups(self, lr, weight_decay, mapping_lr_scale)

    def set_gradient_checkpointing(self, enabled: bool = True) -> Backbone:
        """Recompute each layer in the backward pass instead of storing its activations."""
        self.gradient_checkpointing = enabled
        return self

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        ema: nn.Module | dict[str, Tensor] | None = None,
        weights: str = "raw",
        recipe: Any = None,
        class_names: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        card: str | bool | None = None,
        repo_id: str | None = None,
        overwrite: bool = True,
    ) -> Path:
        """Write this model as a pretrained folder (``config.json``, ``model.safetensors``, ``README.md``, ...).

        :func:`hourglass.from_pretrained` (and :func:`hourglass.load`, ``[train] init_from``) reads it
        back; see :mod:`hourglass.hub` for the layout.

        Args:
            save_directory: the folder (created if missing).
            ema: the EMA copy of this model (a module or its state dict) for ``ema.safetensors``.
            weights: what this model's weights are: ``"raw"`` (trained), ``"ema"`` (an EMA copy itself)
                or ``"unknown"``.
            recipe: the recipe it was trained with (a Recipe, TOML text or a path), for ``recipe.toml``.
            class_names: one name per class id (``classes.json``).
            metadata: JSON-able facts for ``config.json`` and the model card (``{"step": 1000}``).
            card: None: a generated ``README.md``; Markdown text to add to it; False: none.
            repo_id: the Hub id the folder is meant for (used by the card's examples).
            overwrite: replace the files of an earlier save (default), or refuse to.

        Returns:
            The folder.
        """
        from hourglass.hub import save_pretrained_folder

        return save_pretrained_folder(save_directory, model=self, ema=ema, weights=weights, recipe=recipe,
                                      class_names=class_names, metadata=metadata, card=card, repo_id=repo_id,
                                      overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **kwargs: Any) -> Backbone:
        """:func:`hourglass.from_pretrained`, checking that the model is of this class.

        Raises:
            TypeError: the source holds another model family.
        """
        from hourglass.hub import from_pretrained

        model = from_pretrained(source, **kwargs)
        if not isinstance(model, cls):
            raise TypeError(f"{source} holds a {type(model).__name__}, not a {cls.__name__}; "
                            "use hourglass.from_pretrained to load any model")
        return model

    def run_layer(self, layer: Callable[..., Tensor], *args: Any) -> Tensor:
        """``layer(*args)``, recomputed in the backward pass when gradient checkpointing is on."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def check_inputs(
        self,
        x: Tensor,
        sigma: Tensor | float,
        class_cond: Tensor | None,
        aug_cond: Tensor | None,
        mapping_cond: Tensor | None,
    ) -> Tensor:
        """Validate a call and return ``sigma`` as a ``(B,)`` tensor on ``x``'s device.

        Shapes, dtypes and devices are always checked; values (``sigma > 0``, or ``t >= 0`` for a
        timestep input; class ids in range) only where :func:`hourglass.debug.should_check_values`
        allows, so a forward never syncs.

        Raises:
            ValueError / TypeError: naming the argument, what was given and what is expected.
        """
        spec: Any = self.spec
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        b, c, h, w = x.shape
        if c != spec.in_channels:
            raise ValueError(f"x has {c} channels but the model takes in_channels={spec.in_channels}")
        sh, sw = spec.stride
        if h % sh or w % sw:
            raise ValueError(
                f"x is {h}x{w} but this model needs sizes divisible by {sh}x{sw} (its stride); resize or pad the image"
            )
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(b)
        if sigma.shape != (b,):
            raise ValueError(f"sigma must be a scalar or have shape ({b},), got {tuple(sigma.shape)}")
        if not sigma.is_floating_point():
            sigma = sigma.float()
        if should_check_values(sigma):
            if time_input_of(spec) == "timestep":
                if not bool(torch.all(torch.isfinite(sigma) & (sigma >= 0))):
                    raise ValueError(f"this model takes DDPM timesteps (time_input = 'timestep'): they must be finite "
                                     f"and >= 0, got {sigma.tolist()}")
            elif not bool(torch.all(torch.isfinite(sigma) & (sigma > 0))):
                raise ValueError(f"sigma must be finite and > 0, got {sigma.tolist()}")
        if spec.num_classes:
            if class_cond is None:
                raise ValueError(
                    f"this model is class-conditional ({spec.num_classes} classes): pass class_cond (B,) "
                    f"with ids in [0, {spec.num_classes}] ({spec.num_classes} = no class)"
                )
            if class_cond.shape != (b,) or class_cond.dtype not in (torch.int64, torch.int32):
                raise ValueError(
                    f"class_cond must be an int64 tensor of shape ({b},), got {class_cond.dtype} "
                    f"{tuple(class_cond.shape)}"
                )
            if should_check_values(class_cond) and not bool(
                ((class_cond >= 0) & (class_cond <= spec.num_classes)).all()
            ):
                raise ValueError(
                    f"class_cond ids must be in [0, {spec.num_classes}] ({spec.num_classes} = no class), "
                    f"got {class_cond.tolist()}"
                )
        elif class_cond is not None:
            raise ValueError("class_cond was given but the model is unconditional (num_classes = 0)")
        if aug_cond is not None and tuple(aug_cond.shape) != (b, 9):
            raise ValueError(f"aug_cond must have shape ({b}, 9), got {tuple(aug_cond.shape)}")
        dim = spec.mapping_cond_dim
        if dim and (mapping_cond is None or tuple(mapping_cond.shape) != (b, dim)):
            got = None if mapping_cond is None else tuple(mapping_cond.shape)
            raise ValueError(f"mapping_cond must have shape ({b}, {dim}), got {got}")
        if not dim and mapping_cond is not None:
            raise ValueError("mapping_cond was given but the model has mapping_cond_dim = 0")
        return sigma


MODEL.set_contract(Backbone)
