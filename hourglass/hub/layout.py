"""The layout of a pretrained folder: its file names, its ``config.json`` and :class:`PretrainedError`.

See :mod:`hourglass.hub` for what each file holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hourglass.train.checkpoint import CheckpointError

__all__ = [
    "PRETRAINED_FORMAT", "FORMAT_VERSION", "CONFIG_FILE", "WEIGHTS_FILE", "EMA_FILE", "RECIPE_FILE", "CLASSES_FILE",
    "CARD_FILE", "SAMPLES_FILE", "FOLDER_FILES", "PretrainedError", "is_pretrained_folder",
]

PRETRAINED_FORMAT = "hourglass-pretrained"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
RECIPE_FILE = "recipe.toml"
CLASSES_FILE = "classes.json"
CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
#: every file a pretrained folder may hold (an overwrite removes the ones it does not write again)
FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE, EMA_FILE, RECIPE_FILE, CLASSES_FILE, SAMPLES_FILE, CARD_FILE)
_WEIGHT_KINDS = ("raw", "ema", "unknown")
_WEIGHT_WORDS = {"raw": "the raw trained weights", "ema": "the EMA weights", "unknown": "the weights (EMA or not: not recorded)"}


class PretrainedError(CheckpointError):
    """A pretrained folder or Hub id that cannot be read, written or uploaded (one line: what, and the fix).

    A :class:`~hourglass.train.CheckpointError`, so the command line prints it without a traceback
    (exit status 2).
    """



def _read_config(folder: Path) -> dict[str, Any] | None:
    """``config.json`` of a pretrained folder, or None when the folder is not one."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return config if isinstance(config, dict) and config.get("format") == PRETRAINED_FORMAT else None


def is_pretrained_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding an hourglass ``config.json``."""
    path = Path(path)
    return path.is_dir() and _read_config(path) is not None


