"""What a run writes per iteration (`mae.train.log_sinks`), checked against the official rules computed here.

- off a terminal, one line at iterations 0, print_freq, 2 print_freq, ... and the last of each epoch (the official
  `MetricLogger.log_every`), with the epoch, i/N, ETA, loss, lr, images/s and peak memory; the last line's
  average is the epoch's train_loss of log.txt; on a terminal the bar only, no line;
- `--log_dir`: TensorBoard events that tensorboard's own reader reads back, under the official tags (`train_loss`,
  `lr`; `loss`, `lr` and `perf/test_*` for fine-tuning) at the official steps (`epoch_1000x`, optimizer steps
  only), with the cosine schedule's lr and the batches' losses; still readable when the run fails part-way;
- the default `--log_dir` writes beside the checkpoints, and nowhere (no folder) with `--output_dir ''`;
- without tensorboard the run says so once and trains.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from train_helpers import (
    TINY_ARGS,
    classification_argv,
    make_classification_data,
    make_image_folder,
    pretrain,
    run_quietly,
)

import mae
import mae.cli
from mae.train.log_sinks import OFFICIAL_LOG_DIR, LogSinks, StepFigures, events_dir, peak_memory
from mae.train.metrics import read_log

STEPS = 6  # 12 images in batches of 2
EPOCHS = 2
# One iteration line: the epoch, i/N, ETA, the batch's loss (and the epoch's average so far), lr, images/s, memory.
LINE = re.compile(
    r"^Epoch: \[(?P<epoch>\d+)\]  \[ *(?P<step>\d+)/(?P<steps>\d+)\]  eta (?P<eta>\d+:\d\d:\d\d)  "
    r"loss (?P<loss>\d+\.\d{4}) \(avg (?P<avg>\d+\.\d{4})\)  lr (?P<lr>\d\.\d{3}e[-+]\d\d)  "
    r"(?P<rate>\d+\.\d) images/s  max mem (?P<mem>\d+) MB \((?P<kind>CPU peak RSS|CUDA)\)$"
)


def printed_iterations(steps: int, print_freq: int) -> list[int]:
    """The iterations the official `MetricLogger.log_every` prints: every print_freq-th and the last."""
    return [i for i in range(steps) if i % print_freq == 0 or i == steps - 1]


def cosine(t: float, peak: float, min_lr: float, warmup: float = 1.0, epochs: int = EPOCHS) -> float:
    """The official schedule at the fractional epoch t: linear warmup, then half-cycle cosine to min_lr."""
    if t < warmup:
        return peak * t / warmup
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (epochs - warmup)))


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``folder``, read by tensorboard's own reader: {tag: [(step, value), ...]}."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def iteration_lines(out: str) -> list[re.Match[str]]:
    """The iteration lines of a run's stdout; every line that starts like one must be one."""
    starts = [line for line in out.splitlines() if line.startswith("Epoch: [")]
    matched = [m for line in starts if (m := LINE.match(line))]
    assert len(matched) == len(starts), [line for line in starts if not LINE.match(line)]
    return matched


def pretrain_argv(data: Path, output: Path | str, *more: str) -> list[str]:
    """A tiny `mae pretrain` of STEPS batches of 2 per epoch, EPOCHS epochs with 1 of warmup, then ``more``."""
    return [
        "pretrain", "--data_path", str(data), *TINY_ARGS, "--batch_size", "2", "--epochs", str(EPOCHS),
        "--warmup_epochs", "1", "--output_dir", str(output), *more,
    ]  # fmt: skip


@dataclass
class Run:
    print_freq: int
    accum_iter: int
    out: str  # stdout (a StringIO: not a terminal)
    log: list[dict[str, Any]]  # log.txt
    events: dict[str, list[tuple[int, float]]]  # the TensorBoard scalars under --log_dir


# Two pre-training runs: --print_freq 4 with every batch an optimizer step, and the default --print_freq (20,
# more than the epoch's batches) with two batches per optimizer step.
CASES = {"print_freq 4, accum 1": (4, 1), "default print_freq, accum 2": (20, 2)}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=2, per_class=6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data: Path) -> dict[str, Run]:
    done = {}
    for name, (print_freq, accum_iter) in CASES.items():
        root = tmp_path_factory.mktemp("run")
        more = ["--accum_iter", str(accum_iter), "--log_dir", str(root / "tb")]
        if print_freq != 20:
            more += ["--print_freq", str(print_freq)]
        code, out, err = run_quietly(*pretrain_argv(data, root / "out", *more))
        assert code == 0, err
        done[name] = Run(print_freq, accum_iter, out, read_log(root / "out" / "log.txt"), scalars(root / "tb"))
    return done


# --------------------------------------------------------------------------------------------- the lines


@pytest.mark.parametrize("case", list(CASES))
def test_off_a_terminal_a_line_at_the_official_iterations(runs: dict[str, Run], case: str) -> None:
    run = runs[case]
    lines = iteration_lines(run.out)
    expected = [(e, i) for e in range(EPOCHS) for i in printed_iterations(STEPS, run.print_freq)]
    assert len(expected) == EPOCHS * (3 if run.print_freq == 4 else 2)  # 0, 4, 5 / 0, 5
    assert [(int(m["epoch"]), int(m["step"])) for m in lines] == expected
    assert {int(m["steps"]) for m in lines} == {STEPS}
    assert {m["kind"] for m in lines} == {"CPU peak RSS"} and all(int(m["mem"]) > 0 for m in lines)
    assert all(float(m["rate"]) > 0 for m in lines)
    # Each epoch's lines come before its summary line.
    text = run.out.splitlines()
    for epoch in range(EPOCHS):
        summary = next(n for n, line in enumerate(text) if line.startswith(f"epoch {epoch + 1}/{EPOCHS}: "))
        assert [line for line in text[:summary] if line.startswith(f"Epoch: [{epoch}]")] != []
        assert [line for line in text[summary:] if line.startswith(f"Epoch: [{epoch}]")] == []


@pytest.mark.parametrize("case", list(CASES))
def test_the_last_line_of_an_epoch_has_its_average_loss_and_lr(runs: dict[str, Run], case: str) -> None:
    run = runs[case]
    peak = 1e-3 * 2 * run.accum_iter / 256  # blr x effective batch / 256
    for epoch in range(EPOCHS):
        last = [m for m in iteration_lines(run.out) if int(m["epoch"]) == epoch][-1]
        assert int(last["step"]) == STEPS - 1 and last["eta"] == "0:00:00"
        # The running average of the epoch's last batch is what the engine averaged: log.txt's train_loss.
        assert last["avg"] == f"{run.log[epoch]['train_loss']:.4f}"
        # The lr of the last batch: set at its accumulation boundary's first batch.
        boundary = (STEPS - 1) // run.accum_iter * run.accum_iter
        assert last["lr"] == f"{cosine(epoch + boundary / STEPS, peak, 0.0):.3e}"


# ------------------------------------------------------------------------------------------ TensorBoard


@pytest.mark.parametrize("case", list(CASES))
def test_log_dir_events_at_the_official_steps_with_the_schedules_lr(runs: dict[str, Run], case: str) -> None:
    run = runs[case]
    assert set(run.events) == {"train_loss", "lr"}
    # The official main_pretrain: at optimizer steps only, x = int((step / steps + epoch) * 1000).
    updates = [(e, s) for e in range(EPOCHS) for s in range(STEPS) if (s + 1) % run.accum_iter == 0]
    steps = [int((s / STEPS + e) * 1000) for e, s in updates]
    assert [x for x, _ in run.events["train_loss"]] == steps
    assert [x for x, _ in run.events["lr"]] == steps
    peak = 1e-3 * 2 * run.accum_iter / 256
    expected = [cosine(e + (s - s % run.accum_iter) / STEPS, peak, 0.0) for e, s in updates]
    assert [v for _, v in run.events["lr"]] == pytest.approx(expected, rel=1e-6, abs=1e-12)  # float32 in the file


@pytest.mark.parametrize("case", list(CASES))
def test_log_dir_losses_are_the_batches_losses(runs: dict[str, Run], case: str) -> None:
    run = runs[case]
    losses = dict(run.events["train_loss"])
    # A printed batch that ends an optimizer step: the event's loss is that batch's loss.
    common = [m for m in iteration_lines(run.out) if (int(m["step"]) + 1) % run.accum_iter == 0]
    assert common != []
    for m in common:
        x = int((int(m["step"]) / STEPS + int(m["epoch"])) * 1000)
        assert losses[x] == pytest.approx(float(m["loss"]), abs=5.1e-5)
    if run.accum_iter == 1:  # every batch has its event: their mean is the epoch's train_loss (one process)
        for epoch in range(EPOCHS):
            values = [v for x, v in run.events["train_loss"] if epoch * 1000 <= x < (epoch + 1) * 1000]
            assert len(values) == STEPS
            assert sum(values) / STEPS == pytest.approx(run.log[epoch]["train_loss"], rel=1e-6)


def test_finetune_writes_the_official_tags_and_the_evaluations(tmp_path: Path) -> None:
    data = make_classification_data(tmp_path / "data")  # 24 training images: 6 batches of 4
    code, out, err = run_quietly(
        *classification_argv("finetune", data, tmp_path / "run", "--log_dir", str(tmp_path / "tb"), epochs=EPOCHS)
    )
    assert code == 0, err
    events, log = scalars(tmp_path / "tb"), read_log(tmp_path / "run" / "log.txt")
    assert set(events) == {"loss", "lr", "perf/test_acc1", "perf/test_acc5", "perf/test_loss"}
    steps = [int((s / STEPS + e) * 1000) for e in range(EPOCHS) for s in range(STEPS)]
    assert [x for x, _ in events["loss"]] == steps and [x for x, _ in events["lr"]] == steps
    # The largest group's lr (the head's, lr_scale 1): lr = 1e-3 x 4 / 256, cosine to --min_lr 1e-6.
    expected = [cosine(e + s / STEPS, 1e-3 * 4 / 256, 1e-6) for e in range(EPOCHS) for s in range(STEPS)]
    assert [v for _, v in events["lr"]] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    for name in ("acc1", "acc5", "loss"):
        got = events[f"perf/test_{name}"]
        assert [x for x, _ in got] == list(range(EPOCHS))  # at step epoch
        assert [v for _, v in got] == pytest.approx([r[f"test_{name}"] for r in log], rel=1e-6)
    for epoch in range(EPOCHS):  # the training loss: the batches' losses, their mean in log.txt
        values = [v for x, v in events["loss"] if epoch * 1000 <= x < (epoch + 1) * 1000]
        assert sum(values) / STEPS == pytest.approx(log[epoch]["train_loss"], rel=1e-6)
    assert len(iteration_lines(out)) == EPOCHS * len(printed_iterations(STEPS, 20))


def test_a_failed_run_closes_the_writer_with_its_events(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Path
) -> None:
    """A NaN at the 4th batch stops the run: the writer is closed, the 3 batches before it are in the events."""
    from torch.utils.tensorboard import SummaryWriter

    original, original_close = mae.MaskedAutoencoderViT.forward, SummaryWriter.close
    calls, closed = 0, 0

    def close(self: SummaryWriter) -> None:
        nonlocal closed
        closed += 1
        original_close(self)

    def forward(self: mae.MaskedAutoencoderViT, imgs: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        loss, pred, mask = original(self, imgs, *args, **kwargs)
        return (loss * float("nan") if calls == 4 else loss), pred, mask

    monkeypatch.setattr(mae.MaskedAutoencoderViT, "forward", forward)
    monkeypatch.setattr(SummaryWriter, "close", close)
    code, _, err = pretrain(
        capsys, data, tmp_path / "out", "--batch_size", "2", "--log_dir", str(tmp_path / "tb"), epochs=EPOCHS
    )
    assert code == 1 and "the loss is nan at epoch 0, iteration 3" in err
    assert closed == 1
    assert [x for x, _ in scalars(tmp_path / "tb")["train_loss"]] == [int(s / STEPS * 1000) for s in range(3)]


# ----------------------------------------------------------------------------- where the events go, or not


def test_events_dir_follows_the_output_at_the_default_log_dir() -> None:
    assert events_dir(OFFICIAL_LOG_DIR, "./output_dir") == "./output_dir"  # the official default run
    assert events_dir(OFFICIAL_LOG_DIR, "out") == "out"
    assert events_dir(OFFICIAL_LOG_DIR, "") is None  # nothing saved: no folder
    assert events_dir("tb", "") == "tb" and events_dir("tb", "out") == "tb"
    assert events_dir("", "out") is None


def test_the_default_log_dir_writes_beside_the_checkpoints_and_nowhere_without_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Path
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    # --log_dir at its default value (TINY_ARGS turns the events off with --log_dir '').
    code, out, err = pretrain(capsys, data, tmp_path / "out", "--log_dir", OFFICIAL_LOG_DIR, epochs=1)
    assert code == 0, err
    assert f"tensorboard: events in {tmp_path / 'out'}" in out
    assert set(scalars(tmp_path / "out")) == {"train_loss", "lr"}
    code, out, err = pretrain(capsys, data, "", "--log_dir", OFFICIAL_LOG_DIR, epochs=1)
    assert code == 0, err
    assert "tensorboard:" not in out and list(cwd.iterdir()) == []  # no ./output_dir made


def test_without_tensorboard_the_run_says_so_once_and_trains(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Path
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now fails as if not installed
    code, out, err = pretrain(
        capsys, data, tmp_path / "out", "--batch_size", "2", "--log_dir", str(tmp_path / "tb"), epochs=EPOCHS
    )
    assert code == 0, err
    said = [line for line in (out + err).splitlines() if "tensorboard:" in line or "pip install" in line]
    assert said == [
        f"tensorboard: not installed, so no events are written to {tmp_path / 'tb'} (pip install tensorboard to "
        "write them)"
    ]
    assert out.index(said[0]) < out.index("Epoch: [0]")  # before training
    assert not (tmp_path / "tb").exists()
    assert [r["epoch"] for r in read_log(tmp_path / "out" / "log.txt")] == [0, 1]  # trained all the same
    assert len(iteration_lines(out)) == EPOCHS * 2


# --------------------------------------------------------------------------------------- on a terminal


def test_on_a_terminal_the_bar_and_no_iteration_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Path
) -> None:
    pytest.importorskip("tqdm")
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = pretrain(capsys, data, tmp_path / "out", "--batch_size", "2", "--print_freq", "1", epochs=1)
    assert code == 0, err
    assert "\r" in err and "epoch 0" in err  # the bar
    assert "Epoch: [" not in out and "Epoch: [" not in err
    assert "epoch 1/1: loss" in out


# ------------------------------------------------------------------------------------------- the pieces


def test_flags_of_the_three_commands() -> None:
    parser = mae.cli.build_parser()
    for command in ("pretrain", "finetune", "linprobe"):
        args = parser.parse_args([command, "--data_path", "d"])
        assert (args.log_dir, args.print_freq) == (OFFICIAL_LOG_DIR, 20), command
        args = parser.parse_args([command, "--data_path", "d", "--log-dir", "tb", "--print-freq", "5"])
        assert (args.log_dir, args.print_freq) == ("tb", 5), command
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--data_path", "d", "--print_freq", "0"])


def test_only_rank_0_prints_and_writes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    figures = StepFigures(
        epoch=0, step=0, steps=1, loss=1.0, loss_avg=1.0, loss_mean=1.0, lr=1e-4, images_per_s=1.0, elapsed=0.1,
        update=True,
    )  # fmt: skip
    with LogSinks(
        print_freq=1, log_dir=str(tmp_path / "tb"), is_main=False, device=torch.device("cpu"), loss_tag="loss"
    ) as sinks:
        sinks.start()
        sinks.step(figures, bar_shown=False)
        sinks.evaluation(0, {"acc1": 1.0, "acc5": 1.0, "loss": 1.0})
    assert capsys.readouterr().out == "" and not (tmp_path / "tb").exists()


def test_peak_memory_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 1024**3)
    assert peak_memory(torch.device("cuda", 0)) == "max mem 3072 MB (CUDA)"  # no GPU needed: the figure is faked
    assert re.fullmatch(r"max mem [1-9]\d* MB \(CPU peak RSS\)", peak_memory(torch.device("cpu")))
