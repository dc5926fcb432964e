"""Shared fixtures: deterministic seeds and small helpers."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HOURGLASS_NO_PROGRESS", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def unzero_(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Fill every all-zero (zero-initialised) parameter with noise, so gradients reach every layer."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.randn_like(p) * std)
    return module
