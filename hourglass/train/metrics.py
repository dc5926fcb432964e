"""Training metrics: one JSON object per line in ``run_dir/metrics.jsonl`` (what the ``jsonl`` tracker writes).

Only rank 0 writes. On resume, records newer than the resumed step (logged by a run that died
before its next checkpoint) are dropped, so the file reads like one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "read_metrics"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


class MetricsLogger:
    """Appends metric records to ``metrics.jsonl`` (TensorBoard is a tracker of its own: ``tensorboard``).

    Args:
        run_dir: the run directory.
        enabled: False on non-zero ranks: every call is a no-op.
        resume_step: when resuming, drop existing records whose ``step`` is greater.
    """

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool = True, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._file = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a", buffering=1)

    def log(self, step: int, **values: Any) -> None:
        """Append one record ``{"step": step, **values}``."""
        if not self.enabled or self._file is None:
            return
        record = {"step": int(step), **{k: _clean(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        """Flush and close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` file (a torn last line, from a crash, is ignored)."""
    records = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
