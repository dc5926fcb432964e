"""``hourglass convert dit`` and ``hourglass convert uvit``: official DiT and U-ViT checkpoints to pretrained folders.

DiT (facebookresearch/DiT) and U-ViT (baofff/U-ViT) are DDPM models: their recipes use the ``ddpm``
denoiser (DiT: linear betas; U-ViT-H: scaled-linear betas with timesteps from 1; the other U-ViTs: the
continuous linear VP SDE), the model's ``time_input = "timestep"``, the noise-prediction loss
(``weighting = "snr"``) and timesteps drawn uniformly (``sigma_density = "ddpm_timesteps"``). Models
trained on Stable Diffusion VAE latents (DiT, U-ViT on ImageNet 256/512) draw latents: their recipes
name the VAE that decodes them in a ``[vae]`` section (``--vae``). The folder is written by
:func:`hourglass.cli.convert.write_converted_folder`, as for every source.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from hourglass._files import SAFETENSORS, TORCH_KINDS
from hourglass.cli._common import CLIError
from hourglass.cli._convert_common import (
    ROOT_PLACEHOLDER,
    WEIGHTS_WORDS,
    checked_kind,
    refuse_hourglass_file,
    report_conversion,
)
from hourglass.cli.convert import write_converted_folder

__all__ = ["DIT_VAE", "UVIT_VAE", "vae_argument", "read_state_file", "recipe_data_from_dit", "recipe_data_from_uvit",
           "run_dit", "run_uvit"]

#: the VAE a converted DiT's recipe names: DiT's sample.py decodes with sd-vae-ft-mse by default
DIT_VAE = "stabilityai/sd-vae-ft-mse"
#: U-ViT's latent models use Stable Diffusion's KL-f8 VAE; sd-vae-ft-ema has its encoder (so its latent space)
#: with a fine-tuned decoder
UVIT_VAE = "stabilityai/sd-vae-ft-ema"


def vae_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """``--vae PATH|HUB_ID|none`` of ``hourglass convert dit`` / ``uvit``, defaulting to ``default``."""
    parser.add_argument(
        "--vae", default=default, metavar="PATH|HUB_ID|none",
        help=f"the VAE that decodes a latent model's samples, written as the recipe's [vae] (default: {default}, "
        "read from the Hugging Face cache when sampling; a local diffusers AutoencoderKL folder works too); none: "
        "no [vae], the model's samples stay latents. Unused for pixel models",
    )


_LATENT_ROOT = "/path/to/latents"
_SD_VAE = "latents of the Stable Diffusion VAE (scaled by 0.18215): its raw outputs are latents, not images"


def _vae_words(vae: str | None) -> str:
    """The header sentence on decoding, for a latent model with the [vae] ``vae`` (None: no [vae])."""
    if vae is None:
        return ("Without a [vae] section (converted with --vae none), hourglass.load(folder).sample() gives the "
                "latents and hourglass sample writes no pictures of them.")
    return (f"The [vae] section names the VAE that decodes them, {vae}: sampling needs it in the Hugging Face cache "
            f"(or a local folder; change vae.path), e.g. hf download {vae}." if "/" in vae and not
            Path(vae).exists() else f"The [vae] section names the VAE that decodes them: {vae}.")


def _vae_section(vae: str | None, latent_channels: int) -> dict[str, Any]:
    """The recipe's ``[vae]`` table (``{}``: none) for a latent model of ``latent_channels`` channels."""
    if vae is None:
        return {}
    return {"vae": {"type": "autoencoder_kl", "path": vae, "latent_channels": latent_channels,
                    "downsample_factor": 8, "scaling_factor": 0.18215}}


def _vae_choice(args: argparse.Namespace) -> str | None:
    return None if args.vae.lower() == "none" else args.vae


def read_state_file(path: str | Path, what: str, pick: tuple[str, ...] = ("ema", "model", "state_dict"),
                    weights: str | None = None) -> tuple[dict[str, Any], str]:
    """The tensors of an official checkpoint file, and which weights they are.

    Args:
        path: a ``.safetensors`` file or a torch file, loaded with ``torch.load(weights_only=True)``
            (tensors and plain containers only; ``argparse.Namespace`` is allowed too, since DiT's
            ``train.py`` stores its arguments as one).
        what: the format's name for messages (``"DiT"``, ``"U-ViT"``).
        pick: entries of a training checkpoint to take, in order (``"ema"`` is the EMA copy).
        weights: ``"ema"`` / ``"raw"`` to record for a plain state dict (overrides the guess).
    Returns:
        ``(state, weights)`` with ``weights`` ``"ema"`` (an ``ema`` entry, or a file named ``nnet_ema.*``),
        ``"raw"`` (a ``model`` entry, or ``nnet.*``) or ``"unknown"``.
    Raises:
        CLIError: unreadable file, pickled objects beyond tensors, or no state dict inside.
    """
    import argparse as _argparse

    import torch

    path = Path(path)
    if path.is_dir():
        raise CLIError(f"checkpoint {path} is a folder; pass the {what} checkpoint file")
    if not path.is_file():
        raise CLIError(f"checkpoint {path} does not exist; check the path")
    kind = checked_kind(path)
    guess = {"nnet_ema": "ema", "nnet": "raw"}.get(path.stem.split(".")[0], "unknown")
    if kind == SAFETENSORS:
        refuse_hourglass_file(path)
        import safetensors.torch

        try:
            return dict(safetensors.torch.load_file(str(path))), weights or guess
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise CLIError(f"cannot read {path} as safetensors: {exc}") from None
    if kind not in TORCH_KINDS:
        raise CLIError(f"{path} is {kind or 'neither a safetensors nor a PyTorch file'}, not a {what} checkpoint; "
                       "pass the .pt/.pth file the official code saved")
    try:
        with torch.serialization.safe_globals([_argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError ...
        first = re.split(r"(?<=\.)\s", " ".join(str(exc).split()), maxsplit=1)[0]
        raise CLIError(
            f"cannot load {path} with torch.load(weights_only=True): {type(exc).__name__}: {first} "
            "Only tensors and plain containers are loaded (never arbitrary pickled code); re-save the "
            "state dict with torch.save(model.state_dict(), path) or as safetensors"
        ) from None
    if isinstance(obj, dict):
        for key in pick:
            if isinstance(obj.get(key), dict):
                return dict(obj[key]), weights or {"ema": "ema", "model": "raw"}.get(key, "unknown")
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), weights or guess
    keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CLIError(f"{path} holds no {what} state dict (looked for {', '.join(pick)} or a dict of tensors); "
                   f"found {keys}")


def _sample_section(denoiser: Any, cfg_scale: float | None, num_classes: int) -> dict[str, Any]:
    """50 DPM-Solver++(2M) steps over the Karras schedule spanning the denoiser's own noise levels."""
    section: dict[str, Any] = {
        "sampler": "dpmpp_2m",
        "schedule": {"type": "karras", "sigma_min": round(denoiser.sigma_min, 6), "sigma_max": round(denoiser.sigma_max, 4)},
        "steps": 50,
    }
    if cfg_scale and num_classes:
        section["cfg_scale"] = cfg_scale
    return section


def recipe_data_from_dit(spec: Any, vae: str | None = DIT_VAE) -> dict[str, Any]:
    """Recipe data of an official DiT (its model ``spec``): DiT's diffusion and training settings.

    ``ddpm`` denoiser (linear betas, 1000 steps, eps; the learned-sigma channels ignored), ``snr``
    weighting (``L_simple``), ``ddpm_timesteps`` density; AdamW lr 1e-4 without weight decay, batch
    256, class dropout 0.1, EMA 0.9999 (DiT's ``train.py``); sampling: DPM-Solver++(2M), 50 steps,
    guidance 1.5 (DiT's FID setting). Data: precomputed latents (a placeholder root). A latent model
    (4 input channels) gets ``[vae]`` = ``vae`` (Stable Diffusion's factor-8 VAE, scaling 0.18215;
    None: no ``[vae]``).
    """
    from hourglass.diffusion.ddpm import DDPMSchedule
    from hourglass.recipe import plain_data

    denoiser = {"type": "ddpm", "prediction": "eps", "schedule": "linear", "timesteps": 1000}
    schedule = DDPMSchedule("linear", 1000)
    dataset: dict[str, Any] = {"type": "latents", "root": _LATENT_ROOT, "channels": spec.in_channels}
    if spec.num_classes:
        dataset["classes"] = "subfolders"
    return {
        "model": plain_data(spec.model_dump(mode="python")),
        "diffusion": {"denoiser": denoiser, "weighting": {"type": "snr"}, "sigma_density": {"type": "ddpm_timesteps"}},
        "data": {"dataset": dataset, "batch_size": 256, "augment": {"p": 0.0}},
        "train": {"lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0, "mapping_lr_scale": 1.0, "grad_clip": 0.0,
                  "class_dropout": 0.1 if spec.num_classes else 0.0, "ema": {"decay_max": 0.9999, "power": 0.75}},
        "sample": _sample_section(schedule, 1.5, spec.num_classes),
        **_vae_section(vae if spec.in_channels == 4 else None, spec.in_channels),
    }


def recipe_data_from_uvit(release: Any, spec: Any, vae: str | None = UVIT_VAE) -> dict[str, Any]:
    """Recipe data of an official U-ViT of a released config (its model ``spec``): U-ViT's settings.

    ``ddpm`` denoiser of its training (discrete scaled-linear betas with timesteps from 1, or the
    continuous linear VP SDE), ``snr`` weighting (U-ViT's eps-MSE), ``ddpm_timesteps`` density; AdamW
    lr 2e-4 (ImageNet 64: 3e-4), weight decay 0.03, betas (0.99, 0.99), 5000 warm-up steps, EMA 0.9999;
    sampling: DPM-Solver++(2M), 50 steps, U-ViT's guidance scale. Data: precomputed latents (a placeholder
    root) for the latent models, an image folder otherwise. A latent model gets ``[vae]`` = ``vae``
    (None: no ``[vae]``).
    """
    from hourglass.diffusion.ddpm import DDPMSchedule
    from hourglass.recipe import plain_data

    denoiser = release.denoiser
    schedule = DDPMSchedule(denoiser["schedule"], denoiser["timesteps"])
    if release.latent:
        dataset: dict[str, Any] = {"type": "latents", "root": _LATENT_ROOT, "channels": spec.in_channels}
    else:
        dataset = {"type": "imagefolder", "root": ROOT_PLACEHOLDER, "channels": spec.in_channels}
    if spec.num_classes:
        dataset["classes"] = "subfolders"
    pixel_in64 = release.name.startswith("imagenet64")
    return {
        "model": plain_data(spec.model_dump(mode="python")),
        "diffusion": {"denoiser": denoiser, "weighting": {"type": "snr"}, "sigma_density": {"type": "ddpm_timesteps"}},
        "data": {"dataset": dataset, "batch_size": 1024 if spec.num_classes else 128, "augment": {"p": 0.0}},
        "train": {"lr": 3e-4 if pixel_in64 else 2e-4, "betas": [0.99, 0.99], "weight_decay": 0.03,
                  "mapping_lr_scale": 1.0, "warmup_steps": 5000, "grad_clip": 0.0,
                  "class_dropout": release.class_dropout, "ema": {"decay_max": 0.9999, "power": 0.75}},
        "sample": _sample_section(schedule, release.cfg_scale, spec.num_classes),
        **_vae_section(vae if release.latent else None, spec.in_channels),
    }


def _weights_header(which: str) -> str:
    from hourglass.train.checkpoint import WEIGHTS_FILE

    return f"Weights: {WEIGHTS_FILE} beside this file (hourglass parameter names): {WEIGHTS_WORDS[which]}."


def _finish(args: argparse.Namespace, data: dict[str, Any], converted: dict[str, Any], source: str, which: str,
            header: list[str], what: str) -> int:
    """Validate the recipe (after ``--set``), build the model, load and check the weights, write the folder."""
    from hourglass.interop.dit import load_checked
    from hourglass.recipe import recipe_from_data
    from hourglass.registry import MODEL

    recipe = recipe_from_data(data, overrides=args.set, source=f"hourglass convert {source}")
    if args.set:
        header = [*header, "Changed by --set: " + ", ".join(args.set) + "."]
    import torch

    with torch.device("meta"):
        model = MODEL.build(recipe.model)
    try:
        load_checked(model, converted, what)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    recipe_path, weights_path = write_converted_folder(
        args.out_dir, recipe, model, header="\n".join(header), source=source, weights=which,
        overwrite=args.overwrite, converted_from=Path(args.checkpoint).name,
    )
    report_conversion(recipe_path, weights_path, model.state_dict(), which, [])
    return 0


def run_dit(args: argparse.Namespace) -> int:
    """``hourglass convert dit``: 0 on success (raises CLIError on bad input)."""
    from hourglass.interop.dit import convert_state_dict, spec_from_dit
    from hourglass.models.factory import get_preset
    from hourglass.registry import RegistryError

    try:
        if get_preset(args.model).get("type") != "dit":
            raise RegistryError(f"{args.model!r} is a {get_preset(args.model).get('type')} preset")
    except RegistryError as exc:
        raise CLIError(f"--model {args.model}: not a DiT preset ({exc}); use dit_{{s,b,l,xl}}_{{2,4,8}}, e.g. "
                       "dit_xl_2") from None
    state, which = read_state_file(args.checkpoint, "DiT", weights=args.weights)
    try:
        spec = spec_from_dit(state, args.model)
        converted = convert_state_dict(state)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    data = recipe_data_from_dit(spec, _vae_choice(args))
    p, side = spec.stride[0], spec.token_grid[0]
    c_out = spec.resolved_out_channels
    header = [
        f"Converted from the official DiT (facebookresearch/DiT): {Path(args.checkpoint).name}, preset {args.model} "
        f"(depth {spec.depth}, width {spec.width}, patch {p}).",
        _weights_header(which),
        f"The model works on {spec.in_channels}x{spec.input_size}x{spec.input_size} " + (
            f"{_SD_VAE}. {_vae_words(_vae_choice(args))}" if spec.in_channels == 4 else "inputs."),
        "Time input: DiT's DDPM timestep t in 0..999 (model.mapping.time_input = \"timestep\"), passed by the ddpm "
        "denoiser (linear betas 1e-4..0.02, 1000 steps, noise prediction).",
        (f"Learned sigma: {c_out} output channels, of which the first {spec.in_channels} (the noise prediction) are "
         "read; the variance channels are ignored when sampling and not trained (DiT's L_vlb is not implemented)."
         if c_out > spec.in_channels else "No learned sigma: the output is the noise prediction."),
        f"Classes: {spec.num_classes} + 'no class' (id {spec.num_classes}) for guidance. DiT's sample.py guides only "
        "3 of the 4 latent channels (kept there for reproducibility); hourglass guides all of them."
        if spec.num_classes else "Unconditional.",
        f"Grid: {side}x{side} tokens. Check with: hourglass build {Path(args.out_dir) / 'recipe.toml'}",
        "data.dataset is a placeholder: set data.dataset.root to a folder of precomputed latents to train.",
    ]
    return _finish(args, data, converted, "dit", which, header, "DiT")


def run_uvit(args: argparse.Namespace) -> int:
    """``hourglass convert uvit``: 0 on success (raises CLIError on bad input)."""
    from hourglass.interop.uvit import RELEASES, convert_state_dict, spec_from_release

    release = RELEASES[args.config]
    state, which = read_state_file(args.checkpoint, "U-ViT", weights=args.weights)
    spec = spec_from_release(release)
    data = recipe_data_from_uvit(release, spec, _vae_choice(args))
    from hourglass.recipe import recipe_from_data

    spec = recipe_from_data(data, overrides=args.set, source="hourglass convert uvit").model  # --set model.* applies
    try:
        converted = convert_state_dict(state, spec)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    continuous = release.time == "continuous"
    c, size = spec.in_channels, spec.input_size
    header = [
        f"Converted from the official U-ViT (baofff/U-ViT): {Path(args.checkpoint).name}, config {release.name} "
        f"({release.describe()}).",
        _weights_header(which),
        f"The model works on {c}x{size}x{size} " + (f"{_SD_VAE}. {_vae_words(_vae_choice(args))}" if release.latent
                                                         else "pixels in [-1, 1]."),
        ("Time input: U-ViT's continuous time, the network sees 999 s for s in [0, 1] (model.time_input = "
         "\"timestep\"), passed by the ddpm denoiser (schedule continuous_linear: the VP SDE with beta 0.1..20)."
         if continuous else
         "Time input: U-ViT's discrete timestep n in 1..1000 (model.time_input = \"timestep\"), passed by the ddpm "
         "denoiser (scaled_linear betas 0.00085..0.012, 1000 steps, t_offset 1)."),
        "Noise prediction; guidance scale " + (f"{release.cfg_scale:g} (U-ViT's scale {release.cfg_scale - 1:g})."
                                               if release.cfg_scale else "1 (none)."),
        *(["The class table had no 'no class' row (trained without class dropout): a zero row was added, so "
           "guidance is not meaningful."] if spec.num_classes and not release.null_class_row else []),
        f"Check with: hourglass build {Path(args.out_dir) / 'recipe.toml'}",
        "data.dataset is a placeholder: set data.dataset.root to train.",
    ]
    return _finish(args, data, converted, "uvit", which, header, "U-ViT")
