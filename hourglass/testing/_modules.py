"""Checks of the module families (private): attention, pos_emb, ffn, norm, merge, skip, mapping.

Every module family gets the same four checks (``forward``, ``gradients``, ``state_dict``,
``meta``, run by :func:`run_module_checks`, which the ``model`` family reuses) on inputs its
:class:`Case` describes; a family's declared facts (its contract class) are checked as part of
``spec`` (:data:`FACTS`) and against what the module does as part of ``forward``
(:data:`BEHAVIOUR`, on a copy whose zero-initialised weights were filled with noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from hourglass.backends import KERNEL, backend_names, kernel_names
from hourglass.nn.pos_emb import apply_rotary_emb, make_axial_pos
from hourglass.registry import Registry
from hourglass.spec import Problem
from hourglass.testing._common import BATCH, fail, first_output, unzero_

__all__ = ["Case", "ModuleFamily", "MODULE_FAMILIES", "run_module_checks", "changed"]

_COND = 16  # cond_dim of the conditional norms
_MAPPING_COND = 5  # mapping_cond_dim of the mapping check
#: an output entry counts as changed when it moves by more than this times (1 + the output's max |value|)
_CHANGE_TOL = 1e-5


@dataclass
class Case:
    """How to build and call one module: the build context, the forward arguments, the output shape.

    Attributes:
        context: structural build context (what the parent module passes).
        args: positional arguments of ``forward``.
        shape: the expected output shape (of ``result[0]`` for a tuple), or ``None`` when the
            family's behaviour check verifies it.
    """

    context: dict[str, Any]
    args: tuple[Any, ...]
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class ModuleFamily:
    """The checks of one module family.

    Attributes:
        case: ``case(registry, spec, grid, width, **variant) -> Case``, called after seeding.
        variants: extra arguments of ``case``; ``forward`` runs once per variant.
        facts: ``facts(registry, name, spec, grid, width)``: the contract's declarations (``spec``).
        behaviour: ``behaviour(registry, name, spec, module, case)`` on an un-zeroed module (``forward``).
    """

    case: Callable[..., Case]
    variants: tuple[dict[str, Any], ...] = ({},)
    facts: Callable[..., None] | None = None
    behaviour: Callable[..., None] | None = None


def changed(a: Tensor, b: Tensor) -> Tensor:
    """Entries of ``b`` that differ from ``a`` beyond float noise (``_CHANGE_TOL`` relative to ``a``'s scale)."""
    scale = 1.0 + float(a.detach().abs().max()) if a.numel() else 1.0
    return (a.detach() - b.detach()).abs() > _CHANGE_TOL * scale


# -- attention -------------------------------------------------------------------------------------
def _attention_case(registry: Registry, spec: BaseModel, grid: tuple[int, int], width: int, layer_index: int = 1) -> Case:
    h, w = grid
    x = torch.randn(BATCH, h, w, width)
    context = {"width": width, "pos_emb": {"type": "axial_rope"}, "layer_index": layer_index}
    return Case(context, (x, make_axial_pos(h, w)), tuple(x.shape))


def _problems(fam: str, name: str, what: str, value: Any) -> list[Problem]:
    if not isinstance(value, list) or not all(isinstance(p, Problem) for p in value):
        raise fail(fam, name, "spec", f"{what} returned {value!r}; it must return a list of hourglass.spec.Problem")
    return value


def _attention_facts(registry: Registry, name: str, spec: BaseModel, grid: tuple[int, int], width: int) -> None:
    fam, kind = registry.family, registry.get(name)
    kernel = kind.kernel
    if kernel is not None:
        if kernel not in KERNEL:
            raise fail(fam, name, "spec", f"its kernel {kernel!r} is not a registered kernel (known: "
                       f"{', '.join(kernel_names())}); register it with hourglass.plugin.register_kernel")
        reference = KERNEL.get(kernel).reference
        if reference not in backend_names(kernel):
            raise fail(fam, name, "spec", f"its kernel {kernel!r} has no reference backend {reference!r}; "
                       "register it with hourglass.plugin.register_backend")
    if kind.mixes_tokens() != (kernel is not None):
        raise fail(fam, name, "spec", f"mixes_tokens() is {kind.mixes_tokens()} but its kernel is {kernel!r} "
                   "(a kind mixes tokens exactly when it names a kernel)")
    if kind.connects_all_tokens and kernel is None:
        raise fail(fam, name, "spec", "it declares connects_all_tokens but names no kernel (it mixes no tokens)")
    label = kind.label(spec)
    if not isinstance(label, str) or not label.strip():
        raise fail(fam, name, "spec", f"label(spec) returned {label!r}; it must be a non-empty str")
    heads = kind.heads(spec, width)
    if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 1):
        raise fail(fam, name, "spec", f"heads(spec, {width}) returned {heads!r}; expected None or a positive int")
    _problems(fam, name, "grid_problems(spec, (1, 1))", kind.grid_problems(spec, (1, 1), (0, 1)))
    _problems(fam, name, f"width_problems(spec, {width + 1})", kind.width_problems(spec, width + 1))
    found = _problems(fam, name, f"grid_problems(spec, {grid})", kind.grid_problems(spec, grid, (0, 1)))
    found += [p.under("width") for p in _problems(fam, name, f"width_problems(spec, {width})",
                                                    kind.width_problems(spec, width))]
    if found:
        raise ValueError(
            f"attention {name!r} with {spec!r} does not fit the check's {grid[0]}x{grid[1]} grid of width {width}: "
            + "; ".join(map(str, found)) + "; pass a grid and width it fits (check_component(..., grid=..., width=...))"
        )


def _token_influence(module: nn.Module, x: Tensor, pos: Tensor) -> Tensor:
    """``(h, w)`` bool: which output tokens change when input token ``(0, 0)`` changes."""
    with torch.no_grad():
        base = first_output(module(x, pos))
        moved = x.clone()
        moved[:, 0, 0] += 3 * torch.randn_like(moved[:, 0, 0])
        return changed(base, first_output(module(moved, pos))).flatten(3).any(-1).any(0)


def _attention_behaviour(registry: Registry, name: str, spec: BaseModel, module: nn.Module, case: Case) -> None:
    fam, kind = registry.family, registry.get(name)
    x, pos = case.args
    b, h, w, _ = x.shape
    where = f" (layer_index {case.context.get('layer_index')})"
    reach = _token_influence(module.eval(), x, pos)
    others = int(reach.sum()) - int(reach[0, 0])
    if kind.kernel is None and others:
        raise fail(fam, name, "forward", f"its kernel is None (no token mixing) but changing token (0, 0) changed "
                   f"the output of {others} other tokens{where}")
    if kind.kernel is not None and not others:
        raise fail(fam, name, "forward", f"it names kernel {kind.kernel!r} but changing token (0, 0) changed no "
                   f"other token's output: it mixes no tokens{where}")
    if kind.connects_all_tokens and not bool(reach.all()):
        raise fail(fam, name, "forward", f"it declares connects_all_tokens but changing token (0, 0) left "
                   f"{h * w - int(reach.sum())} of {h * w} tokens unchanged{where}")
    macs = module.attention_macs(b, h, w)
    if isinstance(macs, bool) or not isinstance(macs, int) or macs < 0:
        raise fail(fam, name, "forward", f"attention_macs({b}, {h}, {w}) returned {macs!r}, expected a non-negative int")
    if kind.kernel is None and macs:
        raise fail(fam, name, "forward", f"attention_macs({b}, {h}, {w}) is {macs} but it mixes no tokens; expected 0")


# -- positional encodings ---------------------------------------------------------------------------
_ENCODINGS = ("relative", "absolute", "none")


def _pos_emb_case(registry: Registry, spec: BaseModel, grid: tuple[int, int], width: int) -> Case:
    h, w = grid
    if registry.get(spec.type).encoding == "relative":  # built per attention module, called on positions
        return Case({"width": width, "d_head": width // 2, "n_heads": 2}, (make_axial_pos(h, w),), None)
    x = torch.randn(BATCH, h, w, width)  # absolute (and "none"): built once per model, called on the tokens
    return Case({"width": width, "grid_size": (h, w)}, (x,), tuple(x.shape))


def _pos_emb_facts(registry: Registry, name: str, spec: BaseModel, grid: tuple[int, int], width: int) -> None:
    encoding = registry.get(name).encoding
    if encoding not in _ENCODINGS:
        raise fail(registry.family, name, "spec", f"its encoding is {encoding!r}; expected one of {_ENCODINGS}")


def _pos_emb_behaviour(registry: Registry, name: str, spec: BaseModel, module: nn.Module, case: Case) -> None:
    fam, encoding = registry.family, registry.get(name).encoding
    with torch.no_grad():
        out = first_output(module(*case.args))
    if encoding == "relative":
        (h, w, _), d_head, n_heads = case.args[0].shape, case.context["d_head"], case.context["n_heads"]
        if out.ndim != 4 or tuple(out.shape[:3]) != (h, w, n_heads) or not 1 <= 2 * out.shape[-1] <= d_head:
            raise fail(fam, name, "forward", f"a relative encoding must map pos ({h}, {w}, 2) to angles "
                       f"({h}, {w}, n_heads={n_heads}, d) with 2 d <= d_head={d_head}; got {tuple(out.shape)}")
        q = torch.randn(BATCH, h, w, n_heads, d_head)
        if apply_rotary_emb(q, out).shape != q.shape:
            raise fail(fam, name, "forward", "apply_rotary_emb(q, theta) changed the shape of q")
    elif encoding == "none" and not torch.equal(out, case.args[0]):
        raise fail(fam, name, "forward", "its encoding is 'none' but forward(x) is not x")


# -- ffn, merge, skip ---------------------------------------------------------------------------------
def _ffn_case(registry: Registry, spec: BaseModel, grid: tuple[int, int], width: int) -> Case:
    x = torch.randn(BATCH, *grid, width)
    return Case({"width": width, "d_ff": 3 * width, "dropout": 0.0}, (x,), tuple(x.shape))


def _merge_case(registry: Registry, spec: BaseModel, grid: tuple[int, int], width: int) -> Case:
    h, w = grid
    x = torch.randn(BATCH, h, w, width)
    return Case({"in_width": width, "out_width": 2 * width}, (x,), (BATCH, h // 2, w // 2, 2 * width))


def _skip_case(registry: Registry, spec: BaseModel, grid: tuple[int, int], width: int) -> Case:
    h, w = grid
    x, skip = torch.randn(BATCH, h // 2, w // 2, 2 * width), torch.randn(BATCH, h, w, width)
    return Case({"in_width": 2 * width, "out_width": width}, (x, skip), tuple(skip.shape))


# -- norms ---------------------------------------------------------------------------------------------
def _norm_case(registry: Registry, spec: BaseModel, grid: tuple[int, int], width: int) -> Case:
    x = torch.randn(BATCH, *grid, width)
    if registry.get(spec.type).conditional:
        return Case({"width": width, "cond_dim": _COND}, (x, torch.randn(BATCH, _COND)), tuple(x.shape))
    return Case({"width": width, "cond_dim": 0}, (x, None), tuple(x.shape))  # as U-ViT builds and calls it


def _norm_behaviour(registry: Registry, name: str, spec: BaseModel, module: nn.Module, case: Case) -> None:
    fam, conditional = registry.family, registry.get(name).conditional
    x, cond = case.args
    with torch.no_grad():
        result = module(x, cond)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise fail(fam, name, "forward", f"returned {type(result).__name__}; a norm returns a pair (y, gate | None)")
        y, gate = result
        if gate is not None and torch.broadcast_shapes(gate.shape, y.shape) != y.shape:
            raise fail(fam, name, "forward", f"its gate {tuple(gate.shape)} does not broadcast to y {tuple(y.shape)}")
        other = module(x, torch.randn(BATCH, case.context["cond_dim"] or _COND))[0]
    moved = bool(changed(y, other).any())
    if conditional and not moved:
        raise fail(fam, name, "forward", "it declares conditional = True but its output does not depend on cond")
    if not conditional and moved:
        raise fail(fam, name, "forward", "it declares conditional = False but its output depends on cond "
                   "(U-ViT calls unconditional norms with cond = None)")


# -- mapping ---------------------------------------------------------------------------------------------
def _mapping_case(registry: Registry, spec: BaseModel, grid: tuple[int, int], width: int) -> Case:
    sigma = torch.rand(BATCH) + 0.1
    args = (sigma, torch.tensor([0, 3]), torch.randn(BATCH, 9), torch.randn(BATCH, _MAPPING_COND))
    return Case({"num_classes": 4, "mapping_cond_dim": _MAPPING_COND}, args, None)


def _mapping_behaviour(registry: Registry, name: str, spec: BaseModel, module: nn.Module, case: Case) -> None:
    fam, kind = registry.family, registry.get(name)
    sigma, labels, aug, extra = case.args
    width = getattr(module, "width", None)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise fail(fam, name, "forward", f"its instances must expose `width` (a positive int), got {width!r}")
    with torch.no_grad():
        out = module(sigma, labels, aug, extra)
        if tuple(out.shape) != (BATCH, width):
            raise fail(fam, name, "forward", f"output shape {tuple(out.shape)}, expected (B, width) = {(BATCH, width)}")
        moves = {
            "sigma": module(sigma * 3, labels, aug, extra), "class_cond": module(sigma, 3 - labels, aug, extra),
            "aug_cond": module(sigma, labels, torch.randn_like(aug), extra),
            "mapping_cond": module(sigma, labels, aug, torch.randn_like(extra)),
        }
    for what, other in moves.items():
        moved = bool(changed(out, other).any())
        if what == "aug_cond" and moved != kind.embeds_aug(spec):
            raise fail(fam, name, "forward", f"embeds_aug(spec) is {kind.embeds_aug(spec)} but its output "
                       f"{'depends' if moved else 'does not depend'} on aug_cond")
        if what != "aug_cond" and not moved:
            raise fail(fam, name, "forward", f"its output does not depend on {what}")


#: the module families, by family name
MODULE_FAMILIES: dict[str, ModuleFamily] = {
    "attention": ModuleFamily(_attention_case, ({"layer_index": 0}, {"layer_index": 1}), _attention_facts,
                              _attention_behaviour),
    "pos_emb": ModuleFamily(_pos_emb_case, facts=_pos_emb_facts, behaviour=_pos_emb_behaviour),
    "ffn": ModuleFamily(_ffn_case),
    "norm": ModuleFamily(_norm_case, behaviour=_norm_behaviour),
    "merge": ModuleFamily(_merge_case),
    "skip": ModuleFamily(_skip_case),
    "mapping": ModuleFamily(_mapping_case, behaviour=_mapping_behaviour),
}


# -- the checks every module family gets ------------------------------------------------------------------
def run_module_checks(registry: Registry, spec: BaseModel, family: ModuleFamily, grid: tuple[int, int], width: int,
                      context: dict[str, Any], seed: int) -> list[str]:
    """``forward``, ``gradients`` (when it has parameters), ``state_dict`` and ``meta``.

    Returns:
        The names of the checks that ran.

    Raises:
        ComponentCheckError: the first failed check.
    """
    fam, name = registry.family, spec.type  # type: ignore[attr-defined]

    def build(seed_: int, **variant: Any) -> tuple[nn.Module, Case]:
        torch.manual_seed(seed_)
        case = family.case(registry, spec, grid, width, **variant)
        case.context = {**case.context, **context}
        try:
            module = registry.build(spec, **case.context)
        except Exception as exc:
            raise fail(fam, name, "forward", f"building it from {spec!r} with context {case.context} raised "
                       f"{type(exc).__name__}: {exc}") from exc
        return module, case

    for variant in family.variants:
        module, case = build(seed, **variant)
        where = "".join(f" ({k} {v})" for k, v in variant.items())
        try:
            out = first_output(module(*case.args))
        except Exception as exc:
            raise fail(fam, name, "forward", f"forward raised {type(exc).__name__}: {exc}{where}") from exc
        if not isinstance(out, Tensor):
            raise fail(fam, name, "forward", f"returned {type(out).__name__}, not a tensor{where}")
        if case.shape is not None and tuple(out.shape) != case.shape:
            raise fail(fam, name, "forward", f"output shape {tuple(out.shape)}, expected {case.shape}{where}")
        if out.dtype != torch.float32:
            raise fail(fam, name, "forward", f"float32 inputs gave a {out.dtype} output{where}")
        if not bool(torch.isfinite(out).all()):
            raise fail(fam, name, "forward", f"the output has NaN or inf entries{where}")
        if family.behaviour is not None:
            module, case = build(seed, **variant)
            family.behaviour(registry, name, spec, unzero_(module), case)
    done = ["forward"]

    module, case = build(seed)
    if any(True for _ in module.parameters()):
        unzero_(module)
        args = tuple(a.detach().requires_grad_() if isinstance(a, Tensor) and a.is_floating_point() else a
                     for a in case.args)
        (first_output(module(*args)).float() ** 2).mean().backward()
        for pname, p in module.named_parameters():
            if p.grad is None:
                raise fail(fam, name, "gradients", f"parameter {pname} got no gradient (unused in forward?)")
            if not bool(torch.isfinite(p.grad).all()):
                raise fail(fam, name, "gradients", f"parameter {pname} has a non-finite gradient")
            if not bool(p.grad.abs().sum() > 0):
                raise fail(fam, name, "gradients", f"parameter {pname} got an all-zero gradient")
        done.append("gradients")

    module, case = build(seed + 1)
    unzero_(module)
    clone, _ = build(seed + 2)
    clone.load_state_dict(module.state_dict())
    module.eval(), clone.eval()
    with torch.no_grad():
        first, again, cloned = (first_output(m(*case.args)) for m in (module, module, clone))
    if not torch.equal(first, again):
        raise fail(fam, name, "state_dict", "two eval-mode forward passes on the same input differ")
    if not torch.equal(first, cloned):
        diff = (first - cloned).abs().max().item()
        raise fail(fam, name, "state_dict", f"a copy loaded from its state_dict computes something else "
                   f"(max difference {diff:.3g}): some state is not in the state_dict")
    done.append("state_dict")

    with torch.device("meta"):
        meta = registry.build(spec, **case.context)
    n_meta = sum(p.numel() for p in meta.parameters())
    n_real = sum(p.numel() for p in module.parameters())
    if n_meta != n_real:
        raise fail(fam, name, "meta", f"built on the meta device it has {n_meta} parameters, on CPU {n_real}; "
                   "`hourglass build` counts on the meta device")
    done.append("meta")
    return done
