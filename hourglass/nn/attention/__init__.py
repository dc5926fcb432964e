"""Attention: the kind contract, the shared self-attention module and the registered kinds."""

from hourglass.nn.attention._base import AttentionSpec, SelfAttention, counting_macs, scale_for_cosine_sim
from hourglass.nn.attention.kind import AttentionKind, attention_kind, pin_backends
from hourglass.nn.attention.kinds import (
    GlobalAttention,
    GlobalAttentionSpec,
    NeighborhoodAttention,
    NeighborhoodAttentionSpec,
    NoAttention,
    NoAttentionSpec,
    ShiftedWindowAttention,
    ShiftedWindowAttentionSpec,
)

__all__ = [
    "AttentionKind",
    "AttentionSpec",
    "SelfAttention",
    "attention_kind",
    "counting_macs",
    "pin_backends",
    "scale_for_cosine_sim",
    "GlobalAttention",
    "GlobalAttentionSpec",
    "NeighborhoodAttention",
    "NeighborhoodAttentionSpec",
    "ShiftedWindowAttention",
    "ShiftedWindowAttentionSpec",
    "NoAttention",
    "NoAttentionSpec",
]
