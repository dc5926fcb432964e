"""``tensorboard``: TensorBoard event files under ``run_dir/tensorboard`` (``torch.utils.tensorboard``).

Needs the ``tensorboard`` package (``pip install "hourglass-diffusion[tensorboard]"``). View with
``tensorboard --logdir runs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from hourglass.registry import TRACKER
from hourglass.spec import Spec
from hourglass.trackers._base import Tracker, scalars

__all__ = ["TensorBoardSpec", "TensorBoardTracker"]


class TensorBoardSpec(Spec):
    """Where the event files go, inside the run directory."""

    type: Literal["tensorboard"] = "tensorboard"
    log_dir: str = Field("tensorboard", min_length=1, description="folder of the event files, relative to the run directory")

    @field_validator("log_dir")
    @classmethod
    def _inside_run_dir(cls, value: str) -> str:
        parts = PurePosixPath(value.replace("\\", "/")).parts
        if value.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise ValueError(f"log_dir {value!r} must be a folder inside the run directory, e.g. \"tensorboard\"")
        return value


@TRACKER.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Scalars (every numeric metric, tagged by its name) and sample grids (tag ``samples``) as
    TensorBoard events, written by ``torch.utils.tensorboard.SummaryWriter``.

    A resumed run writes into the same folder with ``purge_step = resumed_step + 1``: TensorBoard
    hides what the killed run logged after its last checkpoint, so no step shows twice. A new run
    in the directory deletes the folder's old event files first.
    """

    Spec = TensorBoardSpec
    requires = ("tensorboard",)
    install = 'pip install "hourglass-diffusion[tensorboard]"'

    def __init__(self, spec: TensorBoardSpec) -> None:
        super().__init__(spec)
        self._writer: Any = None

    def start(self, run_dir: Path, recipe_data: dict[str, Any], resumed_step: int | None) -> None:
        """Open a ``SummaryWriter`` on ``run_dir / log_dir``."""
        from torch.utils.tensorboard import SummaryWriter

        log_dir = Path(run_dir) / self.spec.log_dir
        if resumed_step is None and log_dir.is_dir():
            for old in log_dir.glob("events.out.tfevents.*"):
                old.unlink()
        purge = None if resumed_step is None else int(resumed_step) + 1
        self._writer = SummaryWriter(str(log_dir), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """``add_scalar(name, value, step)`` for each numeric metric."""
        for key, value in scalars(metrics).items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def log_image(self, step: int, name: str, path: Path) -> None:
        """``add_image(name, grid, step)`` with the PNG's pixels (RGB, ``HWC``)."""
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self._writer.add_image(name, pixels, step, dataformats="HWC")
        self._writer.flush()

    def finish(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
