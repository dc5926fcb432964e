"""``hourglass show``: a model preset as recipe TOML, a component's fields and defaults, or a run.

``NAME`` is a preset (``hdit_l``), a component (``neighborhood``), ``FAMILY:NAME`` when a
name exists in several families (``mapping:hdit``, ``pos_emb:none``), or a run directory or
checkpoint file: its recipe in brief, the step of its newest checkpoint, the plugin components
it needs and its class names (only the checkpoint's header is read).
"""

from __future__ import annotations

import argparse
from typing import Any

from hourglass.cli._common import CLIError, add_json_option, format_table, print_json

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run", "find_components"]

COMMAND = "show"


HELP = "a preset as TOML, a component's fields, defaults and backends, or a run: recipe, step, class names"
EXAMPLES = (
    "hourglass show hdit_imagenet256        # the preset's [model] section",
    "hourglass show neighborhood            # options of neighborhood attention",
    "hourglass show sampler:dpmpp_3m_sde",
    "hourglass show runs/quickstart         # a run: recipe summary, step, class names",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass show``."""
    parser.add_argument("name", metavar="NAME", help="preset, component, FAMILY:NAME, or a run directory / checkpoint")
    add_json_option(parser)


def find_components(name: str) -> list[tuple[str, str]]:
    """``[(family, component)]`` matching ``name`` or ``family:name``."""
    from hourglass.registry import REGISTRIES

    if ":" in name:
        family, _, comp = name.partition(":")
        if family not in REGISTRIES:
            raise CLIError(f"unknown family {family!r}; known: {', '.join(REGISTRIES)}")
        REGISTRIES[family].get(comp)  # raises RegistryError listing the known names
        return [(family, comp)]
    return [(family, name) for family, reg in REGISTRIES.items() if name in reg]


def _show_preset(name: str, as_json: bool) -> None:
    from hourglass.models.factory import model_spec
    from hourglass.recipe import plain_data, toml

    data = plain_data(model_spec(name).model_dump(mode="python"))
    if as_json:
        print_json({"preset": name, "model": data})
        return
    header = (f"model preset {name!r}, resolved (every default filled in).\n"
              f"Paste into a recipe, or write [model] preset = \"{name}\" and override single keys.")
    print(toml.dumps({"model": data}, header=header), end="")


def _show_component(family: str, name: str) -> dict[str, Any]:
    from hourglass.registry import REGISTRIES

    return REGISTRIES[family].describe(name)


def run(args: argparse.Namespace) -> int:
    """Print the preset or component(s) named ``args.name``."""
    from hourglass.models.factory import list_models

    name = args.name
    if ":" not in name and name in list_models():
        _show_preset(name, args.json)
        return 0
    if _is_path(name):
        return _show_run(name, args.json)
    matches = find_components(name)
    if not matches:
        import difflib

        from hourglass.registry import REGISTRIES

        known = list_models() + sorted({n for reg in REGISTRIES.values() for n in reg.names()})
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise CLIError(f"no preset or component is called {name!r}.{hint} See `hourglass list`.")
    infos = [_show_component(f, n) for f, n in matches]
    if args.json:
        print_json(infos if len(infos) > 1 else infos[0])
        return 0
    from hourglass.recipe import toml

    blocks = []
    for info in infos:
        lines = [f"{info['family']} {info['name']!r} (provided by {info['provider']})"]
        if info.get("doc"):
            lines.append(info["doc"])
        facts = info.get("facts", {})
        if facts:
            lines.append("declares: " + "; ".join(f"{k} = {_fact(v)}" for k, v in facts.items()))
        if facts.get("kernel"):
            lines.append(f"backends of its kernel: {', '.join(facts['backends'])} (chosen at run time: "
                         f"[runtime.backends] {facts['kernel']} = \"NAME\")")
        rows = [
            [f, d["type"], "(required)" if d["required"] else _value(d["default"]), d["description"]]
            for f, d in info["fields"].items()
        ]
        lines.append(format_table(["field", "type", "default", "description"], rows) if rows else "no options")
        example = {"type": info["name"], **{f: d["default"] for f, d in info["fields"].items() if not d["required"]}}
        try:
            lines.append(f"as TOML: {toml.value_text(_tomlable(example))}")
        except TypeError:
            pass
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


def _is_path(name: str) -> bool:
    from pathlib import Path

    if "/" in name or "\\" in name or name.endswith((".safetensors", ".toml", ".pth", ".pt", ".ckpt")):
        return True
    return Path(name).exists() and ":" not in name and not find_components(name)


def _show_run(name: str, as_json: bool) -> int:
    """A run directory or checkpoint: recipe summary, step, plugins needed, class names."""
    from hourglass.recipe import toml
    from hourglass.train.checkpoint import read_class_names, resolve_checkpoint

    info = resolve_checkpoint(name, report=None, tensors=False)
    names = read_class_names(name)
    try:
        recipe = toml.loads(info.recipe_toml) if info.recipe_toml else {}
    except toml.TOMLDecodeError:
        recipe = {}
    model = info.model_spec or recipe.get("model") or {}
    if as_json:
        print_json({"path": name, "checkpoint": str(info.path), "step": info.step, "model": model,
                    "recipe": recipe, "plugins": info.plugins, "class_names": names})
        return 0
    size = model.get("input_size")
    size = f"{size}x{size}" if isinstance(size, int) else "x".join(map(str, size or ["?"]))
    classes = int(model.get("num_classes") or 0)
    lines = [f"{name}: checkpoint {info.path}, step {info.step}",
             f"model: {model.get('type', '?')} at {size}, {model.get('in_channels', '?')} channel(s), "
             + (f"{classes} classes" if classes else "unconditional")
             + (f", {len(model['levels'])} levels" if isinstance(model.get("levels"), list) else "")]
    data, train, sample = (recipe.get(k) or {} for k in ("data", "train", "sample"))
    dataset = data.get("dataset")
    if recipe:
        kind = dataset.get("type") if isinstance(dataset, dict) else dataset
        where = f" at {dataset['root']}" if isinstance(dataset, dict) and "root" in dataset else ""
        sampler = sample.get("sampler")
        sampler = sampler.get("type") if isinstance(sampler, dict) else sampler
        lines.append(f"data: {kind}{where}, batch {data.get('batch_size', '?')}; train: {train.get('steps', '?')} "
                     f"steps, lr {train.get('lr', '?')}; sample: {sampler or '?'}, {sample.get('steps', '?')} steps, "
                     f"cfg {sample.get('cfg_scale', '?')}")
    else:
        lines.append("recipe: none embedded (weights only)")
    vae = recipe.get("vae")
    if isinstance(vae, dict):  # latent diffusion: the model's size and channels are the latents'
        sub = f" (subfolder {vae['subfolder']})" if vae.get("subfolder") else ""
        lines.append(f"vae: {vae.get('type', '?')} at {vae.get('path', '?')}{sub}: the model works on its latents, "
                     "samples are decoded")
    if info.plugins:
        lines.append("plugin components: " + ", ".join(f"{c} ({d})" for c, d in info.plugins.items()))
    if names:
        lines.append(f"classes ({len(names)}, id name): " + ", ".join(f"{i} {n}" for i, n in enumerate(names)))
    elif classes:
        lines.append(f"classes: ids 0..{classes - 1} (no names recorded)")
    print("\n".join(lines))
    return 0


def _fact(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _value(v: Any) -> str:
    from hourglass.recipe import toml

    try:
        return toml.value_text(_tomlable(v)) if v is not None else "none"
    except TypeError:
        return repr(v)


def _tomlable(v: Any) -> Any:
    from hourglass.recipe import plain_data

    return plain_data(v)
