"""``hourglass sample --mapping-cond FILE.npy --cond-image IMAGE_OR_FOLDER``: conditions beyond the class, read
for every image drawn (private to the sample command)."""

from __future__ import annotations

import argparse
from typing import Any

from hourglass.cli._common import CLIError

__all__ = ["add_condition_arguments", "read_conditions"]


def add_condition_arguments(parser: argparse.ArgumentParser) -> None:
    """``--mapping-cond`` and ``--cond-image``."""
    parser.add_argument(
        "--mapping-cond",
        metavar="FILE.npy",
        help="per-sample vectors of a model trained on them: a .npy of shape (D,) or (k, D), cycled "
        "over the images (zeroed in guidance's unconditional branch)",
    )
    parser.add_argument(
        "--cond-image",
        metavar="IMAGE_OR_FOLDER",
        help="condition images of a [conditioning] model (e.g. the low-resolution inputs of "
        "super-resolution), cycled over the images; read at the first one's size",
    )


def read_conditions(args: argparse.Namespace, pipe: Any, n: int) -> dict[str, Any]:
    """``{"mapping_cond": (n, D), "cond_image": (n, C', h, w)}`` (those given), one row per image drawn.

    Raises:
        CLIError: a file that cannot be read, or a condition the model does not take.
    """
    import numpy as np
    import torch
    from PIL import Image

    from hourglass.pipeline import PipelineError, load_images
    from hourglass.pipeline.conditions import call_conditions, conditioning_of
    from hourglass.pipeline.images import list_images

    vectors = images = None
    if args.mapping_cond is not None:
        try:
            vectors = torch.from_numpy(np.load(args.mapping_cond, allow_pickle=False).astype(np.float32))
        except (OSError, ValueError) as exc:
            raise CLIError(
                f"--mapping-cond {args.mapping_cond}: not a readable .npy array ({type(exc).__name__}); "
                "give a .npy of shape (D,) or (k, D)"
            ) from None
    if args.cond_image is not None:
        spec = conditioning_of(pipe.recipe)
        if spec is None or not spec.image_channels:
            raise CLIError("--cond-image needs a model trained with [conditioning] image_channels; drop it")
        try:
            paths = list_images(args.cond_image)
            with Image.open(paths[0]) as first:
                size = (first.height, first.width)
            images = load_images(paths, size=size, channels=spec.image_channels)
        except (PipelineError, OSError) as exc:
            raise CLIError(f"--cond-image: {exc}") from None
    try:
        return call_conditions(pipe.model, pipe.recipe, n, vectors, images) or {}
    except PipelineError as exc:
        raise CLIError(
            str(exc)
            .replace("pass mapping_cond=...", "pass --mapping-cond FILE.npy")
            .replace("pass cond_image=...", "pass --cond-image IMAGE_OR_FOLDER")
        ) from None
