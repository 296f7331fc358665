"""`python -m benchmarks cuda_check`: issue 17's GPU measurements in one command. No GPU here: its `--smoke` plan
(the same sequence, tiny) runs on the CPU, so the command a GPU lease runs is known to start, run each benchmark
and write its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import cuda_check, train


def test_the_smoke_plan_runs_every_measurement_and_writes_its_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAE_OFFICIAL_REPO", raising=False)  # ours only: the same rows on every machine
    assert cuda_check.main(["--device", "cpu", "--smoke", "--results", str(tmp_path)]) == 0
    names = [name for name, _, _ in cuda_check.plan("cpu", smoke=True)]
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(names)
    rows = json.loads((tmp_path / "train_base.json").read_text())["steps"]["rows"]
    assert set(rows) == set(train.CUDA_VARIANTS) - {"official"}  # the GPU's variants, float16 among them
    run = json.loads((tmp_path / "pretrain_run.json").read_text())
    assert run["args"]["dtype"] == "float16" and run["verdict"]["passed"]
    assert json.loads((tmp_path / "data.json").read_text())["bit_equal"]
    assert f"cuda_check: {len(names)} of {len(names)} passed" in capsys.readouterr().out


def test_the_gpu_plan_measures_what_issue_17_asks_on_cuda() -> None:
    steps = {name: arguments for name, _, arguments in cuda_check.plan("cuda", smoke=False)}
    assert list(steps) == ["train_base", "train_large", "pretrain_run", "data"]
    assert all(a[:2] == ["--device", "cuda"] for a in steps.values())
    assert steps["train_base"][steps["train_base"].index("--model") + 1] == "base"
    assert steps["train_large"][steps["train_large"].index("--model") + 1] == "large"
    assert "--variants" not in steps["train_base"]  # CUDA's defaults: `train.CUDA_VARIANTS`
    assert steps["pretrain_run"][steps["pretrain_run"].index("--dtype") + 1] == "float16"


def test_a_failing_measurement_is_reported_and_the_next_still_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = []

    def broken(argv: list[str]) -> int:
        raise RuntimeError("CUDA out of memory (made up)")

    def fine(argv: list[str]) -> int:
        ran.append(argv)
        return 0

    monkeypatch.setattr(cuda_check, "plan", lambda device, smoke: [("a", broken, []), ("b", fine, ["--x"])])
    assert cuda_check.main(["--device", "cpu", "--results", str(tmp_path)]) == 1
    assert ran == [["--x", "--json", str(tmp_path / "b.json")]]
    out = capsys.readouterr()
    assert "cuda_check: 1 of 2 passed; failed: a" in out.out and "CUDA out of memory (made up)" in out.err
