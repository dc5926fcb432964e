"""DINOv2 ViT-L/14 features for FD_DINOv2, computed as dgm-eval computes them.

FD_DINOv2 (Stein et al. 2023, "Exposing flaws of generative model evaluation metrics and their
unfair treatment of diffusion models"; the HDiT paper's FFHQ-1024 metric) is the Fréchet distance
of DINOv2 ViT-L/14 features instead of Inception ones. The features follow the paper's code,
dgm-eval's ``dgm_eval/models/dinov2.py``, step by step:

1. each 8-bit RGB image is resized to 224 x 224 with PIL's bicubic filter (torchvision's
   ``Resize((224, 224), BICUBIC)`` on a PIL image; back to 8 bits, as PIL does);
2. scaled to [0, 1] and normalised with the ImageNet mean and std;
3. the network's output: the final-LayerNorm'd CLS token (1024 values), what
   ``torch.hub.load("facebookresearch/dinov2", "dinov2_vitl14")(x)`` returns.

The network is timm's ``vit_large_patch14_dinov2.lvd142m`` architecture built at 224 px. The weights
hold position embeddings for 518 px (a 37 x 37 grid); they are resized to the 16 x 16 grid once,
exactly as DINOv2's own ``interpolate_pos_encoding`` does at every forward (bicubic, no antialias,
scale factor ``(16 + 0.1) / 37``), not with timm's antialiased resize, so the features match the
reference network's.

Weights are read locally, never downloaded (:func:`find_dinov2_weights`), first match wins:

1. ``path=`` (CLI ``--dinov2 PATH``) or the environment variable ``HOURGLASS_DINOV2``: a
   ``.safetensors`` file or a torch file read with ``weights_only=True``, in timm's layout
   (``model.safetensors`` of the Hub repo) or Meta's (``dinov2_vitl14_pretrain.pth``);
2. the Hugging Face Hub cache (``HF_HUB_CACHE`` / ``HF_HOME``): ``timm/vit_large_patch14_dinov2.lvd142m``,
   fetched once with ``hf download timm/vit_large_patch14_dinov2.lvd142m model.safetensors``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hourglass.evaluation._errors import FeatureNetworkUnavailable
from hourglass.evaluation.features import FeatureExtractor

__all__ = [
    "DINOV2_ARCH",
    "DINOV2_HUB_ID",
    "DINOv2Extractor",
    "ENV_DINOV2",
    "dinov2_weights_hint",
    "find_dinov2_weights",
    "load_dinov2",
    "load_dinov2_state_dict",
    "probe_dinov2",
    "resample_pos_embed_dinov2",
    "resize_bicubic_pil",
]

#: timm architecture (and pretrained tag) of FD_DINOv2's network
DINOV2_ARCH = "vit_large_patch14_dinov2.lvd142m"
#: Hugging Face Hub repository of its weights (timm's copy of Meta's dinov2_vitl14_pretrain.pth)
DINOV2_HUB_ID = "timm/vit_large_patch14_dinov2.lvd142m"
#: environment variable naming a local weights file (same as ``--dinov2 PATH``)
ENV_DINOV2 = "HOURGLASS_DINOV2"

INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_INTERPOLATE_OFFSET = 0.1  # DINOv2's interpolate_offset (hub models)


def dinov2_weights_hint(arch: str = DINOV2_ARCH) -> str:
    """How to provide the weights (for error messages and docs)."""
    hub_id = f"timm/{arch}"
    return (
        f"fetch them once with `hf download {hub_id} model.safetensors` (into the Hugging Face cache, where they are "
        f"then found offline), or download model.safetensors from https://huggingface.co/{hub_id} (or Meta's "
        "dinov2_vitl14_pretrain.pth) and pass --dinov2 PATH or set "
        f"{ENV_DINOV2}=PATH"
    )


def _hub_cache_dir() -> str:
    explicit = os.environ.get("HF_HUB_CACHE", "").strip()
    if explicit:
        return explicit
    home = os.environ.get("HF_HOME", "").strip()
    if home:
        return os.path.join(home, "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _from_hub_cache(repo_id: str) -> tuple[Path | None, str]:
    from huggingface_hub import try_to_load_from_cache

    cache = _hub_cache_dir()
    for filename in _HUB_FILES:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found), f"Hugging Face cache {found}"
    return None, f"{repo_id} is not in the Hugging Face cache ({cache})"


def find_dinov2_weights(
    path: str | os.PathLike | None = None, *, arch: str = DINOV2_ARCH
) -> tuple[Path | None, str]:
    """Where the DINOv2 weights are, without loading or downloading anything.

    Args:
        path: an explicit file (``--dinov2``); overrides ``HOURGLASS_DINOV2``.
        arch: the timm architecture whose Hub repository ``timm/<arch>`` is looked up in the cache.

    Returns:
        ``(file, how it was found)``, or ``(None, why not)``.
    """
    env = os.environ.get(ENV_DINOV2, "").strip()
    if path is not None or env:
        source = "--dinov2" if path is not None else ENV_DINOV2
        file = Path(path if path is not None else env).expanduser()
        if not file.is_file():
            return None, f"{source} {file} does not exist"
        return file, f"{source} {file}"
    return _from_hub_cache(f"timm/{arch}")


def probe_dinov2() -> tuple[bool, str]:
    """``(available, detail)`` of FD_DINOv2's network: the weights file, or why there is none."""
    file, detail = find_dinov2_weights()
    return file is not None, str(file) if file is not None else detail


def resize_bicubic_pil(images: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Resize 8-bit RGB images to ``size x size`` with PIL's bicubic filter, one by one (dgm-eval's resize).

    Args:
        images: ``uint8 (B, 3, H, W)`` on the CPU.
        size: the output side.

    Returns:
        ``uint8 (B, 3, size, size)``.
    """
    from PIL import Image

    out = []
    for image in images.cpu():
        pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), mode="RGB")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
    return torch.stack(out)


def resample_pos_embed_dinov2(pos_embed: Tensor, grid: int, offset: float = _INTERPOLATE_OFFSET) -> Tensor:
    """Resize a ViT's absolute position embeddings as DINOv2's ``interpolate_pos_encoding`` does.

    Args:
        pos_embed: ``(1, 1 + M^2, C)``: the CLS token's embedding, then an ``M x M`` grid.
        grid: the new grid side (``image side // patch size``).
        offset: DINOv2's ``interpolate_offset``: the scale factor is ``(grid + offset) / M``.

    Returns:
        ``(1, 1 + grid^2, C)`` in the input's dtype.
    """
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"position embeddings of {n} patches do not form a square grid")
    if m == grid:
        return pos_embed
    dtype, dim = pos_embed.dtype, pos_embed.shape[-1]
    pos = pos_embed.float()
    scale = (grid + offset) / m
    patches = F.interpolate(pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2), scale_factor=(scale, scale),
                            mode="bicubic", antialias=False)
    if tuple(patches.shape[-2:]) != (grid, grid):
        raise ValueError(f"resizing the {m} x {m} position grid gave {tuple(patches.shape[-2:])}, not {grid} x {grid}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([pos[:, :1], patches], dim=1).to(dtype)


def load_dinov2_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read DINOv2 weights from a safetensors or torch file (``weights_only=True``), timm's or Meta's layout.

    Raises:
        FeatureNetworkUnavailable: unreadable, or not a ViT state dict.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise FeatureNetworkUnavailable(
            f"cannot read DINOv2 weights from {path} ({type(exc).__name__}: {first}); pass a .safetensors file or a "
            f"torch state dict; {dinov2_weights_hint()}"
        ) from None
    for key in ("model", "state_dict", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not isinstance(state.get("pos_embed"), Tensor) or "cls_token" not in state:
        raise FeatureNetworkUnavailable(
            f"{path} does not hold DINOv2 ViT weights (no 'pos_embed' / 'cls_token' entries); {dinov2_weights_hint()}"
        )
    if "register_tokens" in state:
        raise FeatureNetworkUnavailable(f"{path} holds a DINOv2 with registers; FD_DINOv2 uses the plain "
                                        f"dinov2_vitl14 ({DINOV2_HUB_ID})")
    state = {k: v for k, v in state.items() if k != "mask_token" and not k.startswith("head.")}
    return state


def _build(state: dict[str, Tensor], arch: str, path: Path, device: torch.device) -> nn.Module:
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, img_size=INPUT_SIZE, num_classes=0)
    width = int(model.pos_embed.shape[-1])
    if int(state["pos_embed"].shape[-1]) != width:
        raise FeatureNetworkUnavailable(
            f"{path} holds a ViT with {int(state['pos_embed'].shape[-1])}-d tokens, but {arch} has {width}: FD_DINOv2 "
            f"uses DINOv2 ViT-L/14 ({DINOV2_HUB_ID})"
        )
    grid = model.patch_embed.grid_size
    state = dict(state)
    state["pos_embed"] = resample_pos_embed_dinov2(state["pos_embed"], int(grid[0]))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise FeatureNetworkUnavailable(
            f"{path} does not fit timm's {arch}: {' '.join(str(exc).split())[:300]}"
        ) from None
    return model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)


def _file_tag(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}@{st.st_size}:{st.st_mtime_ns}"


class DINOv2Extractor(FeatureExtractor):
    """A DINOv2 ViT behind the :class:`FeatureExtractor` interface (see the module docstring).

    Args:
        model: timm ViT built at 224 px with ``num_classes=0`` (its output is the normed CLS token).
        name: the extractor's name (cache key: architecture, preprocessing and weights).
        device: where the network runs.
    """

    def __init__(self, model: nn.Module, *, name: str, device: str | torch.device = "cpu") -> None:
        self.model, self.name = model, name
        self.device = torch.device(device)
        self.dim = int(getattr(model, "num_features", 0) or 0)
        self.mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def prepare(self, images: Tensor) -> Tensor:
        return resize_bicubic_pil(images, INPUT_SIZE)

    def forward(self, images: Tensor) -> Tensor:
        x = (images.float() / 255 - self.mean) / self.std
        return self.model(x)


def load_dinov2(
    path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", arch: str = DINOV2_ARCH
) -> DINOv2Extractor:
    """Load FD_DINOv2's network from a local file or the Hugging Face cache (never downloads).

    Args:
        path: a weights file (``--dinov2``); None: ``HOURGLASS_DINOV2``, then the Hub cache.
        device: where the network runs.
        arch: the timm architecture (FD_DINOv2 is defined with the default, ViT-L/14; smaller
            DINOv2 ViTs serve tests).

    Returns:
        The extractor (``dim`` 1024 for ViT-L/14).

    Raises:
        FeatureNetworkUnavailable: no weights found, or a file that is not this DINOv2; the message
            says which file to get and where to put it.
    """
    file, detail = find_dinov2_weights(path, arch=arch)
    if file is None:
        raise FeatureNetworkUnavailable(f"no DINOv2 weights for fd_dinov2: {detail}; {dinov2_weights_hint(arch)}")
    device = torch.device(device)
    model = _build(load_dinov2_state_dict(file), arch, file, device)
    short = arch.split(".")[0]
    return DINOv2Extractor(model, name=f"{short}@{INPUT_SIZE}-pil-bicubic-cls:{_file_tag(file)}", device=device)
