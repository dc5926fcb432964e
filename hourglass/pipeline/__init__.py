"""Sampling from Python: a trained run, a checkpoint or a converted folder as one object.

:func:`load` reads a run directory (its newest valid checkpoint), a checkpoint file, or a folder
written by ``hourglass convert`` (``recipe.toml`` + ``model.safetensors``) into a :class:`Pipeline`
holding the recipe, the model (the EMA weights unless ``ema=False``) and its denoiser::

    import hourglass

    pipe = hourglass.load("runs/quickstart")
    images = pipe.sample(12, classes=[0, 4], cfg=3.0, steps=30, seed=0)  # (12, C, H, W) in [-1, 1]
    pipe.save_grid(images, "grid.png")
    edited = pipe.image_to_image(images, strength=0.5, seed=1)          # SDEdit
    filled = pipe.inpaint(images, mask, seed=2)                          # mask: 1 = generate, 0 = keep

Every call returns float32 CPU tensors in ``[-1, 1]`` (nominally; :meth:`Pipeline.to_pil` clips).
The sampler, schedule, steps, guidance scale, count, batch size and seed default to the run's
``[sample]`` section. Image ``i`` of a call uses seed ``seed + i`` for its starting noise and for all
the noise a stochastic sampler adds (as :mod:`hourglass.train.sampling` does for training grids and
``hourglass sample``), so an image does not depend on ``batch_size`` or on the other images of the
call. Sampling runs in float32 unless ``dtype`` says otherwise (bfloat16 autocast picks kernels by
batch size, so its images change with ``batch_size``).

A recipe with a ``[vae]`` (latent diffusion) loads its VAE too (from the folder or Hugging Face cache
the recipe names; ``load(..., vae=...)`` names another): the calls then take and return images, with
the model working on the VAE's latents in between.

Loading reads safetensors files only (:func:`hourglass.train.load_checkpoint`): nothing is unpickled.
"""

from hourglass.pipeline._errors import PipelineError
from hourglass.pipeline.core import Pipeline
from hourglass.pipeline.images import comparison_grid, list_images, load_images, load_masks, to_pil
from hourglass.pipeline.sources import load, run_dir_of
from hourglass.train.checkpoint import CLASSES_FILE, read_class_names

__all__ = [
    "CLASSES_FILE", "Pipeline", "PipelineError", "load", "read_class_names", "run_dir_of",
    "list_images", "load_images", "load_masks", "to_pil", "comparison_grid",
]
