"""Pretrained folders and the Hugging Face Hub: save a model as a folder, load one back, upload it.

A *pretrained folder* is what :meth:`Backbone.save_pretrained <hourglass.models.Backbone.save_pretrained>`,
``hourglass export`` and ``hourglass convert`` write, and what :func:`from_pretrained`,
:func:`hourglass.load`, ``hourglass sample`` and ``[train] init_from`` read::

    config.json          the model's spec and what the folder holds (format "hourglass-pretrained")
    model.safetensors    the weights (config.json's "weights" says which: "raw", "ema" or "unknown")
    ema.safetensors      the EMA weights, when the folder holds both sets (then model.safetensors: the raw ones)
    recipe.toml          the recipe the model was trained (or converted) with, when known
    classes.json         one class name per class id, when known
    samples.png          a sample grid, when one was given (``hourglass export``: the run's last grid)
    README.md            the model card: YAML front matter the Hub reads (library_name: hourglass, tags, ...)

Each ``.safetensors`` file is also readable on its own: its metadata holds the model spec, the recipe,
the class names and which weights it holds (format ``"hourglass-weights"``, the format ``hourglass
convert`` has always written), so ``hourglass sample folder/ema.safetensors`` works too. Loading never
unpickles anything.

Hub ids: ``"hf-hub:owner/name"``, or ``"owner/name"`` when no local path of that name exists; a
revision (branch, tag or commit) as ``revision=`` or ``"owner/name@revision"``. Files are fetched with
``huggingface_hub.hf_hub_download`` into its cache (``HF_HUB_CACHE``), only those needed (the EMA
weights or the raw ones, not both), and ``HF_HUB_OFFLINE=1`` loads from that cache without a network.

The parts: :mod:`hourglass.hub.layout` (file names, :class:`PretrainedError`), :mod:`hourglass.hub.folder`
(writing, reading, loading), :mod:`hourglass.hub.remote` (Hub ids, the cache, uploads) and
:mod:`hourglass.hub.card` (the model card); everything public is importable from ``hourglass.hub``.
"""

from hourglass.hub.card import HDIT_CITATION, model_card
from hourglass.hub.folder import (
    fit_problems,
    from_pretrained,
    load_weights_into,
    read_pretrained_folder,
    save_pretrained_folder,
    select_weights,
)
from hourglass.hub.layout import (
    CARD_FILE,
    CLASSES_FILE,
    CONFIG_FILE,
    EMA_FILE,
    FOLDER_FILES,
    FORMAT_VERSION,
    PRETRAINED_FORMAT,
    RECIPE_FILE,
    SAMPLES_FILE,
    WEIGHTS_FILE,
    PretrainedError,
    is_pretrained_folder,
)
from hourglass.hub.remote import download_pretrained, parse_hub_id, push_to_hub, resolve_source

__all__ = [
    "PRETRAINED_FORMAT", "FORMAT_VERSION", "CONFIG_FILE", "WEIGHTS_FILE", "EMA_FILE", "RECIPE_FILE", "CLASSES_FILE",
    "CARD_FILE", "SAMPLES_FILE", "FOLDER_FILES", "HDIT_CITATION", "PretrainedError", "save_pretrained_folder",
    "from_pretrained", "load_weights_into", "fit_problems", "select_weights", "download_pretrained",
    "is_pretrained_folder", "read_pretrained_folder", "parse_hub_id", "resolve_source", "model_card", "push_to_hub",
]
