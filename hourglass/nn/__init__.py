"""Leaf components, one family per module; importing this registers them."""

from hourglass.nn import attention, ffn, mapping, merge, norm, pos_emb
from hourglass.nn._groups import param_groups

__all__ = ["attention", "ffn", "mapping", "merge", "norm", "pos_emb", "param_groups"]
