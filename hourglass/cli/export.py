"""``hourglass export``: turn a training run (or one of its checkpoints) into a pretrained folder.

The folder (see :mod:`hourglass.hub`) holds ``config.json`` (the model spec and what the folder
holds), ``model.safetensors`` (the raw trained weights), ``ema.safetensors`` (the EMA weights, which
loaders take by default), ``recipe.toml`` (the run's resolved recipe), ``classes.json`` (the class
names, when the run recorded them), ``samples.png`` (the run's last sample grid: ``samples/final.png``,
else the newest ``samples/step_*.png``) and ``README.md``, a model card with YAML front matter the
Hugging Face Hub reads (``library_name: hourglass``, tags): the model, its parameters and GMACs, the
training steps and settings, the last lines of ``metrics.jsonl``, the sample grid, how to load and
fine-tune it. ``--weights ema`` writes only the EMA weights (as ``model.safetensors``), half the size.

``--push-to-hub owner/name`` then uploads the folder with ``huggingface_hub`` (``create_repo`` and
``upload_folder``; log in first with ``hf auth login``); without a network, or with
``HF_HUB_OFFLINE=1``, it fails with one line and leaves the folder written, to upload later with
``hf upload owner/name OUT_DIR``. The folder loads with :func:`hourglass.from_pretrained`,
:func:`hourglass.load`, ``hourglass sample OUT_DIR`` and ``[train] init_from = "OUT_DIR"``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hourglass.cli._common import CLIError

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run", "export_run"]

COMMAND = "export"

HELP = "turn a training run or checkpoint into a pretrained folder with a model card (optionally upload it)"
EXAMPLES = (
    "hourglass export runs/quickstart exported/",
    "hourglass export runs/quickstart exported-ema/ --weights ema",
    "hourglass export runs/quickstart exported/ --overwrite --push-to-hub me/hdit-quickstart",
)
#: lines of metrics.jsonl shown in the card
METRIC_LINES = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass export``."""
    parser.add_argument("source", metavar="RUN_DIR",
                        help="a run directory (its newest valid checkpoint) or a step_*.safetensors checkpoint")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the pretrained folder to write (created if missing)")
    parser.add_argument("--weights", choices=("both", "ema", "raw"), default="both",
                        help="both: model.safetensors (raw) + ema.safetensors (default); ema / raw: only those, "
                        "as model.safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier export in OUT_DIR")
    parser.add_argument("--push-to-hub", metavar="OWNER/NAME",
                        help="then upload OUT_DIR to this Hugging Face Hub repository (created if missing)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository as private")


def _last_grid(run_dir: Path) -> Path | None:
    folder = run_dir / "samples"
    if (folder / "final.png").is_file():
        return folder / "final.png"
    grids = sorted(p for p in folder.glob("step_*.png") if p.is_file()) if folder.is_dir() else []
    return grids[-1] if grids else None


def _last_metrics(run_dir: Path) -> list[dict[str, Any]]:
    from hourglass.train.metrics import read_metrics

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        records = read_metrics(path)
    except (OSError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict) and "loss" in r][-METRIC_LINES:]


def export_run(
    source: str | Path, out_dir: str | Path, *, weights: str = "both", overwrite: bool = False,
    repo_id: str | None = None,
) -> dict[str, Any]:
    """Write the pretrained folder of a run or checkpoint (what ``hourglass export`` does before uploading).

    Args:
        source: a run directory or a checkpoint (anything :func:`hourglass.train.resolve_checkpoint` reads).
        out_dir: the folder to write.
        weights: ``"both"``, ``"ema"`` or ``"raw"`` (see the command's ``--weights``).
        overwrite: replace an earlier export.
        repo_id: the Hub id the card's examples should name.

    Returns:
        ``{"folder", "files", "step", "params", "gmacs", "weights"}``.

    Raises:
        hourglass.train.CheckpointError: nothing usable at ``source``; a folder that exists (without
            ``overwrite``) or cannot be written.
    """
    from hourglass.cli._common import meta_build
    from hourglass.flops import count_macs
    from hourglass.hub import PretrainedError, save_pretrained_folder, select_weights
    from hourglass.pipeline import run_dir_of
    from hourglass.recipe import plain_data
    from hourglass.train.checkpoint import checkpoint_recipe, read_class_names, resolve_checkpoint

    data = resolve_checkpoint(source, report=None)
    _, spec = checkpoint_recipe(data)
    if weights == "both" and data.ema:
        model, ema, kind = data.model, data.ema, "raw"
    elif weights == "raw" and data.ema:
        model, ema, kind = data.model, None, "raw"
    else:  # the EMA weights alone, or a source that holds one set (kept as what it is)
        model, kind = select_weights(data, ema=weights != "raw")
        ema = None
    if weights == "ema" and kind != "ema":
        raise PretrainedError(f"{data.path} has no EMA weights to export; use --weights raw")
    run_dir = run_dir_of(data.path if data.path is not None else source)
    n_params = sum(p.numel() for p in meta_build(spec).parameters())
    metadata: dict[str, Any] = {"step": data.step, "params": n_params, "gmacs": round(count_macs(spec) / 1e9, 4),
                                "exported_from": Path(str(data.path)).name}
    metrics = _last_metrics(run_dir)
    if metrics:
        metadata["metrics"] = metrics
    if data.extra.get("source") and data.extra["source"] != "hourglass":
        metadata["converted_from"] = data.extra.get("metadata", {}).get("converted_from") or data.extra["source"]
    folder = save_pretrained_folder(
        out_dir, model=model, spec=plain_data(spec.model_dump(mode="python")), ema=ema, weights=kind,
        recipe=data.recipe_toml or None, class_names=read_class_names(data), metadata=metadata,
        source=str(data.extra.get("source") or "hourglass"), sample_grid=_last_grid(run_dir), repo_id=repo_id,
        overwrite=overwrite,
    )
    import json

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return {"folder": folder, "files": config["files"], "step": data.step, "params": n_params,
            "gmacs": metadata["gmacs"], "weights": config["weights"]}


def run(args: argparse.Namespace) -> int:
    """Export (and upload); 0 on success, 2 for a problem with the input, the folder or the upload."""
    from hourglass.cli._common import human_count
    from hourglass.hub import push_to_hub

    out = Path(args.out_dir)
    if args.private and not args.push_to_hub:
        raise CLIError("--private applies to --push-to-hub OWNER/NAME")
    if out.resolve() == Path(args.source).resolve():
        raise CLIError(f"OUT_DIR {out} is the run directory itself; choose another folder")
    info = export_run(args.source, out, weights=args.weights, overwrite=args.overwrite, repo_id=args.push_to_hub)
    kinds = ", ".join(f"{name} ({kind})" for name, kind in info["weights"].items())
    print(f"wrote {info['folder']}: {', '.join(info['files'])}")
    print(f"weights: {kinds}; {human_count(info['params'])} parameters, {info['gmacs']:.3g} GMACs per forward, "
          f"step {info['step']}")
    if args.push_to_hub:
        url = push_to_hub(out, args.push_to_hub, private=args.private or None)
        print(f"uploaded to https://huggingface.co/{args.push_to_hub} ({url})")
    else:
        print(f"load it with hourglass.from_pretrained({str(out)!r}); upload it with `hf upload OWNER/NAME {out}` "
              "or --push-to-hub OWNER/NAME")
    return 0
