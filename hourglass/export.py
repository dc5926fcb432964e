"""Export a model for inference without hourglass: ``torch.export`` programs and ONNX files.

What is exported is one network evaluation, ``F(x, sigma[, class_cond][, mapping_cond])`` of a
backbone (HDiT, DiT, U-ViT or a plugin's), or with ``denoiser=True`` the preconditioned
``D(x, sigma, ...)`` of the denoiser around it; sampling loops stay in Python (call the exported
network once per step). Inputs, by name:

* ``x``: ``(B, C_in, H, W)`` float32 at the model's ``input_size``;
* ``sigma``: ``(B,)`` float32 noise levels (> 0);
* ``class_cond``: ``(B,)`` int64 class ids, only for class-conditional models (``num_classes`` = no class);
* ``mapping_cond``: ``(B, mapping_cond_dim)`` float32, only when the model has one.

The output is ``F`` (or ``denoised``), ``(B, C_out, H, W)``. The batch size is dynamic unless
``dynamic_batch=False``; the image size is fixed at export time.

Attention is exported on pure-PyTorch backends: for the export every attention module is pinned
to its kernel's reference backend (``torch``; ``sdpa`` may be chosen for ``global``) and its own
pin is restored afterwards. NATTEN, flex and xformers call kernels that ``torch.export`` cannot
trace; choosing one raises :class:`ExportError` naming the module and the fix.

ONNX export needs onnx and onnxscript, and onnxruntime to run or check the file: the ``export``
extra (``pip install onnx onnxscript onnxruntime``, or ``pip install -e ".[onnx]"`` in a checkout).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hourglass.backends import KERNEL, check_backend_choice
from hourglass.models.base import Backbone
from hourglass.nn.attention import AttentionKind
from hourglass.spec import as_pair

__all__ = [
    "ExportError",
    "ExportFailed",
    "OnnxCheck",
    "EXPORTABLE_BACKENDS",
    "MIN_OPSET",
    "DEFAULT_OPSET",
    "export_backends",
    "example_inputs",
    "export_program",
    "export_onnx",
    "check_onnx",
]

#: backends that ``torch.export`` traces, besides every kernel's reference backend
EXPORTABLE_BACKENDS: dict[str, tuple[str, ...]] = {"global": ("sdpa",)}
#: the lowest ONNX opset the exporter writes (torch's ONNX exporter starts at 18)
MIN_OPSET = 18
#: the opset :func:`export_onnx` writes unless told otherwise
DEFAULT_OPSET = 18

_EXTRA = "pip install onnx onnxscript onnxruntime (the onnx extra: pip install -e '.[onnx]' in a checkout)"


class ExportError(ValueError):
    """A model, backend choice or option that cannot be exported (the message says what to do)."""


class ExportFailed(ExportError):
    """``torch.export``, the ONNX converter or onnxruntime failed on a model (or disagrees with eager)."""



def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without the colour codes torch puts in (else its type)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__

def _backbone_of(model: nn.Module) -> Backbone:
    if isinstance(model, Backbone):
        return model
    inner = getattr(model, "inner_model", None)
    if isinstance(model, nn.Module) and isinstance(inner, Backbone):
        return inner
    raise ExportError(
        f"can export a backbone (hourglass.create_model, hourglass.load(...).model) or a denoiser around one, "
        f"got {type(model).__name__}"
    )


def _attention_modules(model: nn.Module) -> list[tuple[str, AttentionKind]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionKind) and m.kernel is not None]


def export_backends(model: nn.Module, backends: Mapping[str, str] | None = None) -> dict[str, str]:
    """The backend each attention kernel of ``model`` is exported with.

    Args:
        model: a backbone or a denoiser around one.
        backends: kernel -> backend choices; a kernel not named gets its reference backend (``torch``).

    Returns:
        ``{kernel: backend}`` for every kernel the model's attention uses.

    Raises:
        ExportError: an unknown kernel or backend, or a backend that does not export (NATTEN,
            flex, xformers), naming the attention module and the backends that do.
    """
    choices = dict(backends or {})
    used = {m.kernel: name for name, m in reversed(_attention_modules(model))}  # kernel -> first module using it
    for kernel, name in choices.items():
        reason = check_backend_choice(kernel, name)
        if reason is not None:
            raise ExportError(reason)
    plan = {}
    for kernel, module in sorted(used.items()):
        reference = KERNEL.get(kernel).reference
        name = choices.get(kernel, reference)
        if name == "auto":
            name = reference
        ok = (reference, *EXPORTABLE_BACKENDS.get(kernel, ()))
        if name not in ok:
            choices_text = " or ".join(repr(n) for n in ok)
            raise ExportError(
                f"{kernel} backend {name!r} (chosen for {module}) cannot be exported: torch.export cannot trace its "
                f"kernel; export {kernel} attention with {choices_text} (drop the choice for the pure-PyTorch "
                f"reference {reference!r}: the same maths)"
            )
        plan[kernel] = name
    return plan


@contextlib.contextmanager
def _pinned(model: nn.Module, plan: Mapping[str, str]) -> Iterator[None]:
    """Pin every attention module to the backend of its kernel in ``plan``, eval mode; restore both."""
    modules = _attention_modules(model)
    saved = [(m, m.backend) for _, m in modules]
    training = [(m, m.training) for m in model.modules()]
    try:
        for _, m in modules:
            m.backend = plan[m.kernel]
        model.eval()
        yield
    finally:
        for m, backend in saved:
            m.backend = backend
        for m, mode in training:
            m.training = mode


def example_inputs(model: nn.Module, batch: int = 2, *, seed: int = 0) -> dict[str, Tensor]:
    """Inputs of one network evaluation of ``model``, on its device: what the export traces and checks.

    Args:
        model: a backbone or a denoiser around one.
        batch: the batch size.
        seed: seed of the random images, noise levels and conditioning.

    Returns:
        ``x`` ``(B, C_in, H, W)`` float32 and ``sigma`` ``(B,)`` float32 (> 0), plus ``class_cond``
        ``(B,)`` int64 for a class-conditional model (ids cycle through every class and the "no class"
        id ``num_classes``) and ``mapping_cond`` ``(B, mapping_cond_dim)`` float32 when it has one.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch must be a positive integer, got {batch!r}")
    spec: Any = _backbone_of(model).spec
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    g = torch.Generator().manual_seed(seed)
    h, w = as_pair(spec.input_size)
    inputs = {
        "x": torch.randn(batch, spec.in_channels, h, w, generator=g),
        "sigma": torch.exp(torch.randn(batch, generator=g) * 1.2 - 0.4),  # EDM's training density
    }
    if spec.num_classes:
        offset = int(torch.randint(spec.num_classes + 1, (), generator=g))
        inputs["class_cond"] = (torch.arange(batch) + offset) % (spec.num_classes + 1)
    if spec.mapping_cond_dim:
        inputs["mapping_cond"] = torch.randn(batch, spec.mapping_cond_dim, generator=g)
    return {k: v.to(device) for k, v in inputs.items()}


class _Denoised(nn.Module):
    """A denoiser with the exported call ``(x, sigma, class_cond, mapping_cond)`` (no ``**cond``)."""

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x: Tensor, sigma: Tensor, class_cond: Tensor | None = None,
                mapping_cond: Tensor | None = None) -> Tensor:
        cond = {k: v for k, v in (("class_cond", class_cond), ("mapping_cond", mapping_cond)) if v is not None}
        return self.denoiser(x, sigma, **cond)


def _network(model: nn.Module, denoiser: bool) -> nn.Module:
    """What is traced: the backbone itself, or the denoiser behind a plain signature."""
    backbone = _backbone_of(model)
    if not denoiser:
        return backbone
    if model is backbone:
        raise ExportError(
            "denoiser=True exports the preconditioning around the backbone: pass the denoiser "
            "(hourglass.load(...).denoiser, or DENOISER.build('karras', model=backbone)), or drop denoiser=True"
        )
    return _Denoised(model)


def export_program(
    model: nn.Module,
    *,
    batch: int = 2,
    dynamic_batch: bool = True,
    denoiser: bool = False,
    backends: Mapping[str, str] | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export`` one network evaluation of ``model`` on pure-PyTorch attention backends.

    Args:
        model: a backbone, or with ``denoiser=True`` a denoiser around one (``hourglass.load(...).denoiser``).
        batch: batch size of the traced example inputs (:func:`example_inputs`); at least 2 with a
            dynamic batch (``torch.export`` fixes sizes 0 and 1).
        dynamic_batch: whether the program takes any batch size, else only ``batch``.
        denoiser: export ``D(x, sigma, ...)`` of the denoiser ``model`` instead of the backbone's ``F``.
        backends: kernel -> backend for the export (default: each kernel's reference ``torch``).

    Returns:
        The program; call ``program.module()(x, sigma, class_cond=..., mapping_cond=...)`` with the
        shapes of :func:`example_inputs` (``x`` ``(B, C_in, H, W)``) for ``F`` or ``D``, ``(B, C_out, H, W)``.
        Its parameters are the model's (names as in its ``state_dict``; ``denoiser.`` in front with ``denoiser=True``).

    Raises:
        ExportError: a backend that does not export, a bad option, or a model ``torch.export`` cannot trace.
    """
    if dynamic_batch and isinstance(batch, int) and not isinstance(batch, bool) and batch < 2:
        raise ExportError(f"a dynamic batch is traced with batch >= 2 (torch.export fixes sizes 0 and 1), "
                          f"got batch={batch}; use batch=2, or dynamic_batch=False for a fixed batch of {batch}")
    net = _network(model, denoiser)
    plan = export_backends(model, backends)
    inputs = example_inputs(model, batch)
    x, sigma = inputs.pop("x"), inputs.pop("sigma")
    dynamic_shapes = None
    if dynamic_batch:
        b = torch.export.Dim("batch")
        dynamic_shapes = {"x": {0: b}, "sigma": {0: b}, **{name: {0: b} for name in inputs}}
    with _pinned(model, plan), torch.no_grad():
        try:
            return torch.export.export(net, (x, sigma), kwargs=inputs, dynamic_shapes=dynamic_shapes, strict=False)
        except Exception as exc:
            first = _first_line(exc)
            raise ExportFailed(
                f"torch.export could not trace {type(net).__name__} with attention backends {plan}: "
                f"{type(exc).__name__}: {first}"
            ) from exc


#: the optional packages ONNX export imports, each by a constant name (no module name comes from input)
_OPTIONAL: dict[str, Any] = {
    "onnx": lambda: importlib.import_module("onnx"),
    "onnxscript": lambda: importlib.import_module("onnxscript"),
    "onnxruntime": lambda: importlib.import_module("onnxruntime"),
}


def _require(module: str) -> Any:
    """Import ``module``, one of :data:`_OPTIONAL`, or raise :class:`ExportError` saying how to install it."""
    try:
        return _OPTIONAL[module]()
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the {module} package ({exc}): {_EXTRA}") from None


def _check_opset(opset: int) -> int:
    onnx = _require("onnx")
    latest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= latest:
        raise ExportError(f"opset must be an integer from {MIN_OPSET} to {latest} (the installed onnx's newest), "
                          f"got {opset!r}")
    return opset


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    batch: int = 2,
    dynamic_batch: bool = True,
    denoiser: bool = False,
    backends: Mapping[str, str] | None = None,
) -> Path:
    """Write one network evaluation of ``model`` as an ONNX file (via :func:`export_program`).

    Inputs ``x``, ``sigma`` (and ``class_cond``, ``mapping_cond`` when the model takes them), output
    ``F`` (``denoised`` with ``denoiser=True``); see the module docstring. Weights are stored in the
    file; a model over 2 GB stores them next to it, in ``<path>.data``.

    Args:
        model: a backbone, or with ``denoiser=True`` a denoiser around one.
        path: the ``.onnx`` file to write (its folder is created).
        opset: ONNX opset, from :data:`MIN_OPSET`.
        batch: batch of the traced example (>= 2 with a dynamic batch).
        dynamic_batch: the file takes any batch size, else only ``batch``.
        denoiser: export the denoiser's ``D`` instead of the backbone's ``F``.
        backends: kernel -> backend for the export (default: each kernel's reference).

    Returns:
        ``path``: a file with inputs ``x`` ``(B, C_in, H, W)``, ``sigma`` ``(B,)`` (and ``class_cond``
        ``(B,)``, ``mapping_cond`` ``(B, mapping_cond_dim)``) and output ``(B, C_out, H, W)``.

    Raises:
        ExportError: missing packages (``pip install onnx onnxscript onnxruntime``), a bad opset, or as
            :func:`export_program`.
    """
    opset = _check_opset(opset)
    _require("onnxscript")
    program = export_program(model, batch=batch, dynamic_batch=dynamic_batch, denoiser=denoiser, backends=backends)
    path = Path(path)
    try:
        # the exporter prints its progress, and logs tracebacks of opset conversions it then gives up
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            onnx_program = torch.onnx.export(
                program, (), opset_version=opset, dynamo=True, output_names=["denoised" if denoiser else "F"],
                optimize=True, verbose=False,
            )
    except Exception as exc:
        first = _first_line(exc)
        raise ExportFailed(f"the ONNX exporter failed on {type(_backbone_of(model)).__name__} at opset {opset}: "
                          f"{type(exc).__name__}: {first}") from exc
    written = onnx_program.model.opset_imports.get("")
    if written != opset:  # torch's converter keeps the opset it started from when it cannot convert
        raise ExportError(f"torch's ONNX exporter could not write opset {opset} for this model (it fell back to "
                          f"{written}); use an opset from {MIN_OPSET} up to the newest it converts to (25 with "
                          f"torch 2.14), e.g. the default {DEFAULT_OPSET}")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(path)
    return path


@dataclass(frozen=True)
class OnnxCheck:
    """What :func:`check_onnx` compared.

    Attributes:
        inputs: the input names and shapes fed to onnxruntime.
        output_shape: the shape of the output.
        max_abs_error: largest ``|onnxruntime - eager|`` over the output.
        max_abs_value: largest ``|eager|`` (the scale of the output).
    """

    inputs: dict[str, tuple[int, ...]]
    output_shape: tuple[int, ...]
    max_abs_error: float
    max_abs_value: float


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    batch: int = 3,
    tolerance: float = 1e-4,
    denoiser: bool = False,
    seed: int = 1,
) -> OnnxCheck:
    """Run the ONNX file in onnxruntime (CPU) and compare it with ``model`` in eager PyTorch.

    Args:
        model: what was exported (eager, any backends).
        path: the ``.onnx`` file.
        batch: batch size of the check (by default not the export's 2, so a dynamic batch is tested).
        tolerance: largest accepted absolute difference.
        denoiser: compare the denoiser's output (as exported with ``denoiser=True``).
        seed: seed of the inputs (:func:`example_inputs`).

    Returns:
        What was compared: the input shapes, the output shape ``(batch, C_out, H, W)`` and the errors.

    Raises:
        ExportError: onnxruntime is missing, refuses the file or inputs, or the outputs differ by
            more than ``tolerance`` (or are not finite).
    """
    ort = _require("onnxruntime")
    net = _network(model, denoiser)
    inputs = example_inputs(model, batch, seed=seed)
    training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            want = net(**inputs).float().cpu()
    finally:
        for m, mode in training:
            m.training = mode
    feed = {name: t.cpu().numpy() for name, t in inputs.items()}
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: not its notes on constants it cannot fold
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        output = session.get_outputs()[0].name
        if output in ("F", "denoised") and output != ("denoised" if denoiser else "F"):
            raise ExportError(f"{path} computes {output!r}, so check it with denoiser={output == 'denoised'}")
        if sorted(names) != sorted(feed):
            raise ExportError(f"{path} takes inputs {names}, but this model takes {list(feed)}: was it exported "
                              f"from another model{' or without denoiser=True' if denoiser else ''}?")
        (got,) = session.run(None, feed)
    except ExportError:
        raise
    except Exception as exc:
        first = _first_line(exc)
        raise ExportFailed(f"onnxruntime cannot run {path} with batch {batch}: {first}") from exc
    got_t = torch.from_numpy(got)
    if got_t.shape != want.shape:
        raise ExportFailed(f"{path} returned shape {tuple(got_t.shape)}, eager {tuple(want.shape)}")
    if not torch.isfinite(got_t).all():
        bad = int((~torch.isfinite(got_t)).sum())
        raise ExportFailed(f"onnxruntime returned {bad} non-finite values of {got_t.numel()} for {path} "
                          f"(eager: {int((~torch.isfinite(want)).sum())})")
    error = float((got_t - want).abs().max())
    check = OnnxCheck({k: tuple(v.shape) for k, v in feed.items()}, tuple(got_t.shape), error,
                      float(want.abs().max()))
    if not error <= tolerance:
        raise ExportFailed(f"onnxruntime's output of {path} differs from eager PyTorch by up to {error:.3g} "
                          f"(tolerance {tolerance:g})")
    return check
