"""Shared test setup: hypothesis profiles, thread count under xdist, cached models, and the skip guard.

The skip guard: under CI (`CI` set), a test may skip only for something genuinely optional on the
machine — the official checkout ($MAE_OFFICIAL_REPO), the real checkpoint files, CUDA, gloo, oneDNN.
Any other skip (a declared test dependency that fails to import, say) fails the run, so a broken install
cannot turn the proofs into skips while CI stays green.
"""

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


# What a skip reason must mention to be allowed under CI: each is absent on some machines by design.
OPTIONAL = ("MAE_OFFICIAL_REPO", "mae download", "CUDA", "gloo", "oneDNN")
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and os.environ.get("CI"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(word in reason for word in OPTIONAL):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected_skips and not hasattr(session.config, "workerinput"):  # the xdist controller, or no xdist
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unexpected_skips:
        terminalreporter.section("skips that are not allowed under CI (they fail the run)", red=True)
        for line in _unexpected_skips:
            terminalreporter.write_line(line)


@pytest.fixture
def tiny() -> mae.MaskedAutoencoderViT:
    """A tiny MAE (32x32 images, 8x8 patches), seed 0, eval mode."""
    torch.manual_seed(0)
    return mae.MaskedAutoencoderViT(small_config()).eval()
