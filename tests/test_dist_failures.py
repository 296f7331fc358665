"""A failure on one rank ends every process promptly, with its rank and its cause (gloo, 2 processes).

Two launches: (a) one torchrun starting both processes, (b) two torchrun agents, one per simulated machine
(``--nnodes 2 --node_rank 0/1`` on 127.0.0.1). Two faults, injected by a wrapper script that patches one
function and then calls `mae.cli.main`: (i) rank 1's model forward raises at its third call, in the middle
of the first epoch; (ii) rank 0's ``torch.save`` fails as a full disk does (``OSError`` ENOSPC) when the
first checkpoint is written, while rank 1 goes on to the final barrier.

Each fault runs under one launch and each launch under one fault (the four pairings took a minute of the
suite's time): the forward under one torchrun, the full disk under two agents, where the other rank's own
exit status shows a barrier on the error path. In every case each launcher exits non-zero, the failing rank
prints its traceback (naming the patched function) and ``mae pretrain: rank R of 2: error: ...`` before
it leaves, and every process has ended within `BOUND_S` of the fault: the failing process leaves without a
barrier, the other one's next collective fails at once (gloo notices the closed connection) or its launcher
ends it. Measured on 2 busy cores, from the
fault to the exit of every launcher: 2 to 3 s under one torchrun, 3 to 8 s with two agents (most of it the
interpreters' and the agents' own shutdown; the same as before this check existed: gloo never hung here).
``--dist_timeout`` is 120 s, so a process waiting for a collective to time out would exceed the bound, and
the bound is below teardown's guard (`distributed.LEAVE_TIMEOUT_S`, 20 s), whose firing is checked too: a
barrier on the error path, tried on purpose, made the failing process wait for that guard (forward fault)
or let the other rank finish with status 0 (full disk).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
from train_helpers import TINY_ARGS, make_image_folder

from helpers import free_port

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"),
    pytest.mark.xdist_group("distributed"),
]

BOUND_S = 15.0  # from the fault to the end of every launcher (measured: 2 to 8 s; below LEAVE_TIMEOUT_S, 20 s)
LIMIT_S = 240  # a whole launch, start-up included: past it the test fails and kills what it started

# Chạy trong mỗi tiến trình của torchrun: vá một hàm rồi gọi `mae.cli.main`, như `python -m mae` làm.
FAULT_SCRIPT = """
import errno, os, sys, time

import torch

import mae
import mae.cli

RANK = int(os.environ["RANK"])
FAULT = sys.argv[1]


def note_fault(what):
    print(f"fault injected on rank {RANK} at {time.time():.3f}: {what}", file=sys.stderr, flush=True)


if FAULT == "forward" and RANK == 1:
    real_forward = mae.MaskedAutoencoderViT.forward
    calls = []

    def failing_forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            note_fault("forward")
            raise RuntimeError("injected fault in forward")
        return real_forward(self, *args, **kwargs)

    mae.MaskedAutoencoderViT.forward = failing_forward
elif FAULT == "disk_full" and RANK == 0:

    def full_disk_save(obj, f, *args, **kwargs):
        note_fault("torch.save")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    torch.save = full_disk_save
sys.exit(mae.cli.main(sys.argv[2:]))
"""

# fault -> (the failing rank, what its last line says, the patched function its traceback names)
FAULTS = {
    "forward": (1, "RuntimeError: injected fault in forward", "failing_forward"),
    "disk_full": (0, "OSError: [Errno 28] No space left on device", "full_disk_save"),
}


def launchers(script: Path, fault: str, mode: str, data: Path, out: Path) -> list[list[str]]:
    """The torchrun command(s) of one case: one torchrun of 2 processes, or 2 agents of 1 process each."""
    run = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
    ]
    argv = [str(script), fault, "pretrain", "--data_path", str(data), "--output_dir", str(out), *TINY_ARGS]
    argv += ["--batch_size", "2", "--epochs", "1", "--warmup_epochs", "1", "--dist_timeout", "120"]
    if mode == "one torchrun":
        return [[*run, "--nnodes", "1", "--nproc_per_node", "2", *argv]]
    return [[*run, "--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1", *argv] for node in (0, 1)]


def run_all(commands: list[list[str]], folder: Path) -> tuple[list[int], list[str], float]:
    """Start every command at once (each in its own session, output to files); wait until all have ended.

    Returns the exit codes, the outputs (stdout + stderr) and the time.time() when the last one ended.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    logs = [folder / f"launcher{i}.txt" for i in range(len(commands))]
    procs = []
    for command, log in zip(commands, logs, strict=True):
        with log.open("w") as f:
            procs.append(
                subprocess.Popen(
                    command, env=env, cwd=folder, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    try:
        deadline = time.monotonic() + LIMIT_S
        while any(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, f"still running after {LIMIT_S} s"
            time.sleep(0.05)
        ended = time.time()
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # nhóm tiến trình của torchrun này (agent và các worker của nó)
                p.wait()
    return [p.returncode for p in procs], [log.read_text() for log in logs], ended


# Mỗi kiểu lỗi và mỗi cách khởi chạy xuất hiện một lần (hai trường hợp thay vì bốn: thời gian của bộ test có hạn).
@pytest.mark.parametrize(("fault", "mode"), [("forward", "one torchrun"), ("disk_full", "two agents")])
def test_a_failure_on_one_rank_ends_every_process_with_its_cause(tmp_path: Path, fault: str, mode: str) -> None:
    data = make_image_folder(tmp_path / "data", per_class=8)  # 16 images: 4 batches of 2 per rank
    script = tmp_path / "fault.py"
    script.write_text(FAULT_SCRIPT)
    out = tmp_path / "out"
    codes, outputs, ended = run_all(launchers(script, fault, mode, data, out), tmp_path)
    everything = "\n".join(outputs)

    rank, last_line, function = FAULTS[fault]
    assert all(code != 0 for code in codes), everything
    injected = re.findall(r"fault injected on rank \d at ([\d.]+)", everything)
    assert len(injected) == 1, everything
    took = ended - float(injected[0])
    assert took < BOUND_S, f"the processes ended {took:.1f} s after the fault\n{everything}"
    assert "Timeout (0:00:" not in everything, everything  # teardown's guard (faulthandler) never had to end one
    # Tiến trình lỗi nói nó là rank nào và vì sao, kèm traceback chỉ tới hàm gây lỗi.
    failing = outputs[rank] if mode == "two agents" else everything
    assert f"mae pretrain: rank {rank} of 2: error: {last_line}" in failing, everything
    assert "Traceback (most recent call last)" in failing and f"in {function}" in failing, everything
    if mode == "two agents":  # the other agent's process was not ended by a launcher: it reports its own failure
        assert f"mae pretrain: rank {1 - rank} of 2: error: " in outputs[1 - rank], everything
    if fault == "disk_full":
        assert not out.exists() or not list(out.glob("*.pth")), everything  # không có checkpoint dở dang
    print(f"{fault}, {mode}: every process ended {took:.2f} s after the fault")
