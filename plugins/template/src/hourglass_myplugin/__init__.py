"""hourglass-myplugin: an hourglass plugin providing the FFN ``myplugin_mlp``.

Replace :class:`MyPluginMLP` with your component, keep :func:`register` as the entry point
(``[project.entry-points."hourglass.plugins"]`` in ``pyproject.toml``) and list every component
you add there. The tutorial ``docs/plugins.md`` of hourglass walks through each part.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from hourglass.plugin import Field, Spec, zero_init
from hourglass.plugin import register as register_component

__all__ = ["MyPluginMLP", "MyPluginMLPSpec", "register", "__version__"]

__version__ = "0.1.0"


class MyPluginMLPSpec(Spec):
    """What a recipe may set for ``myplugin_mlp`` (frozen; unknown keys are refused)."""

    type: Literal["myplugin_mlp"] = "myplugin_mlp"  # must equal the registered name
    bias: bool = Field(False, description="biases on the up and down projections")
    zero_init: bool = Field(True, description="zero-initialise the down projection, so the block starts as identity")


class MyPluginMLP(nn.Module):
    """Two-layer ReLU MLP ``Down(Drop(ReLU(Up(x))))``.

    Context (passed by the model, never set in a recipe):
        width: channels in and out.
        d_ff: hidden size of the level.
        dropout: dropout on the hidden activations.
    """

    Spec = MyPluginMLPSpec

    def __init__(self, spec: MyPluginMLPSpec, *, width: int, d_ff: int, dropout: float = 0.0, **_: object) -> None:
        super().__init__()
        self.spec = spec
        self.up_proj = nn.Linear(width, d_ff, bias=spec.bias)
        self.dropout = nn.Dropout(dropout)
        self.down_proj = nn.Linear(d_ff, width, bias=spec.bias)
        if spec.zero_init:
            zero_init(self.down_proj)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, *, width) -> (B, *, width)``."""
        return self.down_proj(self.dropout(F.relu(self.up_proj(x))))


def register() -> None:
    """Entry point of group ``hourglass.plugins``: registers every component of this plugin."""
    register_component("ffn", "myplugin_mlp", MyPluginMLP)
