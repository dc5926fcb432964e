"""The k-diffusion test vectors in ``tests/data/k_diffusion`` (see the README there), shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parent / "data" / "k_diffusion" / "kdiff_hdit_public.safetensors"


def load_reference() -> tuple[dict, dict[str, torch.Tensor]]:
    """The k-diffusion config and the tensors; fails the calling test (never skips) when the file is absent."""
    from safetensors import safe_open

    if not REFERENCE.is_file():
        pytest.fail(f"k-diffusion test vectors missing at {REFERENCE}; they are part of the repository")
    with safe_open(str(REFERENCE), "pt") as f:
        config = json.loads(f.metadata()["config"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return config, tensors
