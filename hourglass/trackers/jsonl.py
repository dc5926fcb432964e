"""``jsonl``: one JSON object per log line in ``run_dir/metrics.jsonl`` (the default tracker).

The file is what ``hourglass export``'s model cards, :attr:`hourglass.train.TrainResult.loss` of a
finished run and the tests read; its format is that of :class:`hourglass.train.MetricsLogger`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from hourglass.registry import TRACKER
from hourglass.spec import Spec
from hourglass.trackers._base import Tracker

__all__ = ["JsonlSpec", "JsonlTracker"]


class JsonlSpec(Spec):
    """``jsonl`` has no options: the file is always ``metrics.jsonl`` in the run directory."""

    type: Literal["jsonl"] = "jsonl"


@TRACKER.register("jsonl")
class JsonlTracker(Tracker):
    """Metrics as JSON lines in ``run_dir/metrics.jsonl``: ``{"step": 100, "loss": 0.41, "lr": 0.0005, ...}``.

    Every value of a record is kept (strings too: ``event`` and ``message`` when training diverges;
    NaN and inf as strings). A resumed run drops the records after the checkpoint it restarts from,
    so the file reads like one uninterrupted run; a new run in the directory starts the file anew.
    Sample grids are not logged: they are files under ``samples/`` already.
    """

    Spec = JsonlSpec

    def __init__(self, spec: JsonlSpec) -> None:
        super().__init__(spec)
        self._logger: Any = None

    def start(self, run_dir: Path, recipe_data: dict[str, Any], resumed_step: int | None) -> None:
        """Open ``metrics.jsonl`` (truncated to ``resumed_step`` when resuming, emptied for a new run)."""
        from hourglass.train.metrics import MetricsLogger

        self._logger = MetricsLogger(run_dir, resume_step=resumed_step)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append ``{"step": step, **metrics}``."""
        self._logger.log(step, **metrics)

    def log_image(self, step: int, name: str, path: Path) -> None:
        """Nothing: the grid is already a file of the run directory."""

    def finish(self) -> None:
        """Close the file."""
        if self._logger is not None:
            self._logger.close()
            self._logger = None
