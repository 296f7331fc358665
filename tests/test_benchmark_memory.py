"""The gradient-checkpointing benchmark runs every variant and prints a well-formed table (its numbers are not
judged here: a tiny model's activations are below the resident set's page granularity).

What is checked: each variant trains the model it names (the checkpointed one recomputes every block in the
backward, observed by a Block pre-hook), and the summary's ratios and the goals' verdicts follow from the
measured figures in its JSON by the goal's definition, written out here.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from torch import nn
from train_helpers import one_thread

from benchmarks import memory
from mae.transformer import Block


@pytest.fixture(name="one_thread")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.mark.usefixtures("one_thread")
def test_memory_benchmark_measures_both_variants_of_both_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[tuple[str, bool], Counter[int]] = {}
    measure = memory.measure

    def counted(part: str, model: str, batch: int, steps: int, checkpointed: bool, *rest: Any) -> dict[str, Any]:
        seen: Counter[int] = Counter()
        build = memory.build

        def hooked(part_: str, model_: str) -> tuple[nn.Module, Any]:
            net, optimizer = build(part_, model_)
            for m in net.modules():
                if isinstance(m, Block):
                    m.register_forward_pre_hook(lambda m_, _a: seen.update([id(m_)]))
            return net, optimizer

        monkeypatch.setattr(memory, "build", hooked)
        try:
            return measure(part, model, batch, steps, checkpointed, *rest)
        finally:
            monkeypatch.setattr(memory, "build", build)
            calls[(part, checkpointed)] = seen

    monkeypatch.setattr(memory, "measure", counted)
    out = tmp_path / "memory.json"
    argv = ["--model", "tiny", "--batch", "2", "--steps", "1", "--in-process", "--device", "cpu", "--json", str(out)]
    assert memory.main(argv) == 0
    results = json.loads(out.read_text())
    # One warm-up and one measured step: every block runs twice, and twice more when recomputed.
    blocks = {"pretrain": 3, "finetune": 2}  # the tiny MAE: 2 encoder blocks and 1 decoder block
    for (part, checkpointed), seen in calls.items():
        assert len(seen) == blocks[part] and set(seen.values()) == {4 if checkpointed else 2}, (part, seen)
    assert len(calls) == 4
    rows = results["rows"]
    assert [(r["part"], r["checkpointed"]) for r in rows] == [
        ("pretrain", False), ("pretrain", True), ("finetune", False), ("finetune", True),
    ]  # fmt: skip
    for part in memory.PARTS:
        plain, ours = (r for r in rows if r["part"] == part)
        assert len(plain["seconds"]) == len(plain["activation_bytes"]) == 1
        entry = results["summary"][part]
        added = statistics.median(ours["seconds"]) / statistics.median(plain["seconds"]) - 1
        assert entry["time_added"] == pytest.approx(added, rel=1e-12)
        cpu_added = statistics.median(ours["cpu_seconds"]) / statistics.median(plain["cpu_seconds"]) - 1
        assert entry["cpu_time_added"] == pytest.approx(cpu_added, rel=1e-12)
        if max(plain["activation_bytes"]) > 0:
            saved = 1 - max(ours["activation_bytes"]) / max(plain["activation_bytes"])
            assert entry["memory_saved"] == pytest.approx(saved, rel=1e-12)
    text = capsys.readouterr().out
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert sum(line.startswith(("| pretrain |", "| finetune |")) for line in table) == 4
    verdicts = {line.split(" | ")[0].strip("| "): line.split(" | ")[-1].strip(" |") for line in table[6:]}
    for part in memory.PARTS:
        entry = results["summary"][part]
        if "memory_saved" in entry:
            expected = "met" if entry["memory_saved"] >= 0.40 else "MISSED"
            assert verdicts[f"{part}: activation memory saved"] == expected
        assert verdicts[f"{part}: step time added"] == ("met" if entry["time_added"] <= 0.40 else "MISSED")
        cpu_verdict = verdicts[f"{part}: step CPU time added (less moved by other processes)"]
        assert cpu_verdict == ("met" if entry["cpu_time_added"] <= 0.40 else "MISSED")
