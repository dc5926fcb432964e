"""Training: the loop, EMA, AdamW groups and schedules, atomic checkpoints, DDP, metrics, grids.

``train(recipe, run_dir)`` (or ``hourglass train RECIPE``) trains a recipe, resuming from the run
directory's newest valid checkpoint; :func:`load_checkpoint` loads a trained model for inference.
"""

from hourglass.train.checkpoint import (
    CheckpointData,
    CheckpointError,
    checkpoint_path,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint,
    read_class_names,
    resolve_checkpoint,
    save_checkpoint,
)
from hourglass.train.distributed import DistInfo, init_distributed
from hourglass.train.ema import EMA, ema_decay
from hourglass.train.images import make_grid, save_grid, save_image
from hourglass.train.metrics import MetricsLogger, read_metrics
from hourglass.train.optim import create_optimizer, lr_factor
from hourglass.train.sampling import class_ids, generate_images, iter_generate
from hourglass.train.trainer import TrainConfigError, Trainer, TrainingDiverged, TrainResult, train

__all__ = [
    "CheckpointData", "CheckpointError", "checkpoint_path", "find_latest_checkpoint", "list_checkpoints",
    "load_checkpoint", "read_checkpoint", "read_class_names", "resolve_checkpoint", "save_checkpoint", "class_ids",
    "DistInfo", "init_distributed", "EMA", "ema_decay", "make_grid", "save_grid", "save_image",
    "MetricsLogger", "read_metrics", "create_optimizer", "lr_factor", "generate_images", "iter_generate",
    "TrainConfigError", "Trainer", "TrainingDiverged", "TrainResult", "train",
]
