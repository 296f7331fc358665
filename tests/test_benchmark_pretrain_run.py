"""`python -m benchmarks pretrain_run`: a short `mae pretrain` run whose loss must fall (issue 17's GPU check, run
here in float16 on the CPU with the tiny model), and the verdict it reads off the run's log."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import pretrain_run


def test_a_tiny_float16_run_on_the_cpu_falls_and_its_log_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.json"
    args = ["--device", "cpu", "--model", "tiny", "--images", "64", "--batch", "8", "--epochs", "10",
            "--warmup-epochs", "1", "--blr", "5e-2", "--workers", "1", "--json", str(out)]  # fmt: skip
    assert pretrain_run.main(args) == 0
    results = json.loads(out.read_text())
    v = results["verdict"]
    assert results["steps"] == 10 * (64 // 8) and len(v["losses"]) == 10
    assert v["passed"] and v["ratio"] == pytest.approx(v["losses"][-1] / v["losses"][0], rel=1e-12)
    assert v["ratio"] <= pretrain_run.FALL
    assert all(s is not None for s in v["skipped_steps"]) and all(s > 0 for s in v["loss_scale"])  # float16 keys
    text = capsys.readouterr().out
    assert "`mae pretrain --dtype float16 --device cpu`, model tiny, 64 images, batch 8, 10 epochs = 80 steps" in text
    assert text.rstrip().endswith("passed")


def record(loss: float) -> dict[str, float]:
    return {"train_loss": loss, "train_skipped_steps": 0, "train_loss_scale": 65536.0}


@pytest.mark.parametrize(
    ("losses", "returncode", "why"),
    [
        ([1.0, 0.8], 0, ""),
        ([1.0, 0.95], 0, "the last epoch's loss is 0.950 of the first's (at most 0.9 asked)"),
        ([1.0, math.nan], 0, "a loss is not finite"),
        ([1.0], 0, "1 epoch(s) logged: at least 2 are needed to see the loss fall"),
        ([1.0, 0.5], 1, "the command ended with exit status 1"),
        ([0.0, 0.0], 0, "the first epoch's loss is 0: nothing to fall from"),
    ],
    ids=["falls", "flat", "nan", "one-epoch", "failed", "zero-first"],
)
def test_the_verdict_names_why_a_run_fails(losses: list[float], returncode: int, why: str) -> None:
    v = pretrain_run.verdict([record(x) for x in losses], returncode)
    assert v["passed"] == (why == "") and v["why"] == why
