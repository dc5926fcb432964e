"""Training checkpoints: one safetensors file per save, written atomically, never unpickled.

File ``run_dir/checkpoints/step_00001000.safetensors`` holds tensors under these prefixes:

- ``model.*``: the trained model's ``state_dict``; ``ema.*``: the EMA model's;
- ``optimizer.state.<param_id>.<key>``: the optimizer's tensor state (``exp_avg``, ``step``, ...);
- ``rng.torch_cpu`` and ``rng.cuda.<device>``: torch's generator states (``uint8``);
- ``data.<key>``: the data loader's order state (``int64``).

and string metadata: ``format`` (``"hourglass-checkpoint"``), ``format_version``, ``step``,
``recipe`` (the resolved recipe as TOML), ``model_spec`` (JSON), ``optimizer`` (JSON: the param
groups and the non-tensor state), ``extra`` (JSON: counters), ``sha256`` (digest of every tensor,
checked on load), ``hourglass_version``, ``class_names`` (JSON list, one name per class id, when
the data names its classes; the run directory also holds them as ``classes.json``) and
``plugins`` (JSON: ``{"attention:dinat": "hourglass-dinat 0.1.0"}``, the plugin components the
model needs, named when a machine without them loads it).

A file that is not a checkpoint (a recipe, an image, a torch ``.pth``, an empty file, ...) is
recognised from its first bytes and named in the error, with what to do instead.

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

from hourglass._files import SAFETENSORS, TORCH_KINDS, file_kind, read_head

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
    "read_class_names",
    "CLASSES_FILE",
    "checkpoint_recipe",
    "build_checkpoint_model",
]

FORMAT = "hourglass-checkpoint"
FORMAT_VERSION = "1"
WEIGHTS_FORMAT = "hourglass-weights"  # inference weights only (``hourglass convert``): model tensors + recipe
WEIGHTS_FILE = "model.safetensors"
CLASSES_FILE = "classes.json"  # the run directory's class names: a JSON list, one name per class id
_MAX_HEADER = 100 << 20  # safetensors refuses larger headers
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
        class_names: one name per class id, when the run recorded them (None otherwise).
        plugins: plugin components the model needs, ``{"attention:dinat": "hourglass-dinat 0.1.0"}``.
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
    class_names: list[str] | None = None
    plugins: dict[str, str] = field(default_factory=dict)


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
    class_names: list[str] | None = None,
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
        class_names: one name per class id (stored as metadata ``class_names``).

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
        "plugins": json.dumps(_plugin_components(model_spec or {})),
    }
    if class_names is not None:
        metadata["class_names"] = json.dumps([str(n) for n in class_names])
    path = Path(path)
    _atomic_write(path, safetensors.torch.save(tensors, metadata=metadata))
    return path


def _plugin_components(model_spec: dict[str, Any]) -> dict[str, str]:
    """``{"family:name": "distribution version"}`` of the model's components that plugins provide."""
    from hourglass.recipe.problems import components_in
    from hourglass.registry import MODEL, plugin_statuses

    if not model_spec:
        return {}
    versions = {s.distribution or s.name: s.version for s in plugin_statuses()}
    out: dict[str, str] = {}
    for _, registry, name in components_in(MODEL, model_spec):
        if name in registry and registry.provider(name) != "hourglass":
            provider = registry.provider(name)
            version = versions.get(provider)
            out[f"{registry.family}:{name}"] = f"{provider} {version}" if version else provider
    return out


# -- reading ---------------------------------------------------------------------------------------
_TORCH_ADVICE = ("hourglass reads safetensors checkpoints (written by `hourglass train`) and never unpickles "
                 "files; convert a k-diffusion checkpoint with `hourglass convert k-diffusion CONFIG.json {path} "
                 "OUT_DIR`, then pass OUT_DIR")
_PASS = "pass a run directory written by `hourglass train` or one of its checkpoints/step_*.safetensors"


def _not_a_checkpoint(path: Path, head: bytes, size: int) -> str | None:
    """Why ``path`` is no safetensors checkpoint, judged from its first bytes (None: it may be one).

    Names an empty file, images, torch zip and pickle files, recipes (TOML), JSON and other text;
    anything else whose first bytes are no safetensors header is "not a safetensors checkpoint".
    """
    kind = file_kind(path, head, size)
    if kind == SAFETENSORS:
        return None  # possibly truncated or corrupt: read_checkpoint says which
    if kind == "an empty file":
        return (f"{path} is an empty file (0 bytes), not a checkpoint (truncated, or never written); delete it, "
                f"and {_PASS}")
    if kind in TORCH_KINDS:
        return f"{path} is {kind}, not a safetensors checkpoint; " + _TORCH_ADVICE.format(path=path)
    if kind == "a zip archive":
        return f"{path} is a zip archive, not a checkpoint; {_PASS}"
    if kind == "a recipe":
        return (f"{path} is a recipe, not a checkpoint: train it first with `hourglass train {path}`, then pass "
                f"its run directory (runs/{path.stem})")
    if kind == "a JSON file":
        return (f"{path} is a JSON file, not a checkpoint; {_PASS} (a k-diffusion config.json goes with its "
                "checkpoint to `hourglass convert k-diffusion CONFIG.json CHECKPOINT OUT_DIR`)")
    if kind is not None:
        return f"{path} is {kind}, not a checkpoint; {_PASS}"
    return (f"{path} is not a safetensors checkpoint: its first bytes ({head[:8].hex(' ')}) are neither a "
            f"safetensors header nor a known file type (corrupt, or another format); {_PASS}")


def _read_head(path: Path, n: int = 4096) -> tuple[bytes, int]:
    try:
        return read_head(path, n)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None


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
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt header (not a JSON object); delete it or pick an older checkpoint")
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


def _read_header_only(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, reading only its header."""
    head, size = _read_head(path, 8)
    if len(head) < 8:
        return _header(head, path)
    n = int.from_bytes(head[:8], "little")
    if n > min(size - 8, _MAX_HEADER):
        return _header(head, path)  # says "truncated"
    with open(path, "rb") as f:
        return _header(f.read(8 + n), path)


def _check_format(meta: dict[str, str], path: Path) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not an hourglass training checkpoint (metadata format={meta.get('format')!r}); "
            f"{_PASS}, or convert a k-diffusion checkpoint with `hourglass convert k-diffusion CONFIG.json {path} "
            "OUT_DIR`"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {meta.get('format_version')!r}; this hourglass reads "
            f"version {FORMAT_VERSION}: upgrade hourglass"
        )


def _names(text: str | None, where: str) -> list[str] | None:
    if text is None:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        names = None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{where}: the class names are not a JSON list of strings; delete them")
    return names


def read_checkpoint(path: str | os.PathLike, *, verify: bool = True, tensors: bool = True) -> CheckpointData:
    """Read and check a checkpoint file (tensors land on the CPU; nothing is unpickled).

    Args:
        path: a ``.safetensors`` checkpoint written by :func:`save_checkpoint`, or a weights-only
            file written by ``hourglass convert`` (step 0, no EMA, optimizer or RNG state).
        verify: recompute the SHA-256 of every tensor and compare it with the stored digest.
        tensors: False reads the metadata only (step, recipe, model spec, class names; the tensor
            dicts stay empty and nothing is verified): cheap, for showing a run.

    Returns:
        The checkpoint's content.

    Raises:
        CheckpointError: if the file is missing, truncated, corrupt or of another kind (a recipe,
            an image, a torch ``.pth``, ...: the message says which, and what to pass instead).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass it as a run directory (resolve_checkpoint) or pick a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a .safetensors file or a run directory")
    head, size = _read_head(path)
    why = _not_a_checkpoint(path, head, size)
    if why is not None:
        raise CheckpointError(why)
    if not tensors:
        meta = _read_header_only(path)
        if meta.get("format") == WEIGHTS_FORMAT:
            return _weights_data({}, meta, path)
        _check_format(meta, path)
        return _checkpoint_data(meta, {}, path)
    raw = path.read_bytes()
    meta = _header(raw, path)
    if meta.get("format") == WEIGHTS_FORMAT:
        return _read_weights(raw, meta, path)
    _check_format(meta, path)
    try:
        loaded = safetensors.torch.load(raw)
    except Exception as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); delete it or pick an older checkpoint") from None
    del raw
    if verify and _digest(loaded) != meta.get("sha256"):
        raise CheckpointError(
            f"{path} is corrupt (tensor checksum mismatch); delete it or pick an older checkpoint"
        )
    return _checkpoint_data(meta, loaded, path)


def _checkpoint_data(meta: dict[str, str], tensors: dict[str, Tensor], path: Path) -> CheckpointData:
    parts: dict[str, dict[str, Tensor]] = {"model": {}, "ema": {}, "rng": {}, "data": {}}
    for name, value in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix in parts:
            parts[prefix][rest] = value
    try:
        optimizer_meta = json.loads(meta.get("optimizer") or "null")
        optimizer = unflatten_optimizer_state(tensors, optimizer_meta) if optimizer_meta and tensors else None
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
            class_names=_names(meta.get("class_names"), str(path)),
            plugins=json.loads(meta.get("plugins") or "{}"),
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
    except Exception as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); convert the weights again") from None
    return _weights_data(tensors, meta, path)


def _weights_data(tensors: dict[str, Tensor], meta: dict[str, str], path: Path) -> CheckpointData:
    try:
        spec = json.loads(meta.get("model_spec") or "{}")
        plugins = json.loads(meta.get("plugins") or "{}")
    except ValueError as exc:
        raise CheckpointError(f"{path} has corrupt metadata ({exc}); convert the weights again") from None
    weights = meta.get("weights", "unknown")
    extra = {"source": meta.get("source", ""), "weights": weights if weights in ("ema", "raw") else "unknown"}
    return CheckpointData(step=0, model=tensors, recipe_toml=meta.get("recipe", ""), model_spec=spec, extra=extra,
                          path=path, format=WEIGHTS_FORMAT, class_names=_names(meta.get("class_names"), str(path)),
                          plugins=plugins)


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
    run_dir: str | os.PathLike, *, verify: bool = True, report: Callable[[str], None] | None = print,
    tensors: bool = True,
) -> CheckpointData | None:
    """The newest checkpoint of a run that reads back intact.

    Newer files that are truncated or corrupt are skipped, each reported by name through ``report``.

    Args:
        run_dir: the run directory (holding ``checkpoints/``).
        verify: check the tensor digests.
        report: called with one message per skipped file (None: silent).
        tensors: False reads metadata only (see :func:`read_checkpoint`).

    Returns:
        The checkpoint, or None when the run has no valid checkpoint.
    """
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return read_checkpoint(path, verify=verify, tensors=tensors)
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


# loading for inference lives in its own module; these names stay importable from here
from hourglass.train.inference import (  # noqa: E402
    build_checkpoint_model,
    checkpoint_recipe,
    load_checkpoint,
    read_class_names,
    resolve_checkpoint,
)
