"""`mae verify` end to end: a subprocess writing a report, and a failing check turning the exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mae import verify


@pytest.mark.xdist_group("base")
def test_verify_base_passes_and_writes_a_json_report(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("timm")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "mae", "verify", "--variant", "base", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| ViT-B/16 | forward, pixel target | transformers | pass | ratios 0.75/0.0/0.9: bit-equal" in done.stdout
    assert "[mae verify] ViT-B/16: built" in done.stderr  # progress goes to stderr
    rows = json.loads(report.read_text())
    statuses = {(r["check"], r["reference"]): r["status"] for r in rows}
    assert statuses[("keys: official counts", "official")] == "pass"
    assert statuses[("encoder features", "timm")] == "pass"
    assert statuses[("forward, norm-pix target", "transformers")] == "pass"
    assert {r["status"] for r in rows} <= {"pass", "skip", "info"}


@pytest.mark.xdist_group("base")
def test_a_failing_check_fails_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(verify.PARAM_COUNTS, "base", 1)
    report = tmp_path / "report.md"
    assert verify.run(["base"], report) == 1
    assert "| ViT-B/16 | keys: official counts | official | FAIL |" in report.read_text()


def test_help_lists_verify() -> None:
    done = subprocess.run([sys.executable, "-m", "mae", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "verify" in done.stdout
