"""The attention-kind contract: what every attention kind declares about itself.

An attention *kind* is a registered attention component (``global``, ``neighborhood``,
``shifted_window``, ``none``, or a plugin's): it fixes the maths and lives in the recipe. The rest
of hourglass never matches kind names; it asks the kind's class:

* :attr:`AttentionKind.kernel`: the kernel that computes it (:mod:`hourglass.backends`), hence which
  backends can run it and what ``[runtime.backends]`` key pins them (``None``: no token mixing).
* :attr:`AttentionKind.connects_all_tokens`: whether one layer lets every token see every other
  (U-ViT needs this: its condition tokens must reach every patch token).
* :meth:`AttentionKind.grid_problems`: which token grids, kernels and windows fit, as structured
  problems at validation time (before any forward).
* :meth:`AttentionKind.width_problems`: which widths the kind can split into heads.
* :meth:`AttentionKind.label`: the short text ``hourglass build`` and the docs show.
* ``attention_macs(batch, h, w)`` (on instances): multiply-accumulates of its token mixing, which
  ``hourglass flops`` adds up.

Instances are ``nn.Module`` s called as ``forward(x (B, H, W, C), pos (H, W, 2)) -> (B, H, W, C)``
with a runtime ``backend`` attribute (``None`` = resolve at run time) that never enters the
``state_dict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from torch import nn

from hourglass.backends import KERNEL, backend_names, check_backend_choice
from hourglass.registry import ATTENTION, Contract
from hourglass.spec import Problem

__all__ = ["AttentionKind", "attention_kind", "pin_backends"]


class AttentionKind(Contract):
    """Contract of the ``attention`` family (see the module docstring).

    Class attributes:
        kernel: name of the registered kernel that computes this kind, or ``None`` if it mixes no
            tokens (then models build FFN-only layers).
        connects_all_tokens: one layer lets every token attend to every token.
    """

    kernel: ClassVar[str | None] = None
    connects_all_tokens: ClassVar[bool] = False
    #: the runtime backend of this module (``None``: resolved at run time); never in the state_dict
    backend: str | None = None

    @classmethod
    def contract_problem(cls) -> str | None:
        """A kind must name a registered kernel (or ``None``)."""
        if cls.kernel is not None and not KERNEL.registered(cls.kernel):
            known = ", ".join(sorted(KERNEL._entries))
            return (f"its kernel {cls.kernel!r} is not registered (known: {known}); register the kernel and its "
                    "reference backend (hourglass.plugin.register_kernel / register_backend) before the kind")
        return None

    @classmethod
    def mixes_tokens(cls) -> bool:
        """Whether the kind moves information between tokens at all (``kernel is not None``)."""
        return cls.kernel is not None

    @classmethod
    def grid_problems(cls, spec: Any, grid: tuple[int, int], layers: Iterable[int] = (0,)) -> list[Problem]:
        """Problems of running ``spec`` on an ``h x w`` token grid, paths relative to the spec.

        Args:
            spec: this kind's validated spec.
            grid: the token grid ``(h, w)`` at the model's ``input_size``.
            layers: consecutive layer indices that use it, a ``range`` (a kind may vary per layer,
                e.g. DiNAT's dilations); look at as many as the kind's cycle needs, not all of them.

        Returns:
            ``[]`` when it fits; else e.g. ``Problem("kernel_size", "7 does not fit the 4x4 token grid",
            "use kernel_size <= 4 or global attention")``.
        """
        return []

    @classmethod
    def width_problems(cls, spec: Any, width: int) -> list[Problem]:
        """Problems of running ``spec`` on tokens of ``width`` channels (path ``""`` = the width)."""
        return []

    @classmethod
    def heads(cls, spec: Any, width: int) -> int | None:
        """Attention heads on tokens of ``width`` channels (``None``: the kind has no heads)."""
        return None

    @classmethod
    def label(cls, spec: Any) -> str:
        """Short text for tables and figures, e.g. ``"neighborhood k7"``."""
        return str(spec.type)

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """``{"kernel", "backends", "connects_all_tokens", "mixes_tokens"}``."""
        return {
            "kernel": cls.kernel,
            "backends": list(backend_names(cls.kernel)) if cls.kernel else [],
            "connects_all_tokens": cls.connects_all_tokens,
            "mixes_tokens": cls.mixes_tokens(),
        }

    def attention_macs(self, batch: int, h: int, w: int) -> int:
        """Multiply-accumulates of the token mixing (``q k^T`` and ``a v``) on a ``(batch, h, w)`` grid."""
        raise NotImplementedError(f"{type(self).__name__} must define attention_macs(batch, h, w)")


ATTENTION.set_contract(AttentionKind)


def attention_kind(spec: Any) -> type[AttentionKind]:
    """The registered class of an attention spec (or a name / ``{"type": ...}`` table)."""
    spec = ATTENTION.validate(spec)
    return ATTENTION.get(spec.type)


def pin_backends(model: nn.Module, choices: Mapping[str, str]) -> int:
    """Pin the runtime backend of every attention module of ``model`` whose kernel is in ``choices``.

    Args:
        model: any module tree; plugin kinds are pinned like built-ins (by their ``kernel``).
        choices: kernel -> backend name; ``"auto"`` leaves the module to resolve at run time.

    Returns:
        How many modules were pinned.

    Raises:
        ValueError: an unknown kernel or backend name (the message lists the known ones).
    """
    for kernel, name in choices.items():
        reason = check_backend_choice(kernel, name)
        if reason is not None:
            raise ValueError(reason)
    pinned = 0
    for module in model.modules():
        if isinstance(module, AttentionKind) and module.kernel in choices:
            name = choices[module.kernel]
            module.backend = None if name == "auto" else name
            pinned += 1
    return pinned
