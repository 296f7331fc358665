"""Shared test setup: hypothesis profiles, thread count under xdist, and cached full-size models."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import mae
from helpers import small_config

# CI: derandomised (the same examples on every run) and no per-example deadline (2 slow cores).
settings.register_profile(
    "ci", derandomize=True, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Under `pytest -n N`, share the cores between the workers instead of oversubscribing them.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))


@pytest.fixture
def tiny() -> mae.MaskedAutoencoderViT:
    """A tiny MAE (32x32 images, 8x8 patches), seed 0, eval mode."""
    torch.manual_seed(0)
    return mae.MaskedAutoencoderViT(small_config()).eval()
