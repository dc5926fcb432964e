"""``hourglass convert``: turn another code base's checkpoint into an hourglass folder (recipe + weights).

Three sources, each a sub-command:

* ``k-diffusion CONFIG.json CHECKPOINT OUT_DIR``: an ``image_transformer_v2`` (HDiT) run of the
  authors' k-diffusion. Reads the config JSON and a checkpoint (``.safetensors``, or a torch
  ``.pth``/``.ckpt`` loaded with ``weights_only=True``, taking its ``model_ema``, ``model`` or
  ``state_dict`` entry; of a file holding both the EMA and the raw weights, the EMA ones); the
  recipe carries over the diffusion, training and data settings where k-diffusion's config has them
  (sigma_data, loss weighting, sigma density, AdamW, EMA, class dropout, augmentation, imagefolder
  location).
* ``dit CHECKPOINT OUT_DIR --model dit_xl_2``: an official DiT checkpoint (facebookresearch/DiT:
  ``DiT-XL-2-256x256.pt``, a plain state dict, or a ``train.py`` checkpoint, whose ``ema`` entry is
  taken). ``--model`` names the DiT size (the attention heads are not in the weights); channels,
  learned sigma, classes and input size are read off the weights.
* ``uvit CHECKPOINT OUT_DIR --config imagenet256_uvit_huge``: an official U-ViT checkpoint
  (baofff/U-ViT: a released ``.pth`` or a run's ``nnet_ema.pth``, plain state dicts that do not
  name their config, so ``--config`` does; see :data:`hourglass.interop.uvit.RELEASES`).

DiT and U-ViT are DDPM models: their recipes use the ``ddpm`` denoiser (DiT: linear betas, U-ViT-H:
scaled-linear betas with timesteps from 1, the other U-ViTs: the continuous linear VP SDE), the
model's ``time_input = "timestep"``, the noise-prediction loss (``weighting = "snr"``) and timesteps
drawn uniformly (``sigma_density = "ddpm_timesteps"``). Models trained on Stable Diffusion VAE latents
(DiT, U-ViT on ImageNet 256/512) produce **latents**, not images: decoding them needs the VAE.

Every weight is checked before anything is written (missing, unexpected and mis-shaped names are
all reported). ``OUT_DIR`` then is a pretrained folder (:mod:`hourglass.hub`, written by
:func:`write_converted_folder` through :func:`hourglass.hub.save_pretrained_folder`, the one writer
of such folders) that :func:`hourglass.from_pretrained`, :func:`hourglass.load`, ``[train] init_from``
and the Hugging Face Hub take as it is:

* ``recipe.toml``: the model as an hourglass recipe, with header comments on where it came from;
* ``model.safetensors``: the weights under hourglass's parameter names, with metadata
  ``format = "hourglass-weights"``, ``source`` (``"k-diffusion"``, ``"dit"``, ``"uvit"``), ``recipe``
  (the TOML), ``model_spec`` (JSON) and ``weights``: ``"ema"``, ``"raw"`` or ``"unknown"``.
  ``hourglass sample`` and :func:`hourglass.load` report which they use;
* ``config.json`` and ``README.md`` (a model card). Folders converted before (``recipe.toml`` +
  ``model.safetensors`` only) still load.

The DiT and U-ViT sources live in :mod:`hourglass.cli.convert_official`.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from hourglass._files import SAFETENSORS, TORCH_KINDS
from hourglass.cli._common import CLIError, add_set_option
from hourglass.cli._convert_common import (
    ROOT_PLACEHOLDER,
    WEIGHTS_WORDS,
    checked_kind,
    refuse_hourglass_file,
    report_conversion,
)

__all__ = [
    "HELP", "EXAMPLES", "add_arguments", "run", "recipe_data_from_k_diffusion", "load_checkpoint_state",
    "read_k_diffusion_checkpoint", "write_converted_folder",
]

COMMAND = "convert"
_PICK = ("model_ema", "model", "state_dict")
_PICKED = {"model_ema": "ema", "model": "raw"}
_ANCHOR = "patch_in.proj.weight"  # a parameter every image_transformer_v2 has
_WEIGHTING = {"karras": "edm", "soft-min-snr": "soft_min_snr", "snr": "snr"}


HELP = "convert a k-diffusion (HDiT), official DiT or official U-ViT checkpoint to a recipe + safetensors"
EXAMPLES = (
    "hourglass convert k-diffusion config_imagenet128.json model_00400000.safetensors out/",
    "hourglass convert k-diffusion config.json ckpt.pth converted/ --overwrite",
    "hourglass convert dit DiT-XL-2-256x256.pt dit-xl-2/ --model dit_xl_2 --weights ema",
    "hourglass convert uvit imagenet256_uvit_huge.pth uvit-h-2/ --config imagenet256_uvit_huge",
)
_KD_EXAMPLES = EXAMPLES[:2]
_DIT_EXAMPLES = (EXAMPLES[2],)
_UVIT_EXAMPLES = (EXAMPLES[3],)


def _common_arguments(parser: argparse.ArgumentParser, *, overrides: bool) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="the pretrained folder to write: recipe.toml, model.safetensors, config.json, README.md")
    if overrides:
        parser.add_argument(
            "--weights", choices=("ema", "raw"),
            help="which weights a plain state dict holds, recorded in the folder (default: read off the file: a "
            "training checkpoint's ema entry or a file named nnet_ema.pth is ema, nnet.pth raw; else unknown)",
        )
        add_set_option(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in OUT_DIR")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass convert``: one sub-command per source."""
    from hourglass.cli._common import example_epilog
    from hourglass.cli.convert_official import DIT_VAE, UVIT_VAE, vae_argument
    from hourglass.interop.uvit import RELEASES

    sources = parser.add_subparsers(dest="source", metavar="SOURCE", title="sources", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    kd = sources.add_parser(
        "k-diffusion", help="a k-diffusion image_transformer_v2 (HDiT) config + checkpoint", formatter_class=raw,
        description="Convert a k-diffusion image_transformer_v2 (HDiT) run: its config JSON and a checkpoint.",
        epilog=example_epilog(*_KD_EXAMPLES),
    )
    kd.add_argument("config", metavar="CONFIG.json", help="the k-diffusion training config")
    kd.add_argument("checkpoint", metavar="CHECKPOINT", help=".safetensors, or a torch .pth/.ckpt")
    _common_arguments(kd, overrides=False)
    dit = sources.add_parser(
        "dit", help="an official DiT checkpoint (facebookresearch/DiT)", formatter_class=raw,
        description="Convert an official DiT checkpoint (DiT-XL-2-256x256.pt, or a train.py checkpoint: its ema "
        "entry). The recipe uses the ddpm denoiser (linear betas, 1000 steps, noise prediction; the learned-sigma "
        "channels are ignored) and DiT's timestep input. DiT works on Stable Diffusion VAE latents "
        "(x 0.18215): its samples are latents, and decoding them into images needs the VAE.",
        epilog=example_epilog(*_DIT_EXAMPLES),
    )
    dit.add_argument("checkpoint", metavar="CHECKPOINT", help="a torch .pt/.pth (weights_only) or .safetensors")
    dit.add_argument("--model", required=True, metavar="PRESET",
                     help="the DiT preset of the checkpoint's size: dit_{s,b,l,xl}_{2,4,8} (DiT-XL/2: dit_xl_2); "
                     "its heads are not in the weights")
    _common_arguments(dit, overrides=True)
    vae_argument(dit, DIT_VAE)
    listing = "\n".join(f"  {name}: {r.describe()}" for name, r in RELEASES.items())
    uvit = sources.add_parser(
        "uvit", help="an official U-ViT checkpoint (baofff/U-ViT), naming its config", formatter_class=raw,
        description="Convert an official U-ViT checkpoint (a released .pth or a run's nnet_ema.pth). U-ViT's files "
        "do not name their config: --config does. The released configs:\n" + listing + "\nThe ImageNet 256/512 "
        "models work on Stable Diffusion VAE latents (x 0.18215): their samples are latents, and decoding them "
        "into images needs the VAE.",
        epilog=example_epilog(*_UVIT_EXAMPLES),
    )
    uvit.add_argument("checkpoint", metavar="CHECKPOINT", help="a torch .pth (weights_only) or .safetensors")
    uvit.add_argument("--config", required=True, choices=list(RELEASES), metavar="CONFIG",
                      help="the U-ViT config that trained it: " + ", ".join(RELEASES))
    _common_arguments(uvit, overrides=True)
    vae_argument(uvit, UVIT_VAE)


def load_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The tensors of a k-diffusion checkpoint (:func:`read_k_diffusion_checkpoint` without the provenance).

    Raises:
        CLIError: unreadable file, pickled objects beyond tensors, or no state dict inside.
    """
    return read_k_diffusion_checkpoint(path)[0]


def _by_prefix(state: dict[str, Any], which: str) -> tuple[dict[str, Any], str]:
    """Of a flat state dict holding ``model_ema.*`` weights keep those; name what was kept."""
    prefixes = {k[: -len(_ANCHOR)] for k in state if k.endswith(_ANCHOR)}
    ema = sorted((p for p in prefixes if p.startswith("model_ema.")), key=len)
    if ema:
        return {k: v for k, v in state.items() if k.startswith(ema[0])}, "ema"
    if which == "unknown" and any(p.startswith("model.") for p in prefixes):
        which = "raw"  # k-diffusion's name for the trained (non-EMA) weights
    return state, which


def read_k_diffusion_checkpoint(path: str | Path) -> tuple[dict[str, Any], str]:
    """The tensors of a k-diffusion checkpoint, and which of its weights they are.

    Args:
        path: a ``.safetensors`` file (a slim inference file of k-diffusion's ``convert_for_inference.py``,
            whose metadata holds the config, or a flat state dict), or a torch ``.pth``/``.ckpt``
            (loaded with ``weights_only=True``).

    Returns:
        ``(state, weights)``: the state dict and ``"ema"`` (the ``model_ema`` entry, ``model_ema.*``
        tensors, or a slim inference file, which k-diffusion writes from the EMA weights), ``"raw"``
        (the ``model`` entry or ``model.*`` tensors) or ``"unknown"``.

    Raises:
        CLIError: unreadable file, pickled objects beyond tensors, or no state dict inside.
    """
    import torch

    path = Path(path)
    kind = _checkpoint_kind(path)
    if kind == SAFETENSORS or path.suffix == ".safetensors":
        import safetensors
        import safetensors.torch

        try:
            state = dict(safetensors.torch.load_file(str(path)))
            with safetensors.safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise CLIError(f"cannot read {path} as safetensors: {exc}") from None
        return _by_prefix(state, "ema" if "config" in metadata else "unknown")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError ...
        first = re.split(r"(?<=\.)\s", " ".join(str(exc).split()), maxsplit=1)[0]  # torch's text runs many lines
        raise CLIError(
            f"cannot load {path} with torch.load(weights_only=True): {type(exc).__name__}: {first} "
            "Only tensors and plain containers are loaded (never arbitrary pickled code); re-save the "
            "state dict with torch.save(model.state_dict(), path) or as safetensors"
        ) from None
    if isinstance(obj, dict):
        for key in _PICK:
            if isinstance(obj.get(key), dict):
                return _by_prefix(dict(obj[key]), _PICKED.get(key, "unknown"))
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return _by_prefix(dict(obj), "unknown")
    keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CLIError(f"{path} holds no state dict (looked for {', '.join(_PICK)} or a dict of tensors); found {keys}")


def _checkpoint_kind(path: Path) -> str | None:
    """The file kind of a k-diffusion checkpoint (safetensors or torch); anything else is a CLIError naming it."""
    if path.is_dir():
        raise CLIError(f"checkpoint {path} is a folder; pass the k-diffusion checkpoint file (.safetensors or .pth)")
    if not path.is_file():
        raise CLIError(f"checkpoint {path} does not exist; check the path")
    kind = checked_kind(path)
    if kind == SAFETENSORS:
        refuse_hourglass_file(path)
    elif kind not in TORCH_KINDS:
        what = kind or "neither a safetensors nor a PyTorch file"
        raise CLIError(f"{path} is {what}, not a k-diffusion checkpoint; pass the .safetensors or .pth file that "
                       "k-diffusion wrote (arguments: CONFIG.json CHECKPOINT OUT_DIR)")
    return kind


def _read_config(path: Path) -> dict[str, Any]:
    """The k-diffusion config; a file of another kind (a checkpoint, a recipe, ...) is named."""
    if path.is_dir():
        raise CLIError(f"config {path} is a folder; pass the k-diffusion config JSON file")
    if path.is_file():
        kind = checked_kind(path)
        if kind is not None and kind not in ("a JSON file", "a text file"):
            swapped = " (the arguments are CONFIG.json CHECKPOINT OUT_DIR)" if kind in (*TORCH_KINDS, SAFETENSORS) else ""
            what = "an hourglass recipe" if kind == "a recipe" else kind
            raise CLIError(f"{path} is {what}, not a k-diffusion config JSON{swapped}; pass the config.json "
                           "k-diffusion trained with")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}; check the path") from None
    except UnicodeDecodeError:
        raise CLIError(f"{path} is a binary file, not a k-diffusion config JSON; pass the config.json") from None
    except json.JSONDecodeError as exc:
        raise CLIError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    if not isinstance(config, dict):
        raise CLIError(f"{path} must hold a JSON object (a k-diffusion config)")
    return config


def _density(kd: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    kind = kd.get("type")
    if kind == "cosine-interpolated":
        return {"type": "cosine_interpolated"}, None
    if kind == "lognormal":
        return {"type": "log_normal", "mean": kd.get("mean", -1.2), "std": kd.get("std", 1.2)}, None
    if kind == "loguniform":
        return {"type": "log_uniform", "sigma_min": kd["min_value"], "sigma_max": kd["max_value"]}, None
    return None, f"sigma density {kind!r} has no hourglass equivalent; the default cosine_interpolated is used"


def recipe_data_from_k_diffusion(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Recipe data for a k-diffusion config, and notes on what could not be carried over.

    Raises:
        ValueError: if the config is not an ``image_transformer_v2`` model (from the interop module).
    """
    from hourglass.interop.k_diffusion import spec_from_k_diffusion

    notes: list[str] = []
    model = spec_from_k_diffusion(config)
    mcfg = config.get("model", config) if isinstance(config.get("model"), dict) else config
    dcfg = config.get("dataset") or {}
    opt = config.get("optimizer") or {}
    ema = config.get("ema_sched") or {}
    sigma_data = float(mcfg.get("sigma_data", 0.5))
    diffusion: dict[str, Any] = {"denoiser": {"type": "karras", "sigma_data": sigma_data}}
    weighting = mcfg.get("loss_weighting", "karras")
    if weighting in _WEIGHTING:
        diffusion["weighting"] = {"type": _WEIGHTING[weighting]}
    else:
        notes.append(f"loss weighting {weighting!r} has no hourglass equivalent; soft_min_snr is used")
    if "sigma_sample_density" in mcfg:
        density, note = _density(mcfg["sigma_sample_density"])
        if density:
            diffusion["sigma_density"] = density
        if note:
            notes.append(note)
    kind = dcfg.get("type")
    dataset: dict[str, Any] = {"type": "imagefolder", "root": dcfg.get("location") or ROOT_PLACEHOLDER}
    if kind not in ("imagefolder", "imagefolder-class"):
        dataset["root"] = ROOT_PLACEHOLDER
        notes.append(f"dataset type {kind!r} is not an image folder: set data.dataset.root=... before training")
    if kind == "imagefolder-class" or model.num_classes:
        dataset["classes"] = "subfolders"
        if kind != "imagefolder-class":
            notes.append(f"the model has {model.num_classes} classes, so data.dataset reads them from class "
                         "subfolders of its root (classes = \"subfolders\")")
    dataset["channels"] = model.in_channels if model.in_channels in (1, 3) else 3
    train: dict[str, Any] = {}
    for ours, theirs in (("lr", "lr"), ("eps", "eps"), ("weight_decay", "weight_decay"), ("betas", "betas")):
        if theirs in opt:
            train[ours] = list(opt[theirs]) if ours == "betas" else float(opt[theirs])
    if "power" in ema:
        train["ema"] = {"power": float(ema["power"]), "decay_max": float(ema.get("max_value", 0.9999))}
    if "cond_dropout_rate" in dcfg:
        train["class_dropout"] = float(dcfg["cond_dropout_rate"])
    data = {"dataset": dataset, "augment": {"p": float(mcfg.get("augment_prob", 0.0))}}
    sample: dict[str, Any] = {}
    if "sigma_min" in mcfg and "sigma_max" in mcfg:
        sample["schedule"] = {"type": "karras", "sigma_min": float(mcfg["sigma_min"]),
                              "sigma_max": float(mcfg["sigma_max"])}
    from hourglass.recipe import plain_data

    out = {"model": plain_data(model.model_dump(mode="python")), "diffusion": diffusion, "data": data}
    if train:
        out["train"] = train
    if sample:
        out["sample"] = sample
    return out, notes


def write_converted_folder(
    out_dir: str | Path,
    recipe: Any,
    model: Any,
    *,
    header: str,
    source: str,
    weights: str,
    converted_from: str,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write a converted model as a pretrained folder (:func:`hourglass.hub.save_pretrained_folder`).

    The one place every ``hourglass convert`` source writes its output.

    Args:
        out_dir: the folder (created if missing).
        recipe: the validated :class:`~hourglass.recipe.Recipe`.
        model: the backbone holding the converted weights (hourglass's names).
        header: comment lines for the top of ``recipe.toml`` (without ``#``).
        source: what it was converted from (``"k-diffusion"``, ``"dit"``, ``"uvit"``), kept in the metadata.
        weights: ``"ema"``, ``"raw"`` or ``"unknown"``: which weights of the original the model holds.
        converted_from: the original files' names, for ``config.json`` and the model card.
        overwrite: replace existing files.
    Returns:
        ``(recipe_path, weights_path)``.
    Raises:
        CLIError: OUT_DIR is a file, holds a pretrained folder's files (without ``overwrite``), or
            cannot be written.
    """
    from hourglass.hub import FOLDER_FILES, PretrainedError, save_pretrained_folder
    from hourglass.train.checkpoint import WEIGHTS_FILE

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"OUT_DIR {out_dir} is a file; pass a folder (it is created if missing)")
    existing = [out_dir / name for name in FOLDER_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise CLIError(f"{', '.join(map(str, existing))} already exist; pass --overwrite or choose another OUT_DIR")
    try:
        save_pretrained_folder(out_dir, model=model, weights=weights, recipe=recipe.to_toml(header=header),
                               source=source, metadata={"converted_from": converted_from})
    except PretrainedError as exc:
        raise CLIError(str(exc)) from None
    return out_dir / "recipe.toml", out_dir / WEIGHTS_FILE


def run(args: argparse.Namespace) -> int:
    """Convert; 0 on success, 2 if the inputs do not fit together."""
    from hourglass.cli.convert_official import run_dit, run_uvit

    return {"k-diffusion": _run_k_diffusion, "dit": run_dit, "uvit": run_uvit}[args.source](args)


def _run_k_diffusion(args: argparse.Namespace) -> int:
    from hourglass.interop.k_diffusion import from_k_diffusion
    from hourglass.recipe import plain_data, recipe_from_data
    from hourglass.spec import as_pair
    from hourglass.train.checkpoint import WEIGHTS_FILE

    config_path, out_dir = Path(args.config), Path(args.out_dir)
    config = _read_config(config_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"OUT_DIR {out_dir} is a file; pass a folder (it is created if missing)")
    try:
        data, notes = recipe_data_from_k_diffusion(config)
        state, which = read_k_diffusion_checkpoint(args.checkpoint)
        model = from_k_diffusion(config, state)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    data["model"] = plain_data(model.spec.model_dump(mode="python"))  # e.g. a class count read off the weights
    recipe = recipe_from_data(data, source=str(config_path))
    recipe_path = out_dir / "recipe.toml"
    h, w = as_pair(model.spec.input_size)
    model_section = config["model"] if isinstance(config.get("model"), dict) else config
    size_note = "" if model_section.get("input_size") else (
        f" (at {h}x{w}, the smallest size from 256 px that fits every level: the config names no input_size; "
        "--resolution H W picks another)"
    )
    header = "\n".join([
        f"Converted from k-diffusion: {config_path.name} + {Path(args.checkpoint).name}.",
        f"Weights: {WEIGHTS_FILE} beside this file (hourglass parameter names): {WEIGHTS_WORDS[which]}.",
        f"Check with: hourglass build {recipe_path}",
        f"Sample with: hourglass sample {out_dir}{size_note}",
        *[f"Note: {n}" for n in notes],
    ])
    recipe_path, weights_path = write_converted_folder(
        out_dir, recipe, model, header=header, source="k-diffusion", weights=which, overwrite=args.overwrite,
        converted_from=f"{config_path.name} + {Path(args.checkpoint).name}",
    )
    report_conversion(recipe_path, weights_path, model.state_dict(), which, notes)
    return 0
