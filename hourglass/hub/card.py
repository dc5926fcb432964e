"""The model card (``README.md``) of a pretrained folder: YAML front matter the Hub reads, then Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hourglass.hub.layout import _WEIGHT_WORDS, CLASSES_FILE, CONFIG_FILE, EMA_FILE, RECIPE_FILE, SAMPLES_FILE

__all__ = ["model_card", "HDIT_CITATION"]

HDIT_CITATION = """@inproceedings{crowson2024hourglass,
  title     = {Scalable High-Resolution Pixel-Space Image Synthesis with Hourglass Diffusion Transformers},
  author    = {Crowson, Katherine and Baumann, Stefan Andreas and Birch, Alex and Abraham, Tanishq Mathew and
               Kaplan, Daniel Z. and Shippole, Enrico},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  year      = {2024},
  note      = {arXiv:2401.11605}
}"""



def _fmt_count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def _size_text(size: Any) -> str:
    from hourglass.spec import as_pair

    h, w = as_pair(size)
    return f"{h}x{w}"


def _metrics_table(records: list[dict[str, Any]]) -> list[str]:
    keys = ["step", "loss", "lr", "grad_norm", "ema_decay"]  # first, when present; then the others
    for record in records:
        for key, value in record.items():
            if key not in keys and isinstance(value, (int, float)) and not isinstance(value, bool):
                keys.append(key)
    keys = [k for k in keys if any(k in r for r in records)][:7]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in records]
    return lines


def model_card(
    config: Mapping[str, Any],
    *,
    recipe_toml: str = "",
    class_names: Sequence[str] | None = None,
    extra: str | None = None,
    card_data: Mapping[str, Any] | None = None,
    name: str = "",
    repo_id: str | None = None,
) -> str:
    """The ``README.md`` of a pretrained folder: YAML front matter (``huggingface_hub.ModelCardData``) and Markdown.

    Args:
        config: the folder's ``config.json`` content.
        recipe_toml: its recipe (the training settings are summarised from it).
        class_names: its class names.
        extra: Markdown inserted under the summary.
        card_data: front matter merged over the generated one (``tags`` are added to).
        name: the title (the folder's or repository's name).
        repo_id: the Hub id the examples load (default: a placeholder path).
    """
    from huggingface_hub import ModelCardData

    spec = dict(config.get("model") or {})
    meta = dict(config.get("metadata") or {})
    kind = str(spec.get("type", "model"))
    classes = int(spec.get("num_classes") or 0)
    source = str(config.get("source") or "hourglass")
    tags = ["hourglass", "diffusion", "image-generation", kind, "pixel-space"]
    tags.append("class-conditional" if classes else "unconditional")
    if source != "hourglass":
        tags.append(source)
    data: dict[str, Any] = {"library_name": "hourglass", "tags": tags}
    if not classes:
        data["pipeline_tag"] = "unconditional-image-generation"
    for key, value in (card_data or {}).items():
        if key == "tags":
            data["tags"] = list(dict.fromkeys([*tags, *value]))
        else:
            data[key] = value
    front = ModelCardData(**data).to_yaml()

    weights = dict(config.get("weights") or {})
    files = list(config.get("files") or [])
    size = _size_text(spec.get("input_size", 256))
    family = {"hdit": "an Hourglass Diffusion Transformer ([HDiT](https://arxiv.org/abs/2401.11605))",
              "dit": "a [DiT](https://arxiv.org/abs/2212.09748)",
              "uvit": "a [U-ViT](https://arxiv.org/abs/2209.12152)"}.get(kind, f"a `{kind}` model")
    title = name or f"{kind} model"
    lines = [f"---\n{front.strip()}\n---", "", f"# {title}", ""]
    summary = (f"A diffusion model for the `hourglass` library: {family} at {size} pixels, "
               f"{spec.get('in_channels', 3)} channel(s), " + (f"{classes} classes" if classes else "unconditional") + ".")
    if source != "hourglass":
        summary += f" Converted from {source}" + (f" ({meta['converted_from']})" if meta.get("converted_from") else "") + "."
    lines += [summary, ""]
    if extra:
        lines += [extra.strip(), ""]
    if SAMPLES_FILE in files:
        lines += [f"![samples]({SAMPLES_FILE})", ""]

    rows = [("type", f"`{kind}`"), ("image size", size), ("channels", str(spec.get("in_channels", 3)))]
    rows.append(("classes", f"{classes}" + (f" ({', '.join(class_names[:8])}{', ...' if len(class_names) > 8 else ''})"
                                            if class_names else "") if classes else "unconditional"))
    if isinstance(spec.get("levels"), list):
        levels = ", ".join(f"{lv.get('depth')}x{lv.get('width')} {(lv.get('attention') or {}).get('type', '')}".strip()
                           for lv in spec["levels"])
        rows.append(("levels (depth x width, attention; outermost first)", levels))
    if "params" in meta:
        rows.append(("parameters", _fmt_count(float(meta["params"]))))
    if "gmacs" in meta:
        rows.append(("GMACs per forward", f"{float(meta['gmacs']):.3g} at {size}"))
    if "step" in meta:
        rows.append(("training steps", f"{int(meta['step']):,}"))
    for key, value in meta.items():
        if key not in ("params", "gmacs", "step", "metrics", "converted_from") and isinstance(value, (str, int, float)):
            rows.append((key.replace("_", " "), str(value)))
    lines += ["## Model", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]

    lines += ["## Files", "", "| file | holds |", "|---|---|", f"| `{CONFIG_FILE}` | the model spec and what the folder holds |"]
    for fname, kind_of in weights.items():
        default = " (loaded by default)" if fname == EMA_FILE or len(weights) == 1 else ""
        lines.append(f"| `{fname}` | {_WEIGHT_WORDS.get(kind_of, 'weights')}{default} |")
    described = {RECIPE_FILE: "the recipe (model, diffusion, data, training and sampling settings)",
                 CLASSES_FILE: "one class name per class id", SAMPLES_FILE: "a sample grid"}
    lines += [f"| `{f}` | {what} |" for f, what in described.items() if f in files] + [""]

    if recipe_toml:
        lines += _training_lines(recipe_toml)
    metrics = meta.get("metrics")
    if isinstance(metrics, list) and metrics and all(isinstance(r, dict) for r in metrics):
        lines += ["### Last metrics", "", "The last lines of the run's `metrics.jsonl`:", ""]
        lines += _metrics_table(metrics) + [""]

    where = repo_id or "path/to/this/folder"
    lines += [
        "## Use", "", "```python", "import hourglass", "",
        f'pipe = hourglass.load("{where}")         # a sampling pipeline (EMA weights when present)',
        "images = pipe.sample(16, steps=50, seed=0)   # (16, C, H, W) in [-1, 1]",
        f'model = hourglass.from_pretrained("{where}")  # just the backbone', "```", "",
        "From the command line, and to fine-tune it (a recipe's `[train]` section):", "",
        "```bash", f"hourglass sample {where} --n 16", "```", "",
        "```toml", "[train]", f'init_from = "{where}"', "```", "",
        "Loading reads `config.json` and safetensors files only: nothing is unpickled.", "",
        "## Citation", "", "hourglass implements HDiT (Crowson et al., ICML 2024):", "", "```bibtex", HDIT_CITATION, "```", "",
    ]
    return "\n".join(lines)


def _training_lines(recipe_toml: str) -> list[str]:
    from hourglass.recipe import toml

    try:
        recipe = toml.loads(recipe_toml)
    except toml.TOMLDecodeError:
        return []
    data, train = recipe.get("data") or {}, recipe.get("train") or {}
    dataset = data.get("dataset")
    kind = dataset.get("type") if isinstance(dataset, dict) else dataset
    parts = []
    if kind:
        parts.append(f"data `{kind}`")
    for key, label in (("batch_size", "batch"),):
        if key in data:
            parts.append(f"{label} {data[key]}")
    for key in ("steps", "lr", "lr_schedule"):
        if key in train:
            parts.append(f"{key.replace('_', ' ')} {train[key]}")
    if isinstance(train.get("ema"), dict) and "decay_max" in train["ema"]:
        parts.append(f"EMA decay up to {train['ema']['decay_max']}")
    if not parts:
        return []
    return ["## Training", "", "From `recipe.toml`: " + ", ".join(parts) + ".", ""]

