"""The benchmark scripts run and print well-formed tables (their numbers are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mae
from benchmarks import forward


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table_rows(text: str) -> list[list[str]]:
    return [_cells(line) for line in text.splitlines() if line.startswith("| ")]


def test_forward_benchmark_times_every_implementation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "forward.json"
    args = ["--variants", "base", "--batches", "1", "--repeats", "1", "--no-extras", "--json", str(out)]
    assert forward.main(args) == 0
    results = json.loads(out.read_text())
    fast = mae.onednn_available()
    expected = {"ours", "transformers"} | ({forward.FAST} if fast else set())
    assert expected <= set(results["forward"][0]["seconds"])
    assert set(results["gemm_gflops"]) == ({"default", "oneDNN"} if fast else {"default"})
    assert all(v > 0 for v in results["gemm_gflops"].values())
    rows = _table_rows(capsys.readouterr().out)
    assert len(rows) == 2 and len({len(r) for r in rows}) == 1  # header and one row, as many cells
    assert rows[1][:2] == ["base", "1"]


def test_report_with_every_section_is_well_formed() -> None:
    seconds = {"ours": 1.0, forward.FAST: 0.5, "transformers": 1.1, "official": 1.05}
    results = {
        "machine": "test",
        "device": "cpu",
        "dtype": "float32",
        "gemm_gflops": {"default": 200.0, "oneDNN": 400.0},
        "forward": [{"variant": "large", "batch": 8, "seconds": seconds, "gflops": 200.0}],
        "backward": {"ours": 2.0, forward.FAST: 1.0},
        "bf16": {"variant": "large", "fp32": 1.0, "bf16": 0.5, "loss_rel_diff": 1e-4},
        "build": {"variant": "large", "ours": 2.0},
    }
    text = forward.report(results)
    header, separator, row = text.splitlines()[2:5]
    assert header.count("|") == separator.count("|") == row.count("|")
    cells = dict(zip(_cells(header), _cells(row), strict=True))
    assert cells["ours+oneDNN/official"] == f"{0.5 / 1.05:.3f}"
    assert cells["ours GFLOP/s (% of 400)"] == "200 (50 %)"
    assert "speed-up 2.00x" in text


def test_options_without_a_benchmark_name_are_refused_with_a_hint() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--repeats", "3"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "python -m benchmarks forward --repeats" in done.stderr
