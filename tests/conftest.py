"""Shared fixtures: deterministic seeds and small helpers."""

from __future__ import annotations

import os

import pytest
import torch

from hourglass.testing import unzero_

__all__ = ["unzero_"]  # the model tests fill zero-initialised weights with the contract's helper

os.environ.setdefault("HOURGLASS_NO_PROGRESS", "1")
# Nothing is downloaded in the tests: Hub ids resolve from caches the tests lay out, and a name that is
# neither a local path nor a cached id fails at once instead of retrying a network request.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
