"""Attention: the shared module and the registered kinds."""

from hourglass.nn.attention._base import AttentionSpec, SelfAttention, counting_macs, scale_for_cosine_sim
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
    "AttentionSpec",
    "SelfAttention",
    "counting_macs",
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
