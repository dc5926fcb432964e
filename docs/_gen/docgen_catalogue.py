"""Generate the component catalogue (``components.md``) from ``hourglass.registry.REGISTRIES``.

One section per family, one subsection per registered component (plugins included, when their
distributions are installed): its summary, provider distribution, runtime backends, a recipe
snippet and every option with type, default and description. Model presets follow the models.
"""

from __future__ import annotations

from typing import Any

from docgen_common import anchor, code, first_paragraph, md_cell, md_text, nested_tables, spec_table, toml_value

__all__ = ["FAMILY_NOTES", "component_id", "catalogue_markdown", "backends_table"]

#: what each family is for and where a recipe sets it (families without a note still get listed)
FAMILY_NOTES: dict[str, str] = {
    "attention": "How tokens of a level mix. The *kind* (set per level: `[[model.levels]] attention = ...`) "
    "is the maths and the weights; it names the *kernel* that computes it, and the kernel's *backend* is a "
    "runtime choice (`[runtime] backends`, keyed by kernel), see "
    "[kinds, kernels and backends](concepts.md#kinds-and-backends).",
    "pos_emb": "Positional information: HDiT rotates queries and keys (2D axial RoPE); DiT and U-ViT add "
    "position vectors to the tokens. Set with `[model] pos_emb = ...`.",
    "ffn": "The feed-forward half of every layer (`[model] ffn = ...`); receives `width`, `d_ff` and `dropout` "
    "from its level.",
    "norm": "The pre-norm of every attention and FFN block, and how the conditioning vector enters "
    "(`[model] norm = ...`).",
    "merge": "Token merges: k x k tokens into one; the patch embedding (k = patch size) and the downsampling "
    "between levels (k = 2) (`[model] merge = ...`).",
    "skip": "Decoder skips: each token split back into 2x2 finer ones and combined with the encoder's skip "
    "(`[model] skip = ...`; the older key `split` still loads, with a deprecation message).",
    "mapping": "The conditioning network: noise level, class and augmentation labels into one vector "
    "(`[model] mapping = ...`).",
    "model": "Whole backbones: `[model] type = ...`, or `preset = ...` to start from a preset.",
    "denoiser": "Preconditioning of the backbone, `D(x; sigma)` (`[diffusion] denoiser = ...`).",
    "weighting": "Loss weighting `w(sigma)` (`[diffusion] weighting = ...`).",
    "sigma_density": "Distribution of the training noise levels (`[diffusion] sigma_density = ...`).",
    "sampler": "ODE/SDE samplers (`[sample] sampler = ...`, `hourglass sample --sampler NAME`).",
    "schedule": "Sampling noise-level schedules (`[sample] schedule = ...`).",
    "dataset": "Training data (`[data] dataset = ...`).",
    "vae": "Autoencoders for latent diffusion (`[vae]`, see [Latent diffusion](vae.md)): the model learns their "
    "latents, the trainer encodes each batch and sampling decodes.",
    "tracker": "Experiment trackers the trainer logs metrics and sample grids to, on rank 0 (`[train] trackers = "
    "[\"jsonl\", \"tensorboard\"]`, default `[\"jsonl\"]`; see [Experiment trackers](quickstart.md#trackers)).",
}


def component_id(family: str, name: str) -> str:
    """HTML id of component ``name`` of ``family`` in the catalogue."""
    return anchor(family, name)


def _provider_text(provider: str, statuses: list[Any]) -> str:
    if provider == "hourglass":
        return "built in (`hourglass-diffusion`)"
    for status in statuses:
        if status.distribution == provider or status.name == provider:
            version = f" {status.version}" if status.version else ""
            return f"plugin `{provider}`{version} (entry point `{status.name}`)"
    return f"`{provider}`"


def _plugins_section(statuses: list[Any]) -> list[str]:
    lines = ["## Plugins", ""]
    if not statuses:
        lines.append(
            "No plugin (entry-point group `hourglass.plugins`) was loaded when this page was generated, so only "
            "the built-in components are listed. See [Writing a plugin](plugins.md)."
        )
        return lines + [""]
    lines += [
        "Besides the built-in components, this page lists those of the example plugins in the repository's "
        "`plugins/` folder (installed with `pip install -e plugins/NAME`, as the test suite's setup does); each "
        "of their components names the plugin that provides it. An installation has the components of the "
        "plugins it has installed: `hourglass plugins` and `hourglass list` show them. "
        "See [Writing a plugin](plugins.md).",
        "",
        "| entry point | distribution | version | status | components |",
        "|---|---|---|---|---|",
    ]
    for s in statuses:
        comps = ", ".join(code(c) for c in s.components) or (md_cell(s.error or "") if s.error else "")
        lines.append(f"| `{s.name}` | `{s.distribution or '?'}` | {s.version or ''} | {s.status} | {comps} |")
    return lines + [""]


def _component_section(registry: Any, name: str, statuses: list[Any]) -> list[str]:
    info = registry.describe(name)
    family = registry.family
    obj = registry.get(name)
    lines = [f"### `{name}` {{#{component_id(family, name)}}}", ""]
    summary = info.get("doc") or first_paragraph(getattr(obj, "__doc__", ""))
    if summary:
        lines += [md_text(" ".join(summary.split())), ""]
    facts = [f"**Provided by:** {_provider_text(info['provider'], statuses)}"]
    module = getattr(obj, "__module__", "")
    qualname = getattr(obj, "__qualname__", getattr(obj, "__name__", ""))
    if module and qualname:
        facts.append(f"**Class:** `{module}.{qualname}`")
    for key, value in info.get("facts", {}).items():
        shown = ", ".join(f"`{v}`" for v in value) if isinstance(value, list) else f"`{value}`"
        facts.append(f"**{key.replace('_', ' ').capitalize()}:** {shown or '-'}")
    lines += ["  \n".join(facts), ""]
    spec_cls = getattr(obj, "Spec", None)
    if spec_cls is not None:
        try:
            default = registry.validate(name)
        except ValueError:  # required options: no default instance to show (pydantic errors are ValueErrors)
            default = None
        if default is not None and family != "model":
            lines += ["Its default, written out in full:", "", "```toml", f"{family} = {toml_value(default)}", "```", ""]
        lines += [spec_table(spec_cls, component_id(family, name), "components.md"), ""]
        lines += nested_tables(spec_cls, family, component_id(family, name), 4, "components.md")
    return lines


def _presets_section() -> list[str]:
    import torch

    from hourglass.models import list_models, model_spec
    from hourglass.registry import ATTENTION, MODEL

    lines = [
        "### Model presets {#model-presets}",
        "",
        "A preset is a model spec with a name: `hourglass.create_model(NAME)`, `timm.create_model(NAME)` "
        "after `import hourglass`, `[model] preset = \"NAME\"` in a recipe, `hourglass show NAME` to print it "
        "as TOML. Parameters are counted on a meta-device build when this page is generated.",
        "",
        "| preset | model | input size | layout | classes | params |",
        "|---|---|---|---|---|---|",
    ]
    for name in list_models():
        spec = model_spec(name)
        with torch.device("meta"):
            model = MODEL.build(spec)
        params = sum(p.numel() for p in model.parameters())
        layout = "; ".join(
            f"{stage.layers} x {stage.width} {ATTENTION.get(stage.attention.type).label(stage.attention)}"
            for stage in model.stages()
        )
        patch = toml_value(spec.patch_size)
        size = toml_value(spec.input_size)
        lines.append(
            f"| <a id=\"{anchor('preset', name)}\"></a>`{name}` | [{spec.type}](#{component_id('model', spec.type)}) "
            f"| {size} | patch {patch}; {md_cell(layout)} | {getattr(spec, 'num_classes', 0)} | {params / 1e6:.1f}M |"
        )
    return lines + [""]


def catalogue_markdown() -> str:
    """The whole catalogue page as Markdown (loads plugins through the registries)."""
    from hourglass.registry import REGISTRIES, load_plugins

    statuses = load_plugins()
    lines = [
        "# Component catalogue",
        "",
        "Every built-in component, and those of the example plugins in `plugins/`, generated from "
        "`hourglass.registry.REGISTRIES` (the same information as `hourglass list` and `hourglass show NAME`). "
        "A recipe field of a family takes a component's name (`ffn = \"geglu\"`) or a table with its "
        "`type` and options (`ffn = {type = \"geglu\", bias = true}`); options left out keep the defaults "
        "listed here. See [Concepts](concepts.md) for how the pieces fit together.",
        "",
        "| family | components |",
        "|---|---|",
    ]
    for family, registry in REGISTRIES.items():
        links = ", ".join(f"[`{n}`](#{component_id(family, n)})" for n in registry.names())
        lines.append(f"| [{family}](#{anchor(family)}) | {links} |")
    lines += [""] + _plugins_section(statuses)
    for family, registry in REGISTRIES.items():
        lines += [f"## {family} {{#{anchor(family)}}}", ""]
        if family in FAMILY_NOTES:
            lines += [FAMILY_NOTES[family], ""]
        for name in registry.names():
            lines += _component_section(registry, name, statuses)
        if family == "model":
            lines += _presets_section()
    return "\n".join(lines) + "\n"


def _backend_provider(key: str) -> str:
    from hourglass.backends import BACKEND

    provider = BACKEND.provider(key)
    return "built in" if provider == "hourglass" else f"plugin `{provider}`"


def _auto_text(backend: Any) -> str:
    """``auto``'s rank of a backend per device type, e.g. ``cuda 1, other devices 0``."""
    from hourglass.backends._registry import ANY_DEVICE

    ranks = [f"{device} {rank}" for device, rank in sorted(backend.auto.items()) if device != ANY_DEVICE]
    if ANY_DEVICE in backend.auto:
        ranks.append(f"{'other devices' if ranks else 'any device'} {backend.auto[ANY_DEVICE]}")
    elif ranks:
        ranks.append("other devices: never")
    return ", ".join(ranks) if ranks else "never (explicit choice only)"


def backends_table() -> str:
    """Kernels x backends (plugins' included): who provides each and the rank ``auto`` gives it per device type.

    Only what the backends declare, so the table is the same on every machine (which of them runs
    on a given machine is ``hourglass.backends.available_backends``'s answer there).
    """
    from hourglass.backends import BACKEND, KERNEL, backend_names, kernel_names

    lines = ["| kernel | backend | provided by | `auto` rank (lower is tried first) |", "|---|---|---|---|"]
    for kernel in kernel_names():
        reference = KERNEL.get(kernel).reference
        for name in backend_names(kernel):
            shown = f"`{name}` (reference)" if name == reference else f"`{name}`"
            provider = _backend_provider(f"{kernel}:{name}")
            lines.append(f"| `{kernel}` | {shown} | {provider} | {_auto_text(BACKEND.get(f'{kernel}:{name}'))} |")
    return "\n".join(lines)
