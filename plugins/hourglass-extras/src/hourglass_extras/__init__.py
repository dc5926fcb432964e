"""hourglass-extras: criss-cross attention with its own kernel, a squared-ReLU FFN and the
DPM-Solver++(2S) ancestral sampler for hourglass.

* Attention ``axial``: :class:`AxialAttention`, each query attends to its own row and column (one
  softmax over the ``H + W - 1`` keys; criss-cross attention, Huang et al. 2019), computed by the
  plugin's own kernel ``axial`` with backends ``torch`` (the reference) and ``dense`` (an oracle).
* FFN ``relu2``: :class:`SquaredReLUMLP`, ``Down(Drop(ReLU(Up(x))^2))`` (Primer, So et al. 2021).
* Sampler ``dpmpp_2s_ancestral``: :class:`DPMPP2SAncestralSampler`, DPM-Solver++(2S) (Lu et al.
  2022) with ancestral noise; ``eta = 0`` is the deterministic second-order solver.

Use them in a recipe::

    [model]
    ffn = "relu2"

    [[model.levels]]
    attention = { type = "axial", d_head = 32 }

    [runtime.backends]
    axial = "dense"          # optional: pin the backend of kernel "axial" (default: auto = torch)

    [sample]
    sampler = { type = "dpmpp_2s_ancestral", eta = 1.0 }

The plugin's entry point (group ``hourglass.plugins``) is :func:`register`.
"""

from __future__ import annotations

from hourglass.plugin import register as register_component
from hourglass_extras.axial import AxialAttention, AxialAttentionSpec, register_axial
from hourglass_extras.ffn import SquaredReLUMLP, SquaredReLUMLPSpec
from hourglass_extras.samplers import DPMPP2SAncestralSampler, DPMPP2SAncestralSamplerSpec

__all__ = [
    "AxialAttention",
    "AxialAttentionSpec",
    "SquaredReLUMLP",
    "SquaredReLUMLPSpec",
    "DPMPP2SAncestralSampler",
    "DPMPP2SAncestralSamplerSpec",
    "register",
    "__version__",
]

__version__ = "0.1.0"


def register() -> None:
    """Entry point of group ``hourglass.plugins``: registers kernel ``axial`` with backends ``torch`` and
    ``dense``, attention ``axial``, FFN ``relu2`` and sampler ``dpmpp_2s_ancestral``."""
    register_axial()
    register_component("ffn", "relu2", SquaredReLUMLP)
    register_component("sampler", "dpmpp_2s_ancestral", DPMPP2SAncestralSampler)
