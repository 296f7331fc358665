"""Runs that survive a scheduler: ``--auto_resume``, mid-epoch checkpoints, SIGTERM/SIGUSR1, killed saves.

In this process (fast): a SIGTERM sent in the middle of an epoch writes ``checkpoint-midepoch.pth`` at the
next optimizer-step boundary and ends the command with status 75; the same command with ``--auto_resume``
then ends bit for bit where the uninterrupted run ends (weights, optimizer, scaler, generators, log), with and
without loader workers, with gradient accumulation, for pre-training and fine-tuning. ``--auto_resume`` starts
afresh in an empty folder, refuses a folder whose run had other settings (naming them), and a start removes
the temporary file a killed save left. The kills with SIGKILL, at chosen moments, are in
`test_requeue_kills.py` (separate processes).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from train_helpers import (
    assert_same,
    classification_argv,
    make_classification_data,
    make_image_folder,
    pretrain,
    run_cli,
)
from train_helpers import load_checkpoint as load

import mae
from mae.train import preemption, run_checkpoint
from mae.train.preemption import EXIT_PREEMPTED, Preemption
from mae.train.run_checkpoint import MID_EPOCH_NAME

STEPS = 6  # the `data` fixture: 24 images in batches of 4


def same_run(straight: Path, requeued: Path, last_epoch: int) -> None:
    """The last checkpoints and the logs of two runs are the same (but for the recorded arguments and speed)."""
    a, b = load(straight / f"checkpoint-{last_epoch}.pth"), load(requeued / f"checkpoint-{last_epoch}.pth")
    for key in ("model", "optimizer", "scaler", "epoch", "rng"):
        assert_same(a[key], b[key], key)
    log_a, log_b = ((d / "log.txt").read_text().splitlines() for d in (straight, requeued))
    assert len(log_a) == len(log_b) == last_epoch + 1
    for line_a, line_b in zip(log_a, log_b, strict=True):
        ra, rb = (__import__("json").loads(line) for line in (line_a, line_b))
        assert {k: v for k, v in ra.items() if "per_s" not in k} == {k: v for k, v in rb.items() if "per_s" not in k}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), classes=2, per_class=12)


class SignalAt:
    """Sends ``signum`` to this process from inside the model's forward, at its ``call``-th call (0-based)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, call: int, signum: int = signal.SIGTERM) -> None:
        self.calls = 0
        forward = mae.MaskedAutoencoderViT.forward

        def sending(model: Any, *args: Any, **kwargs: Any) -> Any:
            if self.calls == call:
                os.kill(os.getpid(), signum)  # chỉ ghi nhận cờ; lưu ở ranh giới bước tối ưu kế tiếp
            self.calls += 1
            return forward(model, *args, **kwargs)

        monkeypatch.setattr(mae.MaskedAutoencoderViT, "forward", sending)


@pytest.mark.parametrize(
    ("workers", "accum", "signum"),
    [("0", "1", signal.SIGTERM), ("2", "2", signal.SIGUSR1)],
    ids=["no-workers-SIGTERM", "2-workers-accum2-SIGUSR1"],
)
def test_a_signal_saves_mid_epoch_and_the_requeued_run_is_the_straight_one(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: str,
    accum: str,
    signum: int,
) -> None:
    flags = ["--num_workers", workers, "--accum_iter", accum, "--save_every", "1", "--auto_resume"]
    code, _, err = pretrain(capsys, data, tmp_path / "straight", *flags, epochs=3)
    assert code == 0, err
    out = tmp_path / "requeued"
    with monkeypatch.context() as patched:
        # Iteration 2 of epoch 1 (the 9th forward): the step that ends there (or at 4, accumulating 2) is saved.
        SignalAt(patched, STEPS + 2, signum)
        code, stdout, err = pretrain(capsys, data, out, *flags, epochs=3)
    assert code == EXIT_PREEMPTED, err
    done = 3 if accum == "1" else 4  # batches of epoch 1 done at the first step boundary after the signal
    assert f"stopped by {signal.Signals(signum).name} at epoch 1, iteration {done} of {STEPS}" in err
    assert f"saved {out / MID_EPOCH_NAME}" in err and "exit status 75" in err and "--auto_resume" in err
    mid = load(out / MID_EPOCH_NAME)
    assert mid["epoch"] == 0 and mid["position"]["epoch"] == 1 and mid["position"]["step"] == done
    assert set(mid) == {"model", "optimizer", "epoch", "scaler", "args", "rng", "position"}
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-0.pth", MID_EPOCH_NAME, "log.txt"]
    assert run_checkpoint.latest_checkpoint(out) == out / MID_EPOCH_NAME
    code, stdout, err = pretrain(capsys, data, out, *flags, epochs=3)  # the requeue: the same command
    assert code == 0, err
    assert "continuing at epoch 1 with the saved optimizer state" in stdout
    same_run(tmp_path / "straight", out, last_epoch=2)
    # The epoch-end checkpoint of the interrupted epoch supersedes the mid-epoch one.
    assert sorted(p.name for p in out.iterdir()) == [f"checkpoint-{e}.pth" for e in range(3)] + ["log.txt"]


def test_save_every_minutes_keeps_one_mid_epoch_file_and_resumes_from_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a clock that moves a minute per step boundary, ``--save_every_minutes 2`` saves every second step."""
    code, _, err = pretrain(capsys, data, tmp_path / "straight", "--save_every", "5", epochs=2)
    assert code == 0, err
    minutes = iter(range(10_000))
    monkeypatch.setattr(preemption, "time", SimpleNamespace(monotonic=lambda: 60.0 * next(minutes)))
    seen: list[int] = []
    save = run_checkpoint.save_atomic

    def watching(obj: Any, path: Path) -> None:
        save(obj, path)
        if path.name == MID_EPOCH_NAME:
            seen.append(obj["position"]["step"] + STEPS * obj["position"]["epoch"])
            assert [p.name for p in path.parent.glob("checkpoint-midepoch*")] == [MID_EPOCH_NAME]

    monkeypatch.setattr(run_checkpoint, "save_atomic", watching)
    monkeypatch.setattr("mae.train.runs.save_atomic", watching)
    out = tmp_path / "timed"
    code, stdout, err = pretrain(capsys, data, out, "--save_every", "5", "--save_every_minutes", "2", epochs=2)
    assert code == 0, err
    assert seen == [2, 4, 6, 8, 10, 12], seen  # steps counted over the run; the clock starts at minute 0
    assert f"saved {MID_EPOCH_NAME} at epoch 0, iteration 2 of {STEPS}" in stdout
    same_run(tmp_path / "straight", out, last_epoch=1)
    assert not (out / MID_EPOCH_NAME).exists()  # superseded by checkpoint-1.pth


def test_finetune_signal_and_requeue_is_the_straight_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fine-tuning's state after a requeue: Mixup's numpy draws, RandAugment's, the evaluation, the best file."""
    data = make_classification_data(tmp_path / "data")
    pre = tmp_path / "pre"
    code, _, err = pretrain(capsys, data / "train", pre, epochs=1)
    assert code == 0, err
    more = ["--finetune", str(pre / "checkpoint-0.pth"), "--mixup", "0.8", "--cutmix", "1.0", "--auto_resume"]
    code, _, err = run_cli(capsys, *classification_argv("finetune", data, tmp_path / "straight", *more, epochs=2))
    assert code == 0, err
    calls = {"n": 0}
    forward = mae.VisionTransformer.forward

    def sending(model: Any, *args: Any, **kwargs: Any) -> Any:
        if model.training:
            calls["n"] += 1
            if calls["n"] == 8:  # epoch 1 (6 batches of 4 per epoch), its second batch
                os.kill(os.getpid(), signal.SIGTERM)
        return forward(model, *args, **kwargs)

    out = tmp_path / "requeued"
    with monkeypatch.context() as patched:
        patched.setattr(mae.VisionTransformer, "forward", sending)
        code, _, err = run_cli(capsys, *classification_argv("finetune", data, out, *more, epochs=2))
    assert code == EXIT_PREEMPTED, err
    assert load(out / MID_EPOCH_NAME)["position"]["step"] == 2
    code, _, err = run_cli(capsys, *classification_argv("finetune", data, out, *more, epochs=2))
    assert code == 0, err
    same_run(tmp_path / "straight", out, last_epoch=1)
    assert_same(
        load(tmp_path / "straight" / "checkpoint-best.pth")["model"], load(out / "checkpoint-best.pth")["model"]
    )


def test_auto_resume_starts_afresh_then_refuses_other_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    out = tmp_path / "out"
    code, stdout, err = pretrain(capsys, data, out, "--auto_resume", epochs=1)  # nothing to continue: a fresh run
    assert code == 0 and "resume:" not in stdout, err
    code, stdout, err = pretrain(capsys, data, out, "--auto_resume", epochs=1)  # the same command: all done
    assert code == 0 and "nothing to train" in stdout, err
    code, _, err = pretrain(capsys, data, out, "--auto_resume", "--batch_size", "2", "--blr", "2e-3", epochs=1)
    assert code == 1
    assert "--batch_size: 4 there, 2 now" in err and "--blr: 0.001 there, 0.002 now" in err
    assert "another --output_dir" in err
    code, _, err = pretrain(capsys, data, out, "--auto_resume", "--print_freq", "5", "--no_pin_mem", epochs=1)
    assert code == 0, err  # what is printed and how memory is pinned do not change the run
    code, _, err = pretrain(capsys, data, out, "--auto_resume", "--num_workers", "1", epochs=1)
    assert code == 1 and "--num_workers: 0 there, 1 now" in err  # each worker draws its own crops
    code, _, err = pretrain(capsys, data, out, "--auto_resume", "--resume", str(out), epochs=1)
    assert code == 1 and "pass one of them" in err
    code, _, err = pretrain(capsys, data, out, epochs=1)  # the default: a run is never written over
    assert code == 1 and "--auto_resume" in err and "already holds checkpoint-0.pth" in err


def test_a_start_removes_the_temporary_file_of_a_killed_save(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    out = tmp_path / "out"
    code, _, err = pretrain(capsys, data, out, epochs=1)
    assert code == 0, err
    stale = [out / ".checkpoint-1.pth.4242.tmp", out / f".{MID_EPOCH_NAME}.77.tmp"]
    for f in stale:
        f.write_bytes(b"x" * 1000)  # a save killed half-way
    (out / "notes.tmp").write_text("mine")  # not a save's temporary: left alone
    # Killed between writing checkpoint-0.pth and deleting the mid-epoch file of epoch 0 that it supersedes.
    torch.save({"model": {}, "epoch": -1, "position": {"epoch": 0, "step": 2}}, out / MID_EPOCH_NAME)
    code, stdout, err = pretrain(capsys, data, out, "--resume", str(out), epochs=2)  # any start cleans up
    assert code == 0, err
    for f in stale:
        assert not f.exists() and f"removed {f} (0.0 MB): the temporary file of a save that was killed" in stdout
    assert (out / "notes.tmp").exists()
    assert f"removed {out / MID_EPOCH_NAME}: a later epoch's checkpoint supersedes it" in stdout
    assert not (out / MID_EPOCH_NAME).exists()


def test_a_mid_epoch_file_of_another_process_count_is_refused(tmp_path: Path, data: Path) -> None:
    from mae.checkpoint import CheckpointError
    from mae.train.distributed import Dist
    from mae.train.runs import interrupted_epoch

    position = {"epoch": 1, "step": 2, "epoch_rng": {}, "averages": torch.zeros(2, 4, dtype=torch.float64)}
    torch.save({"model": {}, "epoch": 0, "rng": {}, "position": position}, tmp_path / MID_EPOCH_NAME)
    with pytest.raises(CheckpointError, match=r"by a run of 2 process\(es\); this run has 1"):
        interrupted_epoch(str(tmp_path / MID_EPOCH_NAME), STEPS, Dist())
    with pytest.raises(CheckpointError, match="but an epoch of this run has 1 batches"):
        position["averages"] = torch.zeros(1, 4, dtype=torch.float64)
        torch.save({"model": {}, "epoch": 0, "rng": {}, "position": position}, tmp_path / MID_EPOCH_NAME)
        interrupted_epoch(str(tmp_path / MID_EPOCH_NAME), 1, Dist())


def test_the_decision_is_the_clock_and_the_signal() -> None:
    from mae.train.distributed import Dist

    now = [0.0]
    with Preemption(Dist(), 1.0, clock=lambda: now[0]) as p:
        assert p.decide() == (False, False)
        now[0] = 59.9
        assert p.decide() == (False, False)
        now[0] = 60.0
        assert p.decide() == (True, False)
        p.saved()
        now[0] = 100.0
        assert p.decide() == (False, False)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert p.decide() == (True, True) and p.signal_name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the previous handler is back
    with Preemption(Dist(), None) as p:
        now[0] = 1e9
        assert p.decide() == (False, False)  # no --save_every_minutes: only a signal saves
