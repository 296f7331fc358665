"""Fault injection as a scheduler does it: ``mae pretrain`` killed at chosen moments and started again.

One run of 3 epochs (6 optimizer steps each, a checkpoint every epoch, a mid-epoch checkpoint at nearly every
step with ``--save_every_minutes``, one loader worker) is killed again and again, its whole process group as a
scheduler does: with SIGKILL in the middle of a step, during a checkpoint write (half of the file written), at
a random moment; with SIGTERM in the middle of an epoch (exit 75 after a mid-epoch checkpoint). After each kill
every checkpoint visible in the folder loads whole, and the same command with ``--auto_resume`` continues. At
the end no temporary file remains and the weights, optimizer state and log equal the uninterrupted run's, bit
for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_requeue import same_run
from train_helpers import TINY_ARGS, make_image_folder, run_quietly
from train_helpers import load_checkpoint as load

from mae.train.preemption import EXIT_PREEMPTED
from mae.train.run_checkpoint import MID_EPOCH_NAME

# Starts the command after arranging the chosen moment: KILL_AT=forward:N holds the N-th forward (1-based) and
# KILL_AT=save:N the N-th save half-written, each after writing MARKER, until the test kills the process;
# KILL_AT=term:N or mark:N writes MARKER at the N-th forward and goes on (the test then sends SIGTERM, or
# SIGKILL at a random moment). The test signals the whole process group, as a scheduler does: the loader's
# worker too. One thread, as the uninterrupted run.
DRIVER = """
import os, sys, time
from pathlib import Path
import torch
import mae, mae.cli

kind, _, n = os.environ.get("KILL_AT", "").partition(":")
n, count, marker = int(n or 0), [0], Path(os.environ["MARKER"])

def hold(what):
    marker.write_text(what)
    time.sleep(300)  # the test kills the process here

if kind in ("forward", "term", "mark"):
    forward = mae.MaskedAutoencoderViT.forward
    def counted(self, *args, **kwargs):
        count[0] += 1
        if count[0] == n:
            if kind in ("mark", "term"):
                marker.write_text("training")  # and go on: the test signals the process group after this
            else:
                hold("forward")
        return forward(self, *args, **kwargs)
    mae.MaskedAutoencoderViT.forward = counted
elif kind == "save":
    save = torch.save
    def half_written(obj, f, *args, **kwargs):
        count[0] += 1
        if count[0] == n:
            f.write(b"PK half a checkpoint")
            f.flush()
            hold("save")
        return save(obj, f, *args, **kwargs)
    torch.save = half_written
torch.set_num_threads(1)
sys.exit(mae.cli.main(sys.argv[1:]))
"""
WORKERS = 1  # a loader worker process draws the crops (killed with its parent); the same count in every start
TIMEOUT = 120  # seconds for one start of the command (about 5 s each on a quiet 2-core machine)


def command(data: Path, out: Path, workers: int) -> list[str]:
    """The one command every start runs: 3 epochs, a checkpoint each, a mid-epoch one at nearly every step."""
    return [
        "pretrain", "--data_path", str(data), *TINY_ARGS, "--num_workers", str(workers), "--batch_size", "4",
        "--epochs", "3", "--warmup_epochs", "1", "--save_every", "1", "--save_every_minutes", "0.0001",
        "--auto_resume", "--output_dir", str(out),
    ]  # fmt: skip


def start(driver: Path, argv: list[str], kill_at: str, marker: Path) -> subprocess.Popen[str]:
    marker.unlink(missing_ok=True)
    env = {**os.environ, "KILL_AT": kill_at, "MARKER": str(marker)}
    return subprocess.Popen(
        [sys.executable, str(driver), *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: the run and its loader worker, signalled together
    )  # fmt: skip


def wait_for(marker: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        assert process.poll() is None, f"ended before the moment: {process.communicate()}"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.05)


def assert_only_whole_checkpoints(out: Path) -> None:
    """What a reader of the folder sees after a kill: every checkpoint name a whole file."""
    for path in sorted(out.glob("checkpoint-*.pth")):
        ckpt = load(path)
        assert {"model", "optimizer", "epoch", "scaler", "args", "rng"} <= set(ckpt), path


@pytest.mark.xdist_group("requeue-kills")
def test_killed_at_any_moment_and_requeued_equals_the_straight_run(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", classes=2, per_class=12)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    marker = tmp_path / "marker"
    code, _, err = run_quietly(*command(data, tmp_path / "straight", WORKERS))
    assert code == 0, err
    out = tmp_path / "killed"
    rng = random.Random(0)
    # Mid-step before any checkpoint; during a save; mid-step after one; SIGTERM to the process group; a random
    # moment. Five starts killed, then the one that finishes (about 5 s each on a quiet 2-core machine).
    moments = ["forward:4", "save:2", "forward:5", "term:3", "mark:1"]
    for kill_at in moments:
        process = start(driver, command(data, out, WORKERS), kill_at, marker)
        if kill_at.startswith("term"):
            wait_for(marker, process)
            os.killpg(process.pid, signal.SIGTERM)  # every process of the job, the loader's worker too
            _, stderr = process.communicate(timeout=TIMEOUT)
            assert process.returncode == EXIT_PREEMPTED, stderr
            assert "stopped by SIGTERM" in stderr and (out / MID_EPOCH_NAME).is_file()
        else:
            wait_for(marker, process)
            if kill_at.startswith("mark"):
                time.sleep(rng.uniform(0.0, 0.5))  # the rest of the run takes about a second
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=TIMEOUT)
            # At a random moment the run may have ended by itself first (then the next start has nothing to do).
            assert process.returncode == -signal.SIGKILL or (kill_at.startswith("mark") and process.returncode == 0)
        assert_only_whole_checkpoints(out)
        if kill_at.startswith("save"):
            assert list(out.glob(".checkpoint-*.tmp")), "the killed save left its temporary file"
    process = start(driver, command(data, out, WORKERS), "", marker)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-0.pth", "checkpoint-1.pth", "checkpoint-2.pth",
                                                      "log.txt"]  # fmt: skip
    same_run(tmp_path / "straight", out, last_epoch=2)
    assert torch.equal(
        load(out / "checkpoint-2.pth")["rng"]["cpu"], load(tmp_path / "straight" / "checkpoint-2.pth")["rng"]["cpu"]
    )
