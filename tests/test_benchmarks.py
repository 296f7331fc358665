"""The benchmark scripts run and print well-formed tables (their numbers are not judged here).

The training benchmark's own arithmetic is checked against an independent computation from its JSON:
images/s from the timed calls, the loss curves' largest relative difference, the goals' verdicts.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import mae
from benchmarks import forward, train
from reference.official import skip_reason


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


def _train_run(tmp_path: Path, variants: str, rounds: int = 2) -> dict[str, object]:
    out = tmp_path / "train.json"
    args = ["--model", "tiny", "--batch", "2", "--rounds", str(rounds), "--variants", variants,
            "--curve-model", "tiny", "--curve-steps", "3", "--repeat-slow", "--json", str(out)]  # fmt: skip
    assert train.main(args) == 0
    results: dict[str, object] = json.loads(out.read_text())
    return results


def test_train_benchmark_times_every_variant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAE_OFFICIAL_REPO", raising=False)  # ours only: a known table on every machine
    results = _train_run(tmp_path, "ours,fast,bf16,official")
    rows = results["steps"]["rows"]  # type: ignore[index]
    assert set(rows) == {"ours", "bf16"} | ({"fast"} if mae.onednn_available() else set())
    for row in rows.values():
        assert len(row["seconds"]) == 2 and not row["warmup_only"]
        assert row["images_per_s"] == pytest.approx(2 / statistics.median(row["seconds"]))  # batch 2, 1 step/call
        assert row["peak_growth_bytes"] is not None and row["peak_growth_bytes"] >= 0
    curve = results["curve"]  # type: ignore[index]
    reference = curve["curves"]["ours"]
    assert len(reference) == 3 and curve["curves"].keys() == rows.keys()
    for name, losses in curve["curves"].items():
        if name != "ours":
            gap = max(abs(a / b - 1) for a, b in zip(losses, reference, strict=True))
            assert curve["max_rel_diff"][name] == pytest.approx(gap, rel=1e-12, abs=0)
    text = capsys.readouterr().out
    assert "CPU instruction sets:" in text.splitlines()[0]
    assert "The official engine was not run (MAE_OFFICIAL_REPO unset): ours only." in text
    table = _table_rows(text[: text.index("| goal |")])
    assert len(table) == 1 + len(rows) and len({len(r) for r in table}) == 1
    assert [r[0] for r in table[1:]] == [train.LABELS[n] for n in rows]
    assert all(r[5] == "-" for r in table[1:])  # no "/ official" ratio without the official engine
    goals = {r[0]: r[1:] for r in _table_rows(text[text.index("| goal |") :])}
    bf16_goal = goals["bf16 autocast >= 3x the official engine's images/s"]
    assert bf16_goal[0].startswith("not measured: MAE_OFFICIAL_REPO unset") and bf16_goal[1] == "-"


def test_train_report_ratios_and_verdicts() -> None:
    def row(images_per_s: float, warmup_only: bool = False) -> dict[str, object]:
        return {"seconds": [8 / images_per_s], "images_per_s": images_per_s, "seconds_per_step": 8 / images_per_s,
                "peak_growth_bytes": 2.5e9, "warmup_s": 1.0, "warmup_only": warmup_only}  # fmt: skip

    results = {
        "host": "test", "device": "cpu", "load_average": [0.1, 0.2],
        "args": {"model": "base", "batch": 8, "steps": 1, "rounds": 1},
        "steps": {
            "rows": {"ours": row(2.0), "fast": row(4.0), "bf16": row(0.1, warmup_only=True), "official": row(2.0)},
            "state_bytes": 1.3e9, "img_size": 224,
        },
        "curve": {"model": "small", "steps": 20, "batch": 8, "curves": {"ours": [1.0, 0.5]},
                  "max_rel_diff": {"bf16": 0.03}},
    }  # fmt: skip
    text = train.report(results)
    table = {r[0]: r[1:] for r in _table_rows(text[: text.index("| goal |")])}
    assert table[train.LABELS["fast"]][3:6] == ["2.00", "2.00", "2.5"]  # / ours, / official, peak GB
    assert table[train.LABELS["bf16"]][-1].startswith("1 (its warm-up")
    goals = {r[0]: r[1:] for r in _table_rows(text[text.index("| goal |") :])}
    assert goals["float32 fast path (`--fast`) >= 1.8x the official engine's images/s"] == ["2.00x", "met"]
    assert goals["bf16 autocast >= 3x the official engine's images/s"] == ["0.05x", "missed"]
    assert goals["bf16 loss within 2 % of float32 at every step (20 steps, small model)"] == ["3.0e-02", "missed"]
    assert "ours only" not in text


def test_train_benchmark_runs_the_official_engine(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    results = _train_run(tmp_path, "ours,official", rounds=1)
    assert set(results["steps"]["rows"]) == {"ours", "official"}  # type: ignore[index]
    # The official engine and ours train bit for bit alike in float32 (same seed, data and masks).
    curve = results["curve"]  # type: ignore[index]
    assert curve["curves"]["official"] == curve["curves"]["ours"] and curve["max_rel_diff"]["official"] == 0.0
    assert "engine_pretrain" not in sys.modules and not any(n == "util" or n.startswith("util.") for n in sys.modules)


def test_train_benchmark_is_registered_and_checks_its_variants() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "train", "--variants", "ours,nope"], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown variants ['nope']" in done.stderr
