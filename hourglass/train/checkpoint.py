"""Training checkpoints: one safetensors file per save, written atomically, never unpickled.

File ``run_dir/checkpoints/step_00001000.safetensors`` holds tensors under these prefixes:

- ``model.*``: the trained model's ``state_dict``; ``ema.*``: the EMA model's;
- ``optimizer.state.<param_id>.<key>``: the optimizer's tensor state (``exp_avg``, ``step``, ...);
- ``rng.torch_cpu`` and ``rng.cuda.<device>``: torch's generator states (``uint8``);
- ``data.<key>``: the data loader's order state (``int64``).

and string metadata: ``format`` (``"hourglass-checkpoint"``), ``format_version``, ``step``,
``recipe`` (the resolved recipe as TOML), ``model_spec`` (JSON), ``optimizer`` (JSON: the param
groups and the non-tensor state), ``extra`` (JSON: counters), ``sha256`` (digest of every tensor,
checked on load) and ``hourglass_version``.

A save writes a temporary file in the same folder, fsyncs it, renames it over the target with
``os.replace`` and fsyncs the folder, so a crash mid-write leaves the previous files intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointData",
    "checkpoint_path",
    "save_checkpoint",
    "read_checkpoint",
    "list_checkpoints",
    "find_latest_checkpoint",
    "prune_checkpoints",
    "remove_stale_temp_files",
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "resolve_checkpoint",
    "load_checkpoint",
    "checkpoint_recipe",
    "build_checkpoint_model",
]

FORMAT = "hourglass-checkpoint"
FORMAT_VERSION = "1"
WEIGHTS_FORMAT = "hourglass-weights"  # inference weights only (``hourglass convert``): model tensors + recipe
WEIGHTS_FILE = "model.safetensors"
_NAME_RE = re.compile(r"^step_(\d{8,})\.safetensors$")
_TMP_RE = re.compile(r"^\.step_\d+\.safetensors\.tmp-\d+$")
_CHUNK = 16 << 20


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not an hourglass checkpoint."""


@dataclass
class CheckpointData:
    """Everything one checkpoint holds (tensors on the CPU).

    Attributes:
        step: optimizer steps taken when it was written.
        model: the trained model's state dict.
        ema: the EMA model's state dict (empty if none was saved).
        optimizer: the optimizer's ``state_dict()`` (None if none was saved).
        rng: generator states, ``{"torch_cpu": uint8 tensor, "cuda.0": ..., ...}``.
        data: the data loader's order state as int64 tensors.
        recipe_toml: the resolved recipe as TOML text ("" if unknown).
        model_spec: the model's spec as plain data (empty if unknown).
        extra: JSON-able counters (bad steps, images seen, ...); for a weights-only file, its
            ``source`` (e.g. ``"k-diffusion"``) and ``weights``: ``"ema"``, ``"raw"`` or ``"unknown"``
            (which of the original checkpoint's weights were converted).
        path: the file it came from.
        format: :data:`FORMAT` (a training checkpoint) or ``WEIGHTS_FORMAT`` (weights only, from
            ``hourglass convert``: the one set of weights is in ``model``).
    """

    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    rng: dict[str, Tensor] = field(default_factory=dict)
    data: dict[str, Tensor] = field(default_factory=dict)
    recipe_toml: str = ""
    model_spec: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    format: str = FORMAT


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``run_dir/checkpoints/step_{step:08d}.safetensors``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.safetensors"


# -- optimizer state <-> tensors + JSON ------------------------------------------------------------
def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and JSON-able metadata.

    Returns:
        ``(tensors, meta)``: tensors keyed ``optimizer.state.<param_id>.<key>``; ``meta`` holds
        ``param_groups`` and the non-tensor per-parameter values under ``scalars``.
    """
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.state.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state` (``tensors`` may hold other prefixes too)."""
    state: dict[int, dict[str, Any]] = {}
    prefix = "optimizer.state."
    for name, value in tensors.items():
        if name.startswith(prefix):
            param_id, key = name[len(prefix):].split(".", 1)
            state.setdefault(int(param_id), {})[key] = value
    for param_id, entries in meta.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(entries)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": dict(sorted(state.items())), "param_groups": groups}


# -- writing ---------------------------------------------------------------------------------------
def _cpu_copy(t: Tensor) -> Tensor:
    # A private contiguous CPU copy: safetensors refuses tensors sharing storage.
    return t.detach().to("cpu", copy=True).contiguous()


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _write_chunks(f: Any, data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        f.write(view[start : start + _CHUNK])


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            _write_chunks(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    step: int,
    model: dict[str, Tensor],
    ema: dict[str, Tensor] | None = None,
    optimizer: dict[str, Any] | None = None,
    rng: dict[str, Tensor] | None = None,
    data: dict[str, Tensor] | None = None,
    recipe_toml: str = "",
    model_spec: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file, fsync, ``os.replace``, fsync of the folder).

    Args:
        path: target file (see :func:`checkpoint_path`).
        step: optimizer steps taken.
        model: model state dict.
        ema: EMA model state dict.
        optimizer: ``optimizer.state_dict()``.
        rng: generator states as tensors.
        data: data-order state as tensors.
        recipe_toml: the resolved recipe.
        model_spec: the model's spec as plain data.
        extra: JSON-able counters.

    Returns:
        The written path.
    """
    tensors: dict[str, Tensor] = {}
    for prefix, part in (("model", model), ("ema", ema or {}), ("rng", rng or {}), ("data", data or {})):
        for name, value in part.items():
            tensors[f"{prefix}.{name}"] = _cpu_copy(value)
    optimizer_meta: dict[str, Any] | None = None
    if optimizer is not None:
        opt_tensors, optimizer_meta = flatten_optimizer_state(optimizer)
        tensors.update({k: _cpu_copy(v) for k, v in opt_tensors.items()})
    from hourglass import __version__

    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": str(int(step)),
        "recipe": recipe_toml,
        "model_spec": json.dumps(model_spec or {}),
        "optimizer": json.dumps(optimizer_meta),
        "extra": json.dumps(extra or {}),
        "sha256": _digest(tensors),
        "hourglass_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = Path(path)
    _atomic_write(path, safetensors.torch.save(tensors, metadata=metadata))
    return path


# -- reading ---------------------------------------------------------------------------------------
def _header(raw: bytes, path: Path) -> dict[str, str]:
    if len(raw) < 8:
        raise CheckpointError(f"{path} is truncated ({len(raw)} bytes); delete it or pick an older checkpoint")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise CheckpointError(
            f"{path} is truncated (header says {n} bytes, file has {len(raw) - 8}); "
            "delete it or pick an older checkpoint"
        )
    try:
        header = json.loads(raw[8 : 8 + n])
    except ValueError as exc:
        raise CheckpointError(f"{path} has a corrupt header ({exc}); delete it or pick an older checkpoint") from None
    return header.get("__metadata__") or {}


def read_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> CheckpointData:
    """Read and check a checkpoint file (tensors land on the CPU; nothing is unpickled).

    Args:
        path: a ``.safetensors`` checkpoint written by :func:`save_checkpoint`, or a weights-only
            file written by ``hourglass convert`` (step 0, no EMA, optimizer or RNG state).
        verify: recompute the SHA-256 of every tensor and compare it with the stored digest.

    Returns:
        The checkpoint's content.

    Raises:
        CheckpointError: if the file is missing, truncated, corrupt or of another format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a .safetensors file or a run directory")
    raw = path.read_bytes()
    meta = _header(raw, path)
    if meta.get("format") == WEIGHTS_FORMAT:
        return _read_weights(raw, meta, path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an hourglass training checkpoint (metadata format={meta.get('format')!r}); "
            "pass a file written by `hourglass train`"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {meta.get('format_version')!r}; this hourglass reads "
            f"version {FORMAT_VERSION}: upgrade hourglass"
        )
    try:
        tensors = safetensors.torch.load(raw)
    except Exception as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); delete it or pick an older checkpoint") from None
    del raw
    if verify and _digest(tensors) != meta.get("sha256"):
        raise CheckpointError(
            f"{path} is corrupt (tensor checksum mismatch); delete it or pick an older checkpoint"
        )
    parts: dict[str, dict[str, Tensor]] = {"model": {}, "ema": {}, "rng": {}, "data": {}}
    for name, value in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix in parts:
            parts[prefix][rest] = value
    try:
        optimizer_meta = json.loads(meta.get("optimizer") or "null")
        optimizer = unflatten_optimizer_state(tensors, optimizer_meta) if optimizer_meta else None
        return CheckpointData(
            step=int(meta["step"]),
            model=parts["model"],
            ema=parts["ema"],
            optimizer=optimizer,
            rng=parts["rng"],
            data=parts["data"],
            recipe_toml=meta.get("recipe", ""),
            model_spec=json.loads(meta.get("model_spec") or "{}"),
            extra=json.loads(meta.get("extra") or "{}"),
            path=path,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has corrupt metadata ({exc}); delete it or pick an older checkpoint") from None


def _read_weights(raw: bytes, meta: dict[str, str], path: Path) -> CheckpointData:
    """A weights-only file (``hourglass convert``): the model's tensors, step 0, no EMA or optimizer.

    Its one set of weights lands in ``model``; ``extra["weights"]`` says whether they were the EMA
    weights of the converted checkpoint (``"ema"``), its raw weights (``"raw"``) or not recorded
    (``"unknown"``, files converted before this was recorded).
    """
    try:
        tensors = safetensors.torch.load(raw)
        spec = json.loads(meta.get("model_spec") or "{}")
    except Exception as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); convert the weights again") from None
    weights = meta.get("weights", "unknown")
    extra = {"source": meta.get("source", ""), "weights": weights if weights in ("ema", "raw") else "unknown"}
    return CheckpointData(step=0, model=tensors, recipe_toml=meta.get("recipe", ""), model_spec=spec, extra=extra,
                          path=path, format=WEIGHTS_FORMAT)


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint file of a run, oldest first (names only, not validated)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_latest_checkpoint(
    run_dir: str | os.PathLike, *, verify: bool = True, report: Callable[[str], None] | None = print
) -> CheckpointData | None:
    """The newest checkpoint of a run that reads back intact.

    Newer files that are truncated or corrupt are skipped, each reported by name through ``report``.

    Args:
        run_dir: the run directory (holding ``checkpoints/``).
        verify: check the tensor digests.
        report: called with one message per skipped file (None: silent).

    Returns:
        The checkpoint, or None when the run has no valid checkpoint.
    """
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return read_checkpoint(path, verify=verify)
        except CheckpointError as exc:
            if report is not None:
                report(f"skipping checkpoint {path.name}: {exc}")
    return None


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (``keep_last <= 0`` keeps all).

    Returns:
        The deleted paths.
    """
    if keep_last <= 0:
        return []
    old = list_checkpoints(run_dir)[:-keep_last]
    for _, path in old:
        path.unlink(missing_ok=True)
    return [p for _, p in old]


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by a save that was killed mid-write.

    Returns:
        The deleted paths.
    """
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TMP_RE.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# -- inference -------------------------------------------------------------------------------------
def resolve_checkpoint(
    path_or_run_dir: str | os.PathLike, *, report: Callable[[str], None] | None = print
) -> CheckpointData:
    """Read a checkpoint file, or the newest valid checkpoint of a run directory.

    Args:
        path_or_run_dir: a ``.safetensors`` checkpoint or weights file, a run directory (holding
            ``checkpoints/``) or a folder written by ``hourglass convert`` (holding ``model.safetensors``).
        report: receives one message per skipped (corrupt) file of a run directory.

    Returns:
        The checkpoint's content.

    Raises:
        CheckpointError: nothing usable at that path.
    """
    path = Path(path_or_run_dir)
    if path.is_dir() and not list_checkpoints(path) and (path / WEIGHTS_FILE).is_file():
        return read_checkpoint(path / WEIGHTS_FILE)  # a folder written by ``hourglass convert``
    if path.is_dir():
        found = find_latest_checkpoint(path, report=report)
        if found is None:
            n = len(list_checkpoints(path))
            why = f"all {n} checkpoint file(s) are corrupt" if n else "it has no checkpoints/step_*.safetensors"
            raise CheckpointError(f"run directory {path} has no usable checkpoint ({why}); train first or pass a file")
        return found
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a checkpoint file or a run directory")
    return read_checkpoint(path)


def load_checkpoint(
    path_or_run_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    report: Callable[[str], None] | None = print,
) -> tuple[torch.nn.Module, torch.nn.Module | None, Any, int]:
    """Load a trained model and its EMA copy for inference (eval mode, no gradients).

    Args:
        path_or_run_dir: a checkpoint file or a run directory (its newest valid checkpoint), or a
            weights file / folder written by ``hourglass convert``.
        device: where to put the models.
        report: receives messages about skipped corrupt files.

    Returns:
        ``(model, ema_model, recipe, step)``: the raw and EMA backbones (``ema_model`` is None when
        the checkpoint has no EMA weights; a weights-only file's one set of weights, EMA or not, is
        ``model``: :func:`resolve_checkpoint` tells which in ``extra["weights"]``; both with the recipe's ``[runtime.backends]`` pinned), the
        run's :class:`hourglass.recipe.Recipe` (None if the checkpoint carries none) and the step it
        was written at.

    Raises:
        CheckpointError: no usable checkpoint, or weights that do not fit the stored model spec.
    """
    data = resolve_checkpoint(path_or_run_dir, report=report)
    recipe, spec = checkpoint_recipe(data)
    models = [build_checkpoint_model(data, weights, recipe=recipe, spec=spec, device=device) if weights else None
              for weights in (data.model, data.ema)]
    return models[0], models[1], recipe, data.step


def checkpoint_recipe(data: CheckpointData) -> tuple[Any, Any]:
    """The recipe and the model spec a checkpoint was written with.

    Args:
        data: a checkpoint's content (:func:`read_checkpoint`, :func:`resolve_checkpoint`).

    Returns:
        ``(recipe, model_spec)``: the :class:`hourglass.recipe.Recipe` (None if the checkpoint carries
        none, or when its recipe no longer validates but a model spec is stored) and the model spec
        (plain data or a spec).

    Raises:
        CheckpointError: neither a usable recipe nor a model spec.
    """
    from hourglass.recipe import RecipeError, loads_recipe

    recipe = None
    if data.recipe_toml:
        try:
            recipe = loads_recipe(data.recipe_toml, source=f"{data.path} (embedded recipe)")
        except RecipeError as exc:
            if not data.model_spec:
                raise CheckpointError(f"{data.path}: its embedded recipe no longer validates: {exc}") from None
    spec = data.model_spec or (recipe.model if recipe is not None else None)
    if not spec:
        raise CheckpointError(f"{data.path} carries neither a model spec nor a recipe; it cannot be rebuilt")
    return recipe, spec


def build_checkpoint_model(
    data: CheckpointData, weights: dict[str, Tensor], *, recipe: Any, spec: Any, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Build the model of ``spec`` with ``weights`` (one of ``data.model`` / ``data.ema``) for inference.

    Args:
        data: the checkpoint (named in error messages).
        weights: the state dict to load.
        recipe: its recipe (its ``[runtime.backends]`` are pinned), or None.
        spec: the model spec (:func:`checkpoint_recipe`).
        device: where to put the model.

    Returns:
        The backbone in eval mode without gradients.

    Raises:
        CheckpointError: the weights do not fit the spec.
    """
    from hourglass.nn.attention import pin_backends
    from hourglass.registry import MODEL

    # Built for real (not on "meta"): non-persistent buffers must be computed, not loaded.
    with torch.device(device):
        model = MODEL.build(spec)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{data.path}: the weights do not fit the stored model spec ({exc})") from None
    if recipe is not None:
        pin_backends(model, recipe.runtime.backends)
    return model.to(device).eval().requires_grad_(False)
