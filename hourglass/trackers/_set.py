"""The trackers of one training run, started together: what :meth:`hourglass.train.Trainer.fit` logs to."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hourglass.registry import TRACKER
from hourglass.trackers._base import Tracker, TrackerError

__all__ = ["TrackerSet", "open_trackers", "tracker_problems"]


def tracker_problems(specs: Sequence[Any]) -> list[Any]:
    """Every tracker's :meth:`~hourglass.trackers.Tracker.availability_problems`, under ``[i]`` (a missing package)."""
    return [p.under(f"[{i}]") for i, spec in enumerate(specs)
            for p in TRACKER.get(spec.type).availability_problems(spec)]


class TrackerSet:
    """Started trackers, called together (an empty set does nothing: the ranks other than 0).

    Args:
        trackers: started :class:`~hourglass.trackers.Tracker` instances.
    """

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    def log(self, step: int, **metrics: Any) -> None:
        """Log ``metrics`` (name -> float, or a string such as ``event``) at optimizer step ``step``."""
        for tracker in self.trackers:
            tracker.log(int(step), metrics)

    def log_image(self, step: int, name: str, path: Path | None) -> Path | None:
        """Log the grid at ``path`` (nothing when ``None``); returns ``path``."""
        if path is not None:
            for tracker in self.trackers:
                tracker.log_image(int(step), name, Path(path))
        return path

    def close(self) -> None:
        """``finish()`` every tracker (all of them, even when one raises; the first error is raised)."""
        error: BaseException | None = None
        for tracker in self.trackers:
            try:
                tracker.finish()
            except Exception as exc:
                error = error or exc
        self.trackers = []
        if error is not None:
            raise error


def open_trackers(
    specs: Sequence[Any], run_dir: str | os.PathLike, recipe_data: dict[str, Any], *, enabled: bool = True,
    resumed_step: int | None = None,
) -> TrackerSet:
    """Build and start the trackers of ``specs`` (a recipe's ``train.trackers``) on ``run_dir``.

    Args:
        specs: tracker specs (or names).
        run_dir: the run directory (created if missing).
        recipe_data: the resolved recipe as plain data (a run's config / parameters).
        enabled: ``False`` on ranks other than 0: nothing is started and the set logs nothing.
        resumed_step: the checkpoint step a resumed run restarts from; ``None`` for a new run.

    Returns:
        The started :class:`TrackerSet`.

    Raises:
        TrackerError: a tracker's package is missing or it could not start (the ones started are finished).
    """
    if not enabled:
        return TrackerSet()
    specs = [TRACKER.validate(s) for s in specs]
    problems = tracker_problems(specs)
    if problems:
        raise TrackerError(f"train.trackers{problems[0].path}: {problems[0].text}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = TrackerSet()
    try:
        for spec in specs:
            tracker = TRACKER.build(spec)
            tracker.start(run_dir, recipe_data, resumed_step)
            started.trackers.append(tracker)
    except BaseException:
        started.close()
        raise
    return started
