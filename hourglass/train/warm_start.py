"""Warm starts: initialise a fresh run from trained weights (``[train] init_from``), adapting what differs.

The source is anything :func:`hourglass.from_pretrained` reads (a run directory, a checkpoint, a
pretrained folder, a Hub id). Its weights (``init_weights``: the EMA ones by default) initialise both
the model and its EMA copy; the optimizer starts fresh and the run starts at step 0.

A source whose model differs from the recipe's is refused, naming the parameters that do not fit and
the ``init_allow`` option that adapts them. Three differences can be adapted:

* ``"classes"``: another class count, or other class names (when both runs name their classes). In
  every class-embedding table (an ``nn.Embedding`` of ``num_classes + 1`` rows) the last row, the
  "no class" of classifier-free guidance, is kept, and so are the rows of classes whose names both
  runs share; the other rows keep the new model's initialisation.
* ``"resolution"``: another ``input_size``. Nothing of an HDiT or DiT changes shape; a learned position
  table (U-ViT's ``abs_pos_emb.weight``) is resized bicubically, as
  :class:`~hourglass.nn.pos_emb.LearnedPosEmb` resizes it at other sizes.
* ``"grow"``: an HDiT with more levels whose inner levels are the source's, as
  :func:`hourglass.models.grow` (and ``hourglass flops --grow``) builds it to double the resolution.
  The new levels are the outer ones (0 .. k-1): source level ``i`` initialises level ``i + k``
  (``encoder``, ``decoder``, ``merges`` and ``splits`` index ``i`` -> ``i + k``; ``middle``, ``mapping``
  as they are). ``patch_in``, ``patch_out`` and ``out_norm`` (pixels <-> tokens of the outermost
  width, which ``grow`` keeps) are copied from the source; the new levels' layers and the
  ``merges``/``splits`` joining them to the old outermost level keep their fresh initialisation.
  Growing changes the resolution, so ``"resolution"`` need not be listed too.

Other spec differences that leave every weight's shape alone (dropout, an attention kernel size, ...)
are reported as notes and allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["INIT_ALLOW", "InitReport", "WarmStartError", "adapt_weights", "warm_start"]

#: the differences ``init_allow`` may list
INIT_ALLOW = ("classes", "resolution", "grow")
_LEVEL_PARTS = re.compile(r"^(encoder|decoder|merges|splits)\.(\d+)\.(.*)$")


class WarmStartError(ValueError):
    """``init_from``'s weights do not fit the recipe's model (names the parameters and the option to set)."""


@dataclass
class InitReport:
    """What a warm start did, tensor by tensor (names are the new model's, ``skipped`` the source's).

    Attributes:
        source: what was loaded (the path or Hub id).
        weights: ``"ema"``, ``"raw"`` or ``"unknown"``: which of the source's weights.
        step: the source's training step.
        loaded: tensors copied as they are (under a new name for a grown model: see ``renamed``).
        reshaped: tensors adapted (class rows, resized position tables); ``details`` says how.
        new: tensors of the new model the source has nothing for (they keep their fresh initialisation).
        skipped: tensors of the source the new model has no place for.
        renamed: new name -> source name, for tensors taken from another name (grown levels).
        details: name -> how it was reshaped.
        notes: spec differences that change no weight.
    """

    source: str
    weights: str
    step: int = 0
    loaded: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """``{"loaded", "reshaped", "new", "skipped", "renamed"}`` counts."""
        return {"loaded": len(self.loaded), "reshaped": len(self.reshaped), "new": len(self.new),
                "skipped": len(self.skipped), "renamed": len(self.renamed)}

    def lines(self) -> list[str]:
        """The report as a few lines (names grouped by module prefix, so a whole new level is one entry)."""
        c = self.counts()
        head = (f"init_from {self.source}: {_WEIGHT_WORDS.get(self.weights, 'weights')} of step {self.step}; "
                f"loaded {c['loaded']} tensors" + (f" ({c['renamed']} from a shifted level)" if c["renamed"] else "")
                + f", reshaped {c['reshaped']}, newly initialised {c['new']}, skipped {c['skipped']}")
        out = [head]
        if self.reshaped:
            out.append("  reshaped: " + "; ".join(f"{n} ({self.details.get(n, '')})" for n in self.reshaped))
        if self.new:
            out.append("  newly initialised: " + _grouped(self.new))
        if self.skipped:
            out.append("  skipped (not in this model): " + _grouped(self.skipped))
        if self.renamed:
            shifts = sorted({f"{_level_of(s)} -> {_level_of(t)}" for t, s in self.renamed.items()})
            out.append("  levels moved: " + ", ".join(shifts))
        out += [f"  note: {n}" for n in self.notes]
        return out


_WEIGHT_WORDS = {"ema": "the EMA weights", "raw": "the raw weights", "unknown": "the weights"}


def _level_of(name: str) -> str:
    m = _LEVEL_PARTS.match(name)
    return f"{m.group(1)}.{m.group(2)}" if m else name


def _grouped(names: Sequence[str], limit: int = 8) -> str:
    """``encoder.0.* (12), merges.0.* (1), mapping.class_emb.weight``: names grouped by their first two parts."""
    groups: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".")
        key = ".".join(parts[:2]) + ".*" if len(parts) > 2 else name
        groups.setdefault(key, []).append(name)
    items = [v[0] if len(v) == 1 else f"{key} ({len(v)})" for key, v in groups.items()]
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more groups)" if len(items) > limit else "")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(data, (list, tuple)) and data and all(isinstance(v, dict) for v in data):
        out = {}
        for i, v in enumerate(data):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out
    return {prefix: list(data) if isinstance(data, tuple) else data}


def _spec_diffs(a: Mapping[str, Any], b: Mapping[str, Any], skip: Sequence[str]) -> list[str]:
    fa, fb = _flat(dict(a)), _flat(dict(b))
    keys = sorted(set(fa) | set(fb), key=lambda k: (k.split(".")[0], k))
    return [f"{k} {fa.get(k, '-')!r} -> {fb.get(k, '-')!r}" for k in keys
            if fa.get(k) != fb.get(k) and k.split(".")[0].split("[")[0] not in skip]


def _class_tables(model: nn.Module, num_classes: int) -> set[str]:
    """State-dict names of the class-embedding tables (``nn.Embedding`` of ``num_classes + 1`` rows)."""
    if not num_classes:
        return set()
    return {f"{name}.weight" if name else "weight" for name, m in model.named_modules()
            if isinstance(m, nn.Embedding) and m.num_embeddings == num_classes + 1}


def _position_tables(model: nn.Module) -> set[str]:
    from hourglass.nn.pos_emb import LearnedPosEmb

    return {f"{name}.weight" if name else "weight" for name, m in model.named_modules() if isinstance(m, LearnedPosEmb)}


def _resize_table(table: Tensor, size: tuple[int, int]) -> Tensor:
    """An ``(h, w, d)`` position table resized to ``size`` (bicubic, as ``LearnedPosEmb.table`` resizes it)."""
    grid = table.float().permute(2, 0, 1)[None]
    out = F.interpolate(grid, size=size, mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    return out.to(table.dtype).contiguous()


def _option(names: Sequence[str]) -> str:
    return "train.init_allow = [" + ", ".join(f'"{n}"' for n in names) + "]"


def adapt_weights(
    weights: Mapping[str, Tensor],
    source_spec: Any,
    model: nn.Module,
    *,
    allow: Sequence[str] = (),
    source_class_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    source: str = "init_from",
) -> tuple[dict[str, Tensor], InitReport]:
    """The state dict for ``model`` built from ``weights`` of a model of ``source_spec``, and what was done.

    Args:
        weights: the source's state dict.
        source_spec: the source's model spec (a spec or its plain data).
        model: the new model (freshly initialised: tensors the source has nothing for keep these values).
        allow: the differences to adapt (:data:`INIT_ALLOW`).
        source_class_names, class_names: the class names of the source and of the new run, when known.
        source: how to name the source in messages.

    Returns:
        ``(state_dict, report)``; ``state_dict`` loads into ``model`` with ``strict=True``.

    Raises:
        WarmStartError: a difference that ``allow`` does not list, or one no option covers (names the
            mismatching parameters and the option to set).
    """
    from pydantic import BaseModel

    from hourglass.recipe import plain_data
    from hourglass.registry import MODEL
    from hourglass.spec import as_pair

    unknown = [a for a in allow if a not in INIT_ALLOW]
    if unknown:
        raise WarmStartError(f"init_allow {unknown} unknown; use any of {', '.join(INIT_ALLOW)}")
    src = source_spec if isinstance(source_spec, BaseModel) else MODEL.validate(source_spec)
    dst: Any = model.spec
    src_data = plain_data(src.model_dump(mode="python"))
    dst_data = plain_data(dst.model_dump(mode="python"))
    report = InitReport(source=source, weights="")
    if src_data.get("type") != dst_data.get("type"):
        raise WarmStartError(f"{source} holds a {src_data.get('type')} model and the recipe's is a "
                             f"{dst_data.get('type')} model; no init_allow option covers another model family")

    # -- which differences there are, and whether they are allowed -----------------------------------
    needed: list[str] = []
    reasons: list[str] = []
    shift = 0
    src_levels, dst_levels = src_data.get("levels"), dst_data.get("levels")
    if isinstance(src_levels, list) and isinstance(dst_levels, list) and len(dst_levels) != len(src_levels):
        shift = len(dst_levels) - len(src_levels)
        if shift < 0 or dst_levels[shift:] != src_levels:
            raise WarmStartError(
                f"{source} has {len(src_levels)} levels and the recipe's model {len(dst_levels)}, and its levels are "
                "not the new model's innermost ones (a model grown with hourglass.models.grow keeps them); no "
                "init_allow option covers that: " + "; ".join(_spec_diffs({"levels": src_levels},
                                                                        {"levels": dst_levels}, ())[:4]))
        needed.append("grow")
        reasons.append(f"the recipe's model has {len(dst_levels)} levels and {source}'s {len(src_levels)} (a grown "
                       f"model: {shift} new outer level(s))")
    src_size, dst_size = as_pair(src_data["input_size"]), as_pair(dst_data["input_size"])
    if src_size != dst_size and not shift:
        needed.append("resolution")
        reasons.append(f"{source} was trained at {src_size[0]}x{src_size[1]} and the recipe's model is "
                       f"{dst_size[0]}x{dst_size[1]}")
    src_classes, dst_classes = int(src_data.get("num_classes") or 0), int(dst_data.get("num_classes") or 0)
    names_differ = (source_class_names is not None and class_names is not None
                    and list(source_class_names) != list(class_names))
    if src_classes != dst_classes or (names_differ and src_classes):
        needed.append("classes")
        reasons.append(f"{source} has {src_classes} classes and the recipe's model {dst_classes}" if src_classes !=
                       dst_classes else f"the class names differ ({source}: {', '.join(list(source_class_names)[:4])}"
                       f"...; this run: {', '.join(list(class_names)[:4])}...)")

    # -- tensor by tensor: each difference is explained by a category, or by none -----------------------
    target = model.state_dict()
    tables_new = _class_tables(model, dst_classes)
    tables_old = _source_class_tables(weights, src_classes) if src_classes and not dst_classes else set()
    positions = _position_tables(model)
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    mismatch: list[tuple[str, str, str | None]] = []  # (kind, what, the category that explains it or None)
    for name, fresh in target.items():
        origin = name
        m = _LEVEL_PARTS.match(name)
        if shift and m:
            index = int(m.group(2)) - shift
            origin = f"{m.group(1)}.{index}.{m.group(3)}" if index >= 0 else ""
        if not origin or origin not in weights:
            out[name] = fresh
            report.new.append(name)
            why = "grow" if shift and m and not origin else "classes" if name in tables_new and not src_classes else None
            mismatch.append(("new", name, why))
            continue
        saved = weights[origin]
        used.add(origin)
        if origin != name:
            report.renamed[name] = origin
        same_shape = tuple(saved.shape) == tuple(fresh.shape)
        if name in tables_new and src_classes and saved.ndim == 2 and saved.shape[1] == fresh.shape[1] and (
                not same_shape or names_differ):
            out[name], report.details[name] = _class_rows(saved, fresh, src_classes, dst_classes,
                                                          source_class_names, class_names)
            report.reshaped.append(name)
            mismatch.append(("shape", f"{name} {tuple(saved.shape)} vs {tuple(fresh.shape)}", "classes"))
        elif same_shape:
            out[name] = saved.to(fresh.dtype)
            report.loaded.append(name)
        elif name in positions and saved.ndim == 3 and saved.shape[2] == fresh.shape[2]:
            out[name] = _resize_table(saved, (fresh.shape[0], fresh.shape[1])).to(fresh.dtype)
            report.reshaped.append(name)
            report.details[name] = (f"position table resized {saved.shape[0]}x{saved.shape[1]} -> "
                                    f"{fresh.shape[0]}x{fresh.shape[1]} (bicubic)")
            mismatch.append(("shape", f"{name} {tuple(saved.shape)} vs {tuple(fresh.shape)}",
                             "grow" if shift else "resolution"))
        else:
            out[name] = fresh
            mismatch.append(("shape", f"{name} {tuple(saved.shape)} vs {tuple(fresh.shape)}", None))
    for origin in weights:
        if origin not in used:
            report.skipped.append(origin)
            mismatch.append(("unused", origin, "classes" if origin in tables_old else None))

    # -- refuse what is not allowed, or not explained ------------------------------------------------
    missing = [n for n in dict.fromkeys(needed) if n not in allow]
    unexplained = [what for _, what, why in mismatch if why is None or why not in needed]
    if missing or unexplained:
        listed = [(kind, what) for kind, what, why in mismatch if why is None or why in missing or why not in needed]
        shown = _unfit_text(listed, source)
        what = "; ".join(reasons) or "its weights do not fit the recipe's model"
        if unexplained:
            skip = ("input_size", "num_classes", "levels") if shift else ("input_size", "num_classes")
            other = _spec_diffs(src_data, dst_data, skip)
            fix = "no init_allow option covers that" + (f" (the models differ in {'; '.join(other[:4])})" if other else "")
        else:
            words = {"classes": "re-initialise the class rows (the no-class row is kept)",
                     "resolution": "take it at the new resolution", "grow": "initialise the inner levels from it"}
            fix = (f"set {_option(list(dict.fromkeys([*allow, *missing])))} to "
                   + " and ".join(words[n] for n in missing))
        detail = f"; parameters that do not fit: {shown}" if shown else "; no weight changes shape"
        raise WarmStartError(f"train.init_from = {source!r}: {what}{detail}; {fix}")
    skip = ["input_size", "num_classes"] + (["levels"] if shift else [])
    report.notes += [f"the models also differ in {d} (no weight changes)" for d in _spec_diffs(src_data, dst_data, skip)]
    return out, report


def _unfit_text(listed: Sequence[tuple[str, str]], source: str) -> str:
    """``2 of another shape (saved vs new: ...); 35 not in SOURCE (encoder.0.* (16), ...); 1 not in the new model``."""
    parts = []
    shapes = [what for kind, what in listed if kind == "shape"]
    if shapes:
        parts.append(f"{len(shapes)} of another shape (saved vs new: " + "; ".join(shapes[:5])
                     + (f"; ... {len(shapes) - 5} more" if len(shapes) > 5 else "") + ")")
    new = [what for kind, what in listed if kind == "new"]
    if new:
        parts.append(f"{len(new)} not in {source} ({_grouped(new, 6)})")
    unused = [what for kind, what in listed if kind == "unused"]
    if unused:
        parts.append(f"{len(unused)} not in the recipe's model ({_grouped(unused, 6)})")
    return "; ".join(parts)


def _source_class_tables(weights: Mapping[str, Tensor], num_classes: int) -> set[str]:
    """Names of the source's class tables (2-D tensors of ``num_classes + 1`` rows named like an embedding)."""
    if not num_classes:
        return set()
    return {k for k, v in weights.items() if v.ndim == 2 and v.shape[0] == num_classes + 1 and "class" in k}


def _class_rows(
    saved: Tensor, fresh: Tensor, src_classes: int, dst_classes: int, src_names: Sequence[str] | None,
    dst_names: Sequence[str] | None,
) -> tuple[Tensor, str]:
    """A class table for the new classes: fresh rows, the "no class" row and same-named classes' rows kept."""
    rows = fresh.clone()
    rows[dst_classes] = saved[src_classes].to(fresh.dtype)  # the "no class" row (the last one)
    kept = 0
    if src_names is not None and dst_names is not None:
        where = {n: i for i, n in enumerate(src_names)}
        for j, n in enumerate(dst_names):
            if n in where and where[n] < src_classes:
                rows[j] = saved[where[n]].to(fresh.dtype)
                kept += 1
    detail = (f"{src_classes} -> {dst_classes} classes: the no-class row kept"
              + (f", {kept} class row(s) kept by name" if kept else "") + f", {dst_classes - kept} re-initialised")
    return rows, detail


def warm_start(
    model: nn.Module,
    source: str,
    *,
    allow: Sequence[str] = (),
    weights: str = "ema",
    class_names: Sequence[str] | None = None,
    ema_model: nn.Module | None = None,
    report: Callable[[str], None] | None = print,
) -> InitReport:
    """Load ``source``'s weights into ``model`` (and ``ema_model``), adapting what ``allow`` lists.

    Args:
        model: the freshly built model.
        source: a run directory, checkpoint, pretrained folder or Hub id.
        allow: differences to adapt (:data:`INIT_ALLOW`).
        weights: ``"ema"`` (its EMA weights when it has them, else its only ones) or ``"raw"``.
        class_names: the new run's class names (rows of classes the source names too are kept).
        ema_model: the EMA copy, loaded with the same weights.
        report: receives the report's lines.

    Returns:
        The :class:`InitReport`.

    Raises:
        WarmStartError: the weights do not fit and ``allow`` does not cover it.
        hourglass.train.CheckpointError: nothing usable at ``source``.
    """
    from hourglass.hub import resolve_source, select_weights
    from hourglass.train.checkpoint import checkpoint_recipe, read_class_names, resolve_checkpoint

    local = resolve_source(source, ema=weights == "ema")
    data = resolve_checkpoint(local, report=report)
    _, spec = checkpoint_recipe(data, report=report)
    state, which = select_weights(data, ema=weights == "ema")
    state_dict, info = adapt_weights(state, spec, model, allow=allow, source_class_names=read_class_names(data),
                                     class_names=class_names, source=source)
    info.weights, info.step = which, data.step
    with torch.no_grad():
        model.load_state_dict(state_dict, strict=True)
        if ema_model is not None:
            ema_model.load_state_dict(state_dict, strict=True)
    if report is not None:
        for line in info.lines():
            report(line)
    return info
