"""Checks of the ``tracker`` family (private): a tracker started, fed and finished as the trainer does, twice."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel

from hourglass.registry import Registry
from hourglass.spec import Problem
from hourglass.testing._common import fail

__all__ = ["check_tracker"]

#: what the check passes as the resolved recipe
_RECIPE = {"model": {"type": "hdit", "levels": [{"depth": 1, "width": 32}]}, "train": {"steps": 3, "lr": 5e-4}}


def _record(step: int) -> dict[str, Any]:
    """A log record like the trainer's; step 2's is a diverged one (a NaN loss, strings)."""
    if step == 2:
        return {"loss": math.nan, "bad_steps": 2, "event": "diverged", "message": "training diverged"}
    return {"loss": 1.0 / step, "lr": 5e-4, "grad_norm": 0.25, "images_per_sec": 12.5, "bad_steps": 0, "epoch": 0}


def check_tracker(registry: Registry, spec: BaseModel, context: dict[str, Any], seed: int) -> list[str]:
    """Built from ``spec``, with no problem from ``availability_problems(spec)`` (a list of
    :class:`~hourglass.spec.Problem`); then, in a fresh run directory, the trainer's calls: ``start(run_dir,
    recipe_data, None)``, ``log`` of steps 1 and 2 (step 2 a diverged record: a NaN loss and the strings
    ``event`` and ``message``), ``log_image(2, "samples", png)``, ``finish()``; then a resumed session on
    a new instance, ``start(run_dir, recipe_data, 1)``, ``log`` of steps 2 and 3, ``log_image(3, ...)``,
    ``finish()``. Every call returns ``None`` without raising, and ``log`` leaves the metrics it is
    given unchanged (every tracker of a run gets the same mapping)."""
    fam, name = registry.family, spec.type  # type: ignore[attr-defined]
    cls = registry.get(name)
    problems = cls.availability_problems(spec)
    if not isinstance(problems, list) or not all(isinstance(p, Problem) for p in problems):
        raise fail(fam, name, "tracker", f"availability_problems returned {problems!r}, not a list of Problem")
    if problems:
        raise fail(fam, name, "tracker", f"it cannot start here: {problems[0].text}")

    def call(what: str, fn: Any, *args: Any) -> None:
        try:
            result = fn(*args)
        except Exception as exc:
            raise fail(fam, name, "tracker", f"{what} raised {type(exc).__name__}: {exc}") from exc
        if result is not None:
            raise fail(fam, name, "tracker", f"{what} returned {result!r}; tracker methods return None")

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        png = run_dir / "samples" / "grid.png"
        png.parent.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)).save(png)
        for resumed, steps in ((None, (1, 2)), (1, (2, 3))):
            try:
                tracker = registry.build(spec, **context)
            except Exception as exc:
                raise fail(fam, name, "tracker", f"building it from {spec!r} raised {type(exc).__name__}: {exc}") from exc
            session = "a new run" if resumed is None else f"a run resumed at step {resumed}"
            call(f"start() of {session}", tracker.start, run_dir, copy.deepcopy(_RECIPE), resumed)
            for step in steps:
                metrics = _record(step)
                call(f"log({step}, ...) of {session}", tracker.log, step, metrics)
                if metrics.keys() != _record(step).keys() or any(
                    str(metrics[k]) != str(v) for k, v in _record(step).items()
                ):
                    raise fail(fam, name, "tracker", f"log({step}, metrics) changed the metrics it was given; "
                               "every tracker of a run gets the same mapping (copy it before changing it)")
            call(f"log_image({steps[-1]}, 'samples', path) of {session}", tracker.log_image, steps[-1], "samples", png)
            call(f"finish() of {session}", tracker.finish)
    return ["tracker"]
