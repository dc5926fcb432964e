"""Experiment trackers: the ``tracker`` family, where training logs its metrics and sample grids.

A recipe lists them in ``[train] trackers`` (default ``["jsonl"]``: ``metrics.jsonl``); only rank 0
logs. Built-ins: ``jsonl``, ``tensorboard`` (needs ``tensorboard``), ``wandb`` and ``mlflow``
(optional extras, imported only when such a tracker starts). A plugin adds one by registering a
:class:`Tracker` subclass in :data:`hourglass.registry.TRACKER`.
"""

from __future__ import annotations

from hourglass.trackers._base import (
    STATE_DIR,
    SkipLogged,
    Tracker,
    TrackerError,
    flatten,
    load_state,
    save_state,
    scalars,
)
from hourglass.trackers._set import TrackerSet, open_trackers, tracker_problems

__all__ = [
    "Tracker", "TrackerError", "TrackerSet", "open_trackers", "tracker_problems", "SkipLogged",
    "scalars", "flatten", "load_state", "save_state", "STATE_DIR",
]
