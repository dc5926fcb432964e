"""The contract of the ``tracker`` family: where the trainer's metrics and sample grids are logged."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hourglass.registry import TRACKER, Contract
from hourglass.spec import Problem

__all__ = ["Tracker", "TrackerError", "SkipLogged", "scalars", "flatten", "load_state", "save_state", "STATE_DIR"]

#: folder of the run directory where trackers keep what a resumed run needs (a run id, the last step logged)
STATE_DIR = "trackers"


class TrackerError(RuntimeError):
    """A tracker could not start or log (its service refused, a store it cannot write, ...)."""


class Tracker(Contract):
    """Contract of the ``tracker`` family: an experiment tracker the trainer logs to (rank 0 only).

    Built as ``cls(spec)`` from its spec (a ``[train] trackers`` entry), then, once per call of
    :meth:`hourglass.train.Trainer.fit`:

    * :meth:`start` ``(run_dir, recipe_data, resumed_step)``: opens (or, when ``resumed_step`` is an
      int, continues) the run;
    * :meth:`log` ``(step, metrics)`` every ``train.log_every`` steps and at the last step;
    * :meth:`log_image` ``(step, name, path)`` after each sample grid is written (a PNG file);
    * :meth:`finish` once at the end, also when training stopped on an error or a signal.

    A resumed run restarts at the newest checkpoint, which may be older than the last step logged
    (a run killed between two checkpoints): the steps after ``resumed_step`` are trained and logged
    again. A tracker must not show them twice: it drops what it logged after ``resumed_step`` (the
    ``jsonl`` file, TensorBoard's purge) or, when its store cannot delete, skips steps it already
    logged (:func:`load_state` / :func:`save_state` keep its run id and last step in the run
    directory).

    Class attributes declared for ``hourglass show`` and for availability checks:

    * ``requires``: modules it imports that hourglass does not depend on (e.g. ``("wandb",)``);
    * ``install``: the pip command that installs them.
    """

    #: importable module names it needs beyond hourglass's own dependencies
    requires: tuple[str, ...] = ()
    #: how to install them (said by the error when one is missing)
    install: str = ""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """``{"requires": [...], "install": "..."}`` when it needs optional packages, else ``{}``."""
        return {"requires": list(cls.requires), "install": cls.install} if cls.requires else {}

    @classmethod
    def contract_problem(cls) -> str | None:
        """Why the class cannot be registered: ``requires`` not a tuple of module names, or no ``install`` for them."""
        if not isinstance(cls.requires, tuple) or not all(isinstance(m, str) and m for m in cls.requires):
            return f"requires must be a tuple of module names, got {cls.requires!r}"
        if cls.requires and not (isinstance(cls.install, str) and cls.install.strip()):
            return "a tracker with requires must set install (the pip command that installs them)"
        return None

    @classmethod
    def availability_problems(cls, spec: Any) -> list[Problem]:
        """What keeps the tracker of ``spec`` from starting here: its ``requires`` not importable.

        Cheap (nothing is imported). Run by ``hourglass validate --data-check``, ``hourglass train``
        and the :class:`~hourglass.train.Trainer` before anything is built; paths are relative to
        the tracker's spec.

        Returns:
            One :class:`~hourglass.spec.Problem` per missing module; ``[]`` when it can start.
        """
        return [
            Problem("", f"the {spec.type} tracker needs the {module} package, which is not installed",
                    f"{cls.install}, or remove {spec.type!r} from train.trackers")
            for module in cls.requires if importlib.util.find_spec(module) is None
        ]

    def start(self, run_dir: Path, recipe_data: dict[str, Any], resumed_step: int | None) -> None:
        """Open the run: ``run_dir`` exists; ``recipe_data`` is the resolved recipe as plain data;
        ``resumed_step`` is the checkpoint step a resumed run restarts from (``None``: a new run)."""
        raise NotImplementedError(f"{type(self).__name__} must implement start()")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log the metrics of optimizer step ``step`` (>= 1). Values are floats (NaN and inf
        included); a record may also hold strings (``event``, ``message`` when training diverges),
        which trackers of numbers ignore (see :func:`scalars`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement log()")

    def log_image(self, step: int, name: str, path: Path) -> None:
        """Log the sample grid PNG at ``path`` (``samples/step_XXXXXXXX.png`` or ``samples/final.png``)
        of step ``step`` under ``name`` (``"samples"``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement log_image()")

    def finish(self) -> None:
        """Flush and close the run (called once, also after an error or a signal)."""
        raise NotImplementedError(f"{type(self).__name__} must implement finish()")


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of ``metrics`` as floats (tensors' ``.item()``; bools and strings left out)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as one level of dotted keys: ``{"model": {"levels": [{"depth": 2}]}}``
    -> ``{"model.levels.0.depth": 2}`` (what trackers with flat parameters record)."""
    if isinstance(data, Mapping):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(data)]
    else:
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def _state_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / STATE_DIR / f"{name}.json"


def load_state(run_dir: Path, name: str) -> dict[str, Any]:
    """What tracker ``name`` saved in ``run_dir/trackers/<name>.json`` (``{}`` when nothing or unreadable)."""
    try:
        state = json.loads(_state_path(run_dir, name).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(run_dir: Path, name: str, state: dict[str, Any]) -> None:
    """Write ``state`` (JSON data: a run id, the last step logged) to ``run_dir/trackers/<name>.json`` atomically."""
    path = _state_path(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state) + "\n")
    os.replace(tmp, path)


class SkipLogged:
    """Step bookkeeping of a tracker whose store cannot delete points: steps up to the last one logged
    by an earlier session of the run are skipped, and each new step is saved before it is logged
    (a crash may lose that point, never duplicate it).

    Args:
        run_dir: the run directory.
        name: the tracker's name (its state file).
        state: the state loaded at start (``last_step`` is read from it).
    """

    def __init__(self, run_dir: Path, name: str, state: dict[str, Any]) -> None:
        self.run_dir, self.name, self.state = Path(run_dir), name, dict(state)
        last = self.state.get("last_step", 0)
        self.state["last_step"] = int(last) if isinstance(last, (int, float)) and math.isfinite(last) else 0
        self._logged = self.state["last_step"]  # steps up to this one are already in the store
        save_state(self.run_dir, self.name, self.state)

    def take(self, step: int) -> bool:
        """Whether step ``step`` is new to the store (then it is recorded as logged)."""
        if step <= self._logged:
            return False
        if step > self.state["last_step"]:
            self.state["last_step"] = int(step)
            save_state(self.run_dir, self.name, self.state)
        return True


TRACKER.set_contract(Tracker)
