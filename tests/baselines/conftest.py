"""Fixtures shared by the baselines' tests."""

from __future__ import annotations

import pytest
import torch

from harness.models.vggt import build_vggt


@pytest.fixture(scope="module")
def tiny():
    """A vggt-tiny with the weights of seed 0 (shared by a test module; never modify it)."""
    torch.manual_seed(0)
    return build_vggt("vggt-tiny")
