"""Checks of the ``model`` family (private): a backbone's test preset, built and exercised end to end.

A backbone is checked on its family's ``test_preset`` (a tiny registered preset, 16-32 px): the
module checks every family gets (``forward``, ``gradients``, ``state_dict``, ``meta``), then what
``hourglass build``, the optimiser and the trainer rely on (``stages``, ``param_groups``,
``checkpointing``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from hourglass.models.base import AttentionSite, Stage
from hourglass.nn.attention import AttentionKind
from hourglass.registry import ATTENTION, PRESET, Registry
from hourglass.spec import as_pair
from hourglass.testing._common import BATCH, fail, unzero_
from hourglass.testing._modules import Case, ModuleFamily, run_module_checks

__all__ = ["preset_data", "model_facts", "check_model"]

#: relative and absolute tolerance of the gradient-checkpointing comparison: the layers are recomputed
#: with the same kernels, so only a reordered float reduction may differ
_CHECKPOINT_TOL = 1e-5


def preset_data(registry: Registry, name: str) -> dict[str, Any]:
    """The plain data of the family's ``test_preset`` (the base of its default spec).

    Raises:
        ComponentCheckError: the family declares no test preset, or names one that is not a
            registered preset of this family.
    """
    preset = getattr(registry.get(name), "test_preset", None)
    if not preset:
        raise fail(registry.family, name, "spec", "it declares no test_preset; set `test_preset` to a tiny registered "
                   "preset of the family (16-32 px) so the component contract can build it")
    if preset not in PRESET:
        raise fail(registry.family, name, "spec", f"its test_preset {preset!r} is not a registered preset; register it "
                   "with hourglass.models.register_preset")
    data = dict(PRESET.get(preset))
    if data.get("type") != name:
        raise fail(registry.family, name, "spec", f"its test_preset {preset!r} is a preset of {data.get('type')!r}")
    return data


def model_facts(registry: Registry, name: str, spec: BaseModel) -> None:
    """The spec-level declarations: the test preset fits, ``stride`` divides it, every attention site is a kind."""
    fam = registry.family
    problems = spec.shape_problems()  # type: ignore[attr-defined]
    if problems:
        raise fail(fam, name, "spec", "shape_problems() of its test preset: " + "; ".join(map(str, problems)))
    (h, w), (sh, sw) = as_pair(spec.input_size), spec.stride  # type: ignore[attr-defined]
    if min(sh, sw) < 1 or h % sh or w % sw:
        raise fail(fam, name, "spec", f"its stride {sh}x{sw} does not divide its test preset's {h}x{w} input")
    sites = spec.attention_sites()  # type: ignore[attr-defined]
    if not sites or not all(isinstance(s, AttentionSite) for s in sites):
        raise fail(fam, name, "spec", f"attention_sites() returned {sites!r}; expected a non-empty list of AttentionSite")
    for site in sites:
        if site.spec.type not in ATTENTION:
            raise fail(fam, name, "spec", f"attention site {site.path} names {site.spec.type!r}, not an attention kind")
    if not isinstance(spec.embeds_aug, bool):  # type: ignore[attr-defined]
        raise fail(fam, name, "spec", f"embeds_aug is {spec.embeds_aug!r}, not a bool")  # type: ignore[attr-defined]


def _model_case(registry: Registry, spec: Any, grid: tuple[int, int], width: int) -> Case:
    h, w = as_pair(spec.input_size)
    x = torch.randn(BATCH, spec.in_channels, h, w)
    sigma = torch.tensor([0.3, 2.0])
    classes = torch.tensor([0, spec.num_classes - 1]) if spec.num_classes else None
    extra = torch.randn(BATCH, spec.mapping_cond_dim) if spec.mapping_cond_dim else None
    args = (x, sigma, classes, torch.zeros(BATCH, 9), extra)
    return Case({}, args, (BATCH, spec.resolved_out_channels, h, w))


def _refuses_bad_input(registry: Registry, name: str, spec: Any, module: nn.Module, case: Case) -> None:
    x, *rest = case.args
    wrong = f"an input with {x.shape[1] + 1} channels (it takes {spec.in_channels})"
    try:
        module(torch.cat((x, x[:, :1]), dim=1), *rest)
    except (ValueError, TypeError):
        return
    except Exception as exc:
        raise fail(registry.family, name, "forward", f"{wrong} raised {type(exc).__name__} from inside rather than a "
                   "ValueError naming the argument; validate calls with self.check_inputs(...)") from exc
    raise fail(registry.family, name, "forward", f"{wrong} was accepted; validate calls with self.check_inputs(...)")


_MODEL = ModuleFamily(_model_case, behaviour=_refuses_bad_input)


def _params_under(names: list[str], prefix: str) -> list[str]:
    return [n for n in names if n.startswith(prefix)]


def _check_stages(registry: Registry, name: str, model: nn.Module) -> None:
    fam = registry.family
    stages = model.stages()
    if not stages or not all(isinstance(s, Stage) for s in stages):
        raise fail(fam, name, "stages", f"stages() returned {stages!r}; expected a non-empty list of Stage")
    names = [n for n, _ in model.named_parameters()]
    owner: dict[str, str] = {}
    for stage in stages:
        if not stage.prefixes or not all(isinstance(p, str) and p.endswith(".") for p in stage.prefixes):
            raise fail(fam, name, "stages", f"stage {stage.name!r} has prefixes {stage.prefixes!r}; expected module "
                       "names with a trailing dot, e.g. ('encoder.0.',)")
        for prefix in stage.prefixes:
            under = _params_under(names, prefix)
            if not under:
                raise fail(fam, name, "stages", f"stage {stage.name!r}: no parameter lies under prefix {prefix!r}")
            for pname in under:
                if owner.setdefault(pname, stage.name) != stage.name:
                    raise fail(fam, name, "stages", f"parameter {pname} lies in stages {owner[pname]!r} and "
                               f"{stage.name!r}")
        if stage.attention.type not in ATTENTION:
            raise fail(fam, name, "stages", f"stage {stage.name!r} runs {stage.attention.type!r}, not an attention kind")
        if not (isinstance(stage.layers, int) and stage.layers > 0 and stage.width > 0 and min(stage.grid) > 0):
            raise fail(fam, name, "stages", f"stage {stage.name!r} has layers {stage.layers!r}, width "
                       f"{stage.width!r}, grid {stage.grid!r}; expected positive values")
        kinds = [m for n, m in model.named_modules() if isinstance(m, AttentionKind)
                 and any(f"{n}.".startswith(p) for p in stage.prefixes)]
        expected = stage.layers if ATTENTION.get(stage.attention.type).mixes_tokens() else 0
        if len(kinds) != expected or any(m.spec != stage.attention for m in kinds):
            raise fail(fam, name, "stages", f"stage {stage.name!r} declares {stage.layers} layers of "
                       f"{stage.attention!r} but its prefixes hold {len(kinds)} attention modules "
                       f"({Counter(m.spec.type for m in kinds)}); expected {expected} of that spec")
    claimed = {p.split(".")[0] for s in stages for p in s.prefixes}
    lost = [n for n in names if n.split(".")[0] in claimed and n not in owner]
    if lost:
        raise fail(fam, name, "stages", f"parameters {lost[:3]} lie in a module the stages claim but under none of "
                   "their prefixes, so `hourglass build` would count them nowhere")


def _check_param_groups(registry: Registry, name: str, model: nn.Module) -> None:
    fam = registry.family
    groups = model.param_groups()
    if not isinstance(groups, list) or not groups:
        raise fail(fam, name, "param_groups", f"param_groups() returned {groups!r}; expected a non-empty list")
    seen: Counter[int] = Counter()
    for group in groups:
        missing = {"params", "lr", "weight_decay", "name"} - set(group)
        if missing or not group["params"]:
            raise fail(fam, name, "param_groups", f"group {group.get('name')!r} lacks {sorted(missing)} or is empty; "
                       "every group has params, lr, weight_decay and name")
        seen.update(id(p) for p in group["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    twice = [names.get(i, "?") for i, n in seen.items() if n > 1]
    absent = [names[i] for i in trainable if i not in seen]
    foreign = [names.get(i, "a tensor not in the model") for i in seen if i not in trainable]
    for what, found in (("in two groups", twice), ("in no group", absent), ("not trainable parameters", foreign)):
        if found:
            raise fail(fam, name, "param_groups", f"parameters {found[:3]} are {what}; every trainable parameter "
                       "belongs to exactly one group")
    torch.optim.AdamW(groups)


def _run_with_grads(model: nn.Module, args: tuple[Any, ...]) -> tuple[Tensor, list[Tensor | None], int]:
    """Output, parameter gradients and how many module forwards ran (backward recomputations included)."""
    calls = [0]
    hooks = [m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for m in model.modules()]
    try:
        model.zero_grad(set_to_none=True)
        out = model(*args)
        (out.float() ** 2).mean().backward()
    finally:
        for hook in hooks:
            hook.remove()
    return out.detach(), [None if p.grad is None else p.grad.clone() for p in model.parameters()], calls[0]


def _check_checkpointing(registry: Registry, name: str, model: nn.Module, args: tuple[Any, ...]) -> None:
    fam = registry.family
    model.eval()
    plain = _run_with_grads(model.set_gradient_checkpointing(False) or model, args)
    ckpt = _run_with_grads(model.set_gradient_checkpointing(True) or model, args)
    model.set_gradient_checkpointing(False)
    if ckpt[2] <= plain[2]:
        raise fail(fam, name, "checkpointing", "with set_gradient_checkpointing(True) no layer is recomputed in the "
                   "backward pass; run layers through self.run_layer(layer, *args)")
    tol = {"rtol": _CHECKPOINT_TOL, "atol": _CHECKPOINT_TOL}
    if not torch.allclose(plain[0], ckpt[0], **tol):
        raise fail(fam, name, "checkpointing", "the output changes with gradient checkpointing on")
    for (pname, _), a, b in zip(model.named_parameters(), plain[1], ckpt[1], strict=True):
        if (a is None) != (b is None) or (a is not None and not torch.allclose(a, b, **tol)):
            raise fail(fam, name, "checkpointing", f"the gradient of {pname} changes with gradient checkpointing on")


def check_model(registry: Registry, spec: BaseModel, context: dict[str, Any], seed: int) -> list[str]:
    """The module checks on the test preset, then ``stages``, ``param_groups`` and ``checkpointing``."""
    name = spec.type  # type: ignore[attr-defined]
    done = run_module_checks(registry, spec, _MODEL, (2, 2), 0, context, seed)
    torch.manual_seed(seed)
    case = _model_case(registry, spec, (2, 2), 0)
    model = unzero_(registry.build(spec, **context))
    _check_stages(registry, name, model)
    _check_param_groups(registry, name, model)
    _check_checkpointing(registry, name, model, case.args)
    return [*done, "stages", "param_groups", "checkpointing"]
