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


def test_forward_benchmark_times_every_implementation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    monkeypatch.delenv("MAE_OFFICIAL_REPO", raising=False)  # the official code is left out: a known table
    out = tmp_path / "forward.json"
    args = ["--variants", "base", "--batches", "1", "--repeats", "1", "--no-extras", "--json", str(out)]
    assert forward.main(args) == 0
    results = json.loads(out.read_text())
    fast = mae.onednn_available()
    expected = {"ours", "transformers"} | ({forward.FAST} if fast else set())
    assert expected <= set(results["forward"][0]["seconds"])
    ceiling = results["forward"][0]["gemm_gflops"]
    assert set(ceiling) == ({"default", "oneDNN"} if fast else {"default"})
    assert all(v > 0 for v in ceiling.values())
    text = capsys.readouterr().out
    table = text[: text.index("| goal |")]
    rows = _table_rows(table)
    assert len(rows) == 2 and len({len(r) for r in rows}) == 1  # header and one row, as many cells
    assert rows[1][:2] == ["base", "1"]
    goals = _table_rows(text[text.index("| goal |") :])
    assert goals[1][0].startswith("worst ours/official, batch 1") and goals[1][1] == "not measured"  # no official
    assert goals[4][0].startswith("ViT-L batch 8") and goals[4][1] == "not measured"  # base only


def test_report_with_every_section_is_well_formed() -> None:
    seconds = {"ours": 1.0, forward.FAST: 0.5, "transformers": 1.1, "official": 1.05}
    results = {
        "machine": "test",
        "device": "cpu",
        "dtype": "float32",
        "forward": [
            {
                "variant": "large",
                "batch": 8,
                "seconds": seconds,
                "gflops": 200.0,
                "gemm_gflops": {"default": 200.0, "oneDNN": 400.0},
            }
        ],
        "backward": {"ours": 2.0, forward.FAST: 1.0},
        "bf16": {"variant": "large", "fp32": 1.0, "bf16": 0.5, "loss_rel_diff": 1e-4},
        "build": {"variant": "large", "ours": 2.0},
    }
    text = forward.report(results)
    header, separator, row = text.splitlines()[2:5]
    assert header.count("|") == separator.count("|") == row.count("|")
    cells = dict(zip(_cells(header), _cells(row), strict=True))
    assert cells["ours+oneDNN/official"] == f"{0.5 / 1.05:.3f}"
    assert cells["ceiling GFLOP/s (default, oneDNN)"] == "200, 400"
    assert cells["ours GFLOP/s (% of ceiling)"] == "200 (50 %)"
    assert cells["ours+oneDNN GFLOP/s (% of ceiling)"] == "400 (100 %)"
    assert "speed-up 2.00x" in text
    goals = {r[0]: r[1:] for r in _table_rows(text[text.index("| goal |") :])}
    assert goals["worst ours/official, batch 8 (<= 1.00)"] == ["0.952: met", "0.476: met"]
    assert goals["worst ours/transformers (<= 0.90)"] == ["0.909: missed", "0.455: met"]
    assert goals["ViT-L batch 8, fraction of the ceiling (>= 0.85)"] == ["0.5: missed", "1: met"]
    assert goals["worst ours/official, batch 1 (<= 0.90)"] == ["not measured", "not measured"]
    assert goals["bf16 autocast >= 1.5x float32, loss within 1 % (default path)"][0] == "2.00x, 1.0e-04: met"


def test_options_without_a_benchmark_name_are_refused_with_a_hint() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--repeats", "3"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "python -m benchmarks forward --repeats" in done.stderr
