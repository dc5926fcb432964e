"""``mlflow``: an MLflow run (``pip install "hourglass-diffusion[mlflow]"``, which installs ``mlflow-skinny``).

The tracking server or store is ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``, else MLflow's
own default). A local file store (``tracking_uri = "file:/path/to/mlruns"``) needs
``MLFLOW_ALLOW_FILE_STORE=true`` with MLflow 3.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from hourglass.registry import TRACKER
from hourglass.spec import Spec
from hourglass.trackers._base import SkipLogged, Tracker, TrackerError, flatten, load_state, scalars

__all__ = ["MlflowSpec", "MlflowTracker"]

#: longest parameter value logged (MLflow refuses longer ones); longer values are cut
_MAX_PARAM = 500


class MlflowSpec(Spec):
    """The MLflow store, experiment and run to log to."""

    type: Literal["mlflow"] = "mlflow"
    tracking_uri: str | None = Field(
        None, description="tracking server or store, e.g. http://host:5000 or file:/abs/mlruns; default: "
        "MLFLOW_TRACKING_URI, else MLflow's default",
    )
    experiment: str = Field("hourglass", min_length=1, description="experiment name (created when missing)")
    run_name: str | None = Field(None, description="run name (default: the run directory's name)")


@TRACKER.register("mlflow")
class MlflowTracker(Tracker):
    """Metrics (one MLflow metric per name, by step), sample grids (artifacts under
    ``samples/step_XXXXXXXX/``), the resolved recipe as flat parameters (``train.lr``, ...) and
    ``recipe.toml`` as an artifact, in an MLflow run.

    The run id is kept in ``run_dir/trackers/mlflow.json``: a resumed training run continues the
    same MLflow run, and the steps it already logged (after the checkpoint it restarts from) are not
    logged again. Parameters are logged when the run is created (MLflow refuses changed values).
    """

    Spec = MlflowSpec
    requires = ("mlflow",)
    install = 'pip install "hourglass-diffusion[mlflow]"'

    def __init__(self, spec: MlflowSpec) -> None:
        super().__init__(spec)
        self._client: Any = None
        self._run_id: str | None = None
        self._steps: SkipLogged | None = None

    def start(self, run_dir: Path, recipe_data: dict[str, Any], resumed_step: int | None) -> None:
        """Create the experiment and run (or reopen the stored run when resuming)."""
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        s, run_dir = self.spec, Path(run_dir)
        state = load_state(run_dir, "mlflow") if resumed_step is not None else {}
        try:
            client = MlflowClient(tracking_uri=s.tracking_uri)
            run_id = state.get("run_id")
            if run_id and state.get("tracking_uri") == client.tracking_uri:
                client.update_run(run_id, status="RUNNING")
            else:
                state = {}
                experiment = client.get_experiment_by_name(s.experiment)
                experiment_id = experiment.experiment_id if experiment else client.create_experiment(s.experiment)
                run_id = client.create_run(experiment_id, run_name=s.run_name or run_dir.resolve().name).info.run_id
                params = [Param(k, str(v)[:_MAX_PARAM]) for k, v in flatten(recipe_data).items()]
                client.log_batch(run_id, params=params)
                if (run_dir / "recipe.toml").is_file():
                    client.log_artifact(run_id, str(run_dir / "recipe.toml"))
        except Exception as exc:
            raise TrackerError(
                f"the mlflow tracker could not start its run at {s.tracking_uri or 'the default tracking URI'}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Set tracking_uri in its "
                "[[train.trackers]] table (a file: store needs MLFLOW_ALLOW_FILE_STORE=true)"
            ) from exc
        self._client, self._run_id = client, run_id
        self._steps = SkipLogged(run_dir, "mlflow", {**state, "run_id": run_id, "tracking_uri": client.tracking_uri})

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """``log_batch`` the numeric metrics at ``step`` (skipped if an earlier try of the run logged it)."""
        from mlflow.entities import Metric

        if self._steps is not None and self._steps.take(step):
            now = int(time.time() * 1000)
            batch = [Metric(k, v, now, int(step)) for k, v in scalars(metrics).items()]
            self._client.log_batch(self._run_id, metrics=batch)

    def log_image(self, step: int, name: str, path: Path) -> None:
        """``log_artifact(path, f"{name}/step_XXXXXXXX")``."""
        if self._steps is not None and self._steps.take(step):
            self._client.log_artifact(self._run_id, str(path), f"{name}/step_{int(step):08d}")

    def finish(self) -> None:
        """Mark the run finished."""
        if self._client is not None:
            self._client.set_terminated(self._run_id)
            self._client = None
