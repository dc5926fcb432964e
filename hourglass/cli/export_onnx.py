"""``hourglass export-onnx``: write a model as an ONNX file and check it in onnxruntime.

The source is a run directory (its newest valid checkpoint), a ``step_*.safetensors`` checkpoint, a
folder or ``model.safetensors`` written by ``hourglass convert`` (the EMA weights unless
``--no-ema``, as ``hourglass sample``), or a recipe / model preset, built with random weights (seeded
by ``--seed``) to try the export. The file computes one network evaluation: the backbone's
``F(x, sigma[, class_cond][, mapping_cond])`` or, with ``--denoiser``, the run's preconditioned
denoiser ``D``; the sampling loop stays in your code. Attention is exported on the pure-PyTorch
reference backends (``--backend global=sdpa`` may pick SDPA); the batch size is dynamic unless
``--static-batch``. A recipe or preset gets random weights, its zero-initialised layers filled with
noise too, so that the check compares outputs that are not all zero. Then the file is run in onnxruntime at another batch size and compared with
eager PyTorch (``--no-check`` skips this). Needs ``pip install onnx onnxscript onnxruntime`` (the ``export`` extra). See
docs/export.md, and :mod:`hourglass.export` for the same from Python.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hourglass.cli._common import CLIError, human_count

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

COMMAND = "export-onnx"

HELP = "write a run, checkpoint or preset as an ONNX file (F or the denoiser) and check it in onnxruntime"
EXAMPLES = (
    "hourglass export-onnx runs/quickstart model.onnx",
    "hourglass export-onnx runs/quickstart denoiser.onnx --denoiser --opset 20",
    "hourglass export-onnx hdit_test hdit_test.onnx                  # a preset, random weights",
    "hourglass export-onnx dit_test dit_test.onnx --static-batch --batch 8 --backend global=sdpa",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass export-onnx``."""
    parser.add_argument("source", metavar="RUN_OR_CHECKPOINT_OR_PRESET",
                        help="a run directory, a checkpoint, a folder / model.safetensors from `hourglass convert`, "
                        "or a recipe / model preset (random weights)")
    parser.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                        help="export the EMA weights (default when the checkpoint has them) or the raw trained ones")
    parser.add_argument("--denoiser", action="store_true",
                        help="export the preconditioned denoiser D(x, sigma) (the run's [diffusion] denoiser) "
                        "instead of the backbone's F")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="batch size traced (default 2); with --static-batch the only one the file takes")
    parser.add_argument("--static-batch", action="store_true", help="a fixed batch size (--batch) instead of any")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default 18, at least 18)")
    parser.add_argument("--backend", action="append", default=[], metavar="KERNEL=NAME",
                        help="attention backend of a kernel for the export (default: its pure-PyTorch reference, "
                        "torch); repeatable, e.g. --backend global=sdpa")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights of a recipe or preset (default 0)")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="run the file in onnxruntime and compare it with eager PyTorch (default on)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest accepted |onnxruntime - eager| of the check (default 1e-4)")


def _backends(pairs: list[str]) -> dict[str, str]:
    choices = {}
    for pair in pairs:
        kernel, sep, name = pair.partition("=")
        if not sep or not kernel.strip() or not name.strip():
            raise CLIError(f"--backend takes KERNEL=NAME (e.g. global=sdpa), got {pair!r}")
        choices[kernel.strip()] = name.strip()
    return choices


def _is_checkpoint(source: str) -> bool:
    path = Path(source)
    if source.endswith(".toml"):
        return False
    return path.exists() or source.endswith(".safetensors") or "/" in source


def _from_checkpoint(args: argparse.Namespace) -> tuple[Any, str]:
    from hourglass.pipeline import PipelineError, load
    from hourglass.train.checkpoint import CheckpointError

    try:
        pipe = load(args.source, ema=args.ema, device="cpu", report=print)
    except (CheckpointError, PipelineError) as exc:
        raise CLIError(str(exc)) from None
    if args.seed != 0:
        raise CLIError("--seed seeds the random weights of a recipe or preset; a checkpoint has its own (drop --seed)")
    model = pipe.denoiser if args.denoiser else pipe.model
    return model, f"{args.source} (step {pipe.step}, {pipe.describe_weights()})"


def _from_recipe_or_preset(args: argparse.Namespace) -> tuple[Any, str]:
    import torch

    from hourglass.cli._common import load_target
    from hourglass.registry import DENOISER, MODEL
    from hourglass.testing import unzero_

    if args.ema is not None:
        raise CLIError(f"--{'' if args.ema else 'no-'}ema chooses a checkpoint's weights; {args.source} is a "
                       "recipe or preset, built with random weights (drop the option)")
    target = load_target(args.source)
    torch.manual_seed(args.seed)
    try:
        model = MODEL.build(target.model).eval()
    except (ValueError, TypeError) as exc:
        raise CLIError(f"{args.source}: the model cannot be built: {' '.join(str(exc).split())}") from None
    unzero_(model)  # a fresh model's zero-initialised outputs would make the check compare zeros
    kind = "recipe" if target.recipe is not None else "preset"
    if args.denoiser:
        spec = target.recipe.diffusion.denoiser if target.recipe is not None else "karras"
        model = DENOISER.build(spec, model=model)
    return model, f"{args.source} ({kind}, random weights, seed {args.seed}, zero-initialised layers filled)"


def run(args: argparse.Namespace) -> int:
    """Export ``args.source`` to ``args.out`` and check it; 0 on success, 1 if torch's exporter or the check fails."""
    from hourglass import export as ex

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise CLIError(f"the output file must end in .onnx, got {args.out!r}")
    if out.is_dir():
        raise CLIError(f"{args.out} is a folder; give the .onnx file to write")
    dynamic = not args.static_batch
    batch = 2 if args.batch is None else args.batch
    if batch < 1:
        raise CLIError(f"--batch must be a positive integer, got {batch}")
    if dynamic and batch < 2:
        raise CLIError(f"--batch {batch} with a dynamic batch: the export is traced at batch >= 2 and then takes "
                       "any batch; drop --batch, or add --static-batch for a file that takes only this batch")
    if args.tolerance is not None and not args.tolerance > 0:
        raise CLIError(f"--tolerance must be > 0, got {args.tolerance}")
    backends = _backends(args.backend)
    opset = ex.DEFAULT_OPSET if args.opset is None else args.opset
    try:
        ex._check_opset(opset)
        ex._require("onnxscript")
        if args.check:
            ex._require("onnxruntime")
    except ex.ExportError as exc:
        raise CLIError(str(exc) + (" (or --no-check to skip onnxruntime)" if "onnxruntime" in str(exc) else "")) from None

    model, described = (_from_checkpoint if _is_checkpoint(args.source) else _from_recipe_or_preset)(args)
    try:
        plan = ex.export_backends(model, backends)
    except ex.ExportError as exc:
        raise CLIError(str(exc)) from None
    backbone = ex._backbone_of(model)
    spec: Any = backbone.spec
    inputs = ", ".join(ex.example_inputs(model, 1))
    what = "D" if args.denoiser else "F"
    params = sum(p.numel() for p in backbone.parameters())
    print(f"model: {type(backbone).__name__} ({human_count(params)} params) from {described}")
    print(f"exporting {what}({inputs}) at {spec.input_size} px, opset {opset}, "
          f"batch {'dynamic (traced at ' + str(batch) + ')' if dynamic else batch}, attention "
          + (", ".join(f"{k}={v}" for k, v in plan.items()) or "none"))
    try:
        path = ex.export_onnx(model, out, opset=opset, batch=batch, dynamic_batch=dynamic, denoiser=args.denoiser,
                              backends=backends)
    except ex.ExportFailed as exc:
        print(f"hourglass export-onnx: export failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except ex.ExportError as exc:
        raise CLIError(str(exc)) from None
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.is_file())
    print(f"wrote {path} ({size / 2**20:.1f} MiB)")
    if not args.check:
        return 0
    check_batch = batch if not dynamic else batch + 1
    try:
        check = ex.check_onnx(model, path, batch=check_batch, tolerance=args.tolerance, denoiser=args.denoiser)
    except ex.ExportFailed as exc:
        print(f"hourglass export-onnx: check failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except ex.ExportError as exc:
        raise CLIError(str(exc)) from None
    import onnxruntime

    shapes = ", ".join(f"{k} {tuple(v)}" for k, v in check.inputs.items())
    print(f"checked in onnxruntime {onnxruntime.__version__} at batch {check_batch}: {shapes} -> "
          f"{'denoised' if args.denoiser else 'F'} {check.output_shape}; max |onnxruntime - eager| = "
          f"{check.max_abs_error:.1e} (tolerance {args.tolerance:g}, outputs up to {check.max_abs_value:.2g})")
    return 0
