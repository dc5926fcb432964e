"""``wandb``: a Weights & Biases run (``pip install "hourglass-diffusion[wandb]"``).

Its local files go to ``run_dir/wandb``; ``mode = "offline"`` (or ``WANDB_MODE=offline``) keeps
everything there, to upload later with ``wandb sync``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from hourglass.registry import TRACKER
from hourglass.spec import Spec
from hourglass.trackers._base import SkipLogged, Tracker, TrackerError, load_state, scalars

__all__ = ["WandbSpec", "WandbTracker"]


class WandbSpec(Spec):
    """The W&B project and run to log to."""

    type: Literal["wandb"] = "wandb"
    project: str = Field("hourglass", min_length=1, description="W&B project")
    entity: str | None = Field(None, description="W&B team or user (default: your default entity)")
    name: str | None = Field(None, description="run name (default: the run directory's name)")
    tags: tuple[str, ...] = Field((), description="run tags")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="online, offline (files only, under run_dir/wandb) or disabled; default: WANDB_MODE, else online"
    )


@TRACKER.register("wandb")
class WandbTracker(Tracker):
    """Metrics (``run.log(metrics, step=step)``), sample grids (``wandb.Image``) and the resolved
    recipe as the run's config, in a W&B run.

    The run id is kept in ``run_dir/trackers/wandb.json``: a resumed training run continues the
    same W&B run (``resume="allow"``), and the steps that run already logged (after the checkpoint
    it restarts from) are not logged again. W&B cannot delete logged steps, so their values stay
    those of the first try.
    """

    Spec = WandbSpec
    requires = ("wandb",)
    install = 'pip install "hourglass-diffusion[wandb]"'

    def __init__(self, spec: WandbSpec) -> None:
        super().__init__(spec)
        self._run: Any = None
        self._steps: SkipLogged | None = None

    def start(self, run_dir: Path, recipe_data: dict[str, Any], resumed_step: int | None) -> None:
        """``wandb.init`` a new run, or the stored one when resuming."""
        import wandb

        s, run_dir = self.spec, Path(run_dir)
        state = load_state(run_dir, "wandb") if resumed_step is not None else {}
        run_id = state.get("run_id") or None  # None: wandb draws a new id
        resuming = run_id is not None
        try:
            self._run = wandb.init(
                project=s.project, entity=s.entity, name=s.name or run_dir.resolve().name, tags=list(s.tags) or None,
                mode=s.mode, dir=str(run_dir), id=run_id, resume="allow", config=None if resuming else recipe_data,
            )
        except Exception as exc:
            raise TrackerError(f"the wandb tracker could not start its run: {type(exc).__name__}: {exc}. Log in "
                               "with `wandb login`, or set mode = \"offline\" in its [[train.trackers]] table") from exc
        if resuming:
            self._run.config.update(recipe_data, allow_val_change=True)
        self._steps = SkipLogged(run_dir, "wandb", {**state, "run_id": self._run.id})

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """``run.log`` the numeric metrics at ``step`` (skipped if an earlier try of the run logged it)."""
        if self._steps is not None and self._steps.take(step):
            self._run.log(scalars(metrics), step=int(step))

    def log_image(self, step: int, name: str, path: Path) -> None:
        """``run.log({name: wandb.Image(path)}, step=step)``."""
        import wandb

        if self._steps is not None and self._steps.take(step):
            self._run.log({name: wandb.Image(str(path))}, step=int(step))

    def finish(self) -> None:
        """``run.finish()``."""
        if self._run is not None:
            self._run.finish()
            self._run = None
