"""The fine-tuning benchmark runs both engines and prints a well-formed table (its numbers are not judged here).

Its arithmetic is checked against independent computations from its JSON: images/s from the timed calls, the
learning rate the engines set (the recipe's cosine, written out here), the loss of a fresh head on 1000 classes
(ln 1000), and the goal's bound and verdict from the host's measured ceilings, for an AVX2-like host (no product
gain: "not slower than the official engine") and an AVX-512-like one (the issue's 2x).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import finetune, host
from reference.official import skip_reason


def _table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


def _goal_rows(text: str) -> dict[str, list[str]]:
    """The goals table by goal, its text up to the first parenthesis or colon."""
    rows = _table_rows(text[text.index("| goal |") :])[1:]
    return {r[0].split(" (")[0].split(":")[0]: r[1:] for r in rows}


def _bound(ceilings: dict[str, Any]) -> float:
    """The goal's bound on the measured host: 2x, at most the largest real product gain over float32 MKL / NOISE."""
    gains = [1.0]
    gemm = ceilings.get("gemm", {})
    if "oneDNN" in gemm and gemm["oneDNN"] / gemm["default"] >= host.GAIN:
        gains.append(gemm["oneDNN"] / gemm["default"])
    if ceilings["bf16"]["speedup"] >= host.GAIN:
        gains.append(ceilings["bf16"]["speedup"])
    return min(2.0, max(gains) / host.NOISE)


def test_finetune_benchmark_times_ours_and_the_official_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "finetune.json"
    args = ["--model", "tiny", "--batch", "2", "--rounds", "1", "--variants", "ours,official", "--repeat-slow"]
    assert finetune.main([*args, "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    rows = results["steps"]["rows"]
    official = skip_reason() is None  # the official engine runs where MAE_OFFICIAL_REPO names a checkout
    assert set(rows) == ({"ours", "official"} if official else {"ours"})
    # Epoch 10 of the ViT-B recipe (blr 5e-4 at batch 2, min 1e-6, warmup 5 of 100 epochs), step 0: on the cosine.
    peak = 5e-4 * 2 / 256
    lr = 1e-6 + (peak - 1e-6) * 0.5 * (1 + math.cos(math.pi * (10 - 5) / (100 - 5)))
    for row in rows.values():
        assert len(row["seconds"]) == 1 and not row["warmup_only"]
        assert row["images_per_s"] == pytest.approx(2 / statistics.median(row["seconds"]))  # batch 2, 1 step/call
        assert row["peak_growth_bytes"] is not None and row["peak_growth_bytes"] >= 0
        assert row["lr"] == pytest.approx(lr, rel=1e-12)  # the head's group (lr_scale 1), set by the engine
        # A fresh head (std 2e-5) gives near-uniform logits: soft-target cross-entropy ln(1000), whatever the mixing.
        assert row["loss"] == pytest.approx(math.log(1000), abs=0.01)
    text = capsys.readouterr().out
    assert "CPU instruction sets:" in text.splitlines()[0]
    table = _table_rows(text[: text.index("| goal |")])
    assert [r[0] for r in table[1:]] == [finetune.LABELS[n] for n in rows] and len({len(r) for r in table}) == 1
    # The best (only) float32 step of ours, profiled once: where its time goes.
    (share,) = results["steps"]["products"].values()
    assert list(results["steps"]["products"]) == ["ours"] and 0 < share["products_s"] < share["profiled_s"]
    assert "Where the ours step's time goes (one profiled call): the matrix products" in text
    goal = _goal_rows(text)["best of ours"]
    bound = _bound(results["ceilings"])
    if official:
        value = rows["ours"]["images_per_s"] / rows["official"]["images_per_s"]
        verdict = "met" if round(value, 2) >= bound else "missed"  # the verdict of the printed, rounded value
        assert goal == [f">= {bound:.3g}x", f"{value:.2f}x", verdict]
        assert "engine_finetune" not in sys.modules  # the checkout's modules are gone after the run
        assert not any(n == "util" or n.startswith("util.") for n in sys.modules)
    else:
        assert goal == [f">= {bound:.3g}x", "not measured: MAE_OFFICIAL_REPO unset", "-"]
        assert "The official engine was not run (MAE_OFFICIAL_REPO unset): ours only." in text


def _row(images_per_s: float, warmup_only: bool = False) -> dict[str, Any]:
    return {"seconds": [8 / images_per_s], "images_per_s": images_per_s, "seconds_per_step": 8 / images_per_s,
            "peak_growth_bytes": 2.5e9, "warmup_s": 1.0, "warmup_only": warmup_only, "lr": 1e-3,
            "loss": 6.9}  # fmt: skip


@pytest.mark.parametrize("kind", ["AVX2-like", "AVX-512-like"])
def test_finetune_goal_is_held_to_the_hosts_ceilings(kind: str) -> None:
    avx512 = kind == "AVX-512-like"
    # oneDNN's product 2.2x (AVX-512-like) or 0.9x (AVX2-like) the default's; bf16 products 3x faster or 47x slower.
    gemm = {"default": 200.0, "oneDNN": 440.0 if avx512 else 180.0}
    bf16 = {"speedup": 3.0 if avx512 else 1 / 47, "warned": not avx512, "detail": "made up"}
    rows = {"ours": _row(2.0), "fast": _row(2.1), "bf16": _row(9.0, warmup_only=True), "compile": _row(2.3),
            "official": _row(2.0)}  # fmt: skip
    results = {
        "host": "test", "device": "cpu", "load_average": [0.1, 0.2], "ceilings": {"gemm": gemm, "bf16": bf16},
        "args": {"model": "base", "batch": 8, "steps": 1, "rounds": 1},
        "steps": {"rows": rows, "state_bytes": 1.0e9, "img_size": 224},
    }  # fmt: skip
    text = finetune.report(results)
    goals = _goal_rows(text)
    # The best timed variant is compile (2.3 / 2.0 = 1.15x; bf16 was not repeated). The bound: 2x where bf16 gains 3x
    # (3 / NOISE > 2), else "not slower than the official engine" (1 / NOISE).
    bound = 2.0 if avx512 else 1 / host.NOISE
    assert goals["best of ours"] == [f">= {bound:.3g}x", "1.15x", "missed" if avx512 else "met"]
    assert "The issue's 2x as stated, whatever the host: missed (1.15x, compile)." in text
    # The fast path over ours (2.1 / 2.0): SHARE of oneDNN's gain, or not slower than the default path.
    fast_bound = host.SHARE * 2.2 if avx512 else 1 / host.NOISE
    fast_goal = goals["float32 fast path / our default path, images/s"]
    assert fast_goal == [f">= {fast_bound:.3g}x", "1.05x", "missed" if avx512 else "met"]
    warns = [r for r in goals if r.startswith("bf16")]
    assert warns == ([] if avx512 else ["bf16"]) and (avx512 or goals["bf16"][-2:] == ["warned", "met"])
    table = {r[0]: r[1:] for r in _table_rows(text[: text.index("| goal |")])}
    assert table[finetune.LABELS["compile"]][3:6] == ["1.15", "1.15", "2.5"]  # / ours, / official, peak GB
    assert table[finetune.LABELS["bf16"]][-1].startswith("1 (its warm-up")


def test_finetune_benchmark_is_registered_and_checks_its_arguments() -> None:
    with pytest.raises(SystemExit) as stop:  # an odd batch is refused before any work: Mixup mixes pairs
        finetune.main(["--batch", "3"])
    assert stop.value.code == 2
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "finetune", "--variants", "ours,nope"], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown variants ['nope']" in done.stderr
