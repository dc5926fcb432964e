"""hourglass: the Hourglass Diffusion Transformer as a library of interchangeable parts.

Public API: :func:`load` (a trained run, checkpoint, pretrained folder or Hub id as a :class:`Pipeline`
that samples, edits and inpaints), :func:`from_pretrained` (just the model, from the same sources;
:mod:`hourglass.hub` saves, loads and uploads pretrained folders), :func:`sample` (the functional
sampler of :mod:`hourglass.diffusion`), :func:`create_model`, :func:`list_models`, :func:`count_gmacs`,
:func:`debug_checks`; the registries live in :mod:`hourglass.registry`.
"""

from hourglass import registry as _registry
from hourglass._builtins import load_builtins as _load_builtins

_registry.add_loader(_load_builtins)

from hourglass.debug import debug_checks  # noqa: E402
from hourglass.flops import count_gmacs, count_macs  # noqa: E402
from hourglass.models import _timm as _timm_bridge  # noqa: E402
from hourglass.models import create_model, list_models  # noqa: E402

_timm_bridge.sync_if_timm_loaded()

__version__ = "0.1.0"

from hourglass.diffusion import sample  # noqa: E402
from hourglass.hub import from_pretrained  # noqa: E402
from hourglass.pipeline import Pipeline, PipelineError, load  # noqa: E402

__all__ = [
    "load", "Pipeline", "PipelineError", "sample", "from_pretrained",
    "create_model", "list_models", "count_gmacs", "count_macs", "debug_checks", "__version__",
]
