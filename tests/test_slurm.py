"""Runs under SLURM's srun without torchrun: the tasks read their ranks from SLURM's variables.

- The reading (`distributed.slurm_env`, `first_host`, `port_of_job`): rank SLURM_PROCID, world size
  SLURM_NTASKS, local rank SLURM_LOCALID; MASTER_ADDR, else the first host of the step's (else the job's)
  compact node list; MASTER_PORT, else 20000 + SLURM_JOB_ID % 10000. A single task is one process. A
  missing variable or a node list this reader cannot expand is a ValueError that names the variable and
  the command to use instead.
- Two plain processes (no torchrun) given the variables srun gives its tasks form one group of 2 on
  loopback: rank 0 alone prints and writes, the log says 2 processes, and the checkpoints (weights,
  optimizer state, every rank's generator state) equal those of `torchrun --nproc_per_node 2` on the same
  run, bit for bit.
- A task alone (a batch script running `python` with --ntasks 2, say) fails after --dist_timeout, naming
  its rank, the address and srun: --dist_timeout reaches the rendezvous.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from train_helpers import TINY_ARGS, make_image_folder

from helpers import free_port
from mae.train import distributed

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"),
    pytest.mark.xdist_group("distributed"),
]

TASK = {"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242"}
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------ reading the variables


@pytest.mark.parametrize(
    "nodelist, first",
    [
        ("node[01-04]", "node01"),
        ("node[01-04,07],gpu3", "node01"),
        ("gpu3,node[01-04]", "gpu3"),
        ("node[7,2-3]", "node7"),
        ("rack[2-3]-node[009-011]", "rack2-node009"),
        ("node[01-02]-ib", "node01-ib"),
        ("cn-12.cluster", "cn-12.cluster"),
        (" node5 ", "node5"),
    ],
)
def test_first_host_of_a_compact_node_list(nodelist: str, first: str) -> None:
    assert distributed.first_host(nodelist) == first


@pytest.mark.parametrize("nodelist", ["", ",node1", "node[01-04", "node01-04]", "node[a-b]", "node[[1-2]]", "node[]"])
def test_a_node_list_that_cannot_be_read_is_refused(nodelist: str) -> None:
    with pytest.raises(ValueError, match="cannot read the node list"):
        distributed.first_host(nodelist)


def test_a_range_that_runs_backwards_is_refused() -> None:
    with pytest.raises(ValueError, match="the range 04-01 runs backwards"):
        distributed.first_host("node[04-01]")


def test_the_default_port_follows_the_job_id() -> None:
    assert distributed.port_of_job("4242") == 24242
    assert distributed.port_of_job("1234567") == 24567  # 20000 + id % 10000: below the ephemeral ports
    assert distributed.port_of_job(None) == distributed.port_of_job("") == 29500  # torchrun's default


def test_srun_variables_give_rank_world_size_and_rendezvous() -> None:
    env = {**TASK, "SLURM_JOB_NODELIST": "node[01-04]"}
    assert distributed.slurm_env(env) == {
        "RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node01",
        "MASTER_PORT": "24242",
    }
    # MASTER_ADDR and MASTER_PORT win; the step's node list wins over the job's (a step may use fewer nodes).
    given = distributed.slurm_env({**env, "MASTER_ADDR": "head", "MASTER_PORT": "1234"})
    assert (given["MASTER_ADDR"], given["MASTER_PORT"]) == ("head", "1234")
    assert distributed.slurm_env({**env, "SLURM_STEP_NODELIST": "gpu[3-4]"})["MASTER_ADDR"] == "gpu3"
    older = {**TASK, "SLURM_NODELIST": "old[5-6]"}
    assert distributed.slurm_env(older)["MASTER_ADDR"] == "old5"
    # Another rendezvous (--dist_url tcp://...) needs no address.
    assert set(distributed.slurm_env(TASK, need_address=False)) == {"RANK", "WORLD_SIZE", "LOCAL_RANK"}


def test_no_slurm_task_or_a_single_task_is_one_process() -> None:
    assert distributed.slurm_env({}) == {}
    assert distributed.slurm_env({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == {}  # no SLURM_PROCID: not srun's
    assert distributed.slurm_env({**TASK, "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == {}


@pytest.mark.parametrize(
    "change, says",
    [
        ({"SLURM_NTASKS": None}, ["SLURM_NTASKS is not set", "srun python -m mae", "srun torchrun"]),
        ({"SLURM_LOCALID": None}, ["SLURM_LOCALID is not set", "srun python -m mae"]),
        ({"SLURM_PROCID": "one"}, ["SLURM_PROCID is 'one', not a number"]),
        ({"SLURM_PROCID": "4"}, ["SLURM_PROCID 4 is not below SLURM_NTASKS 4"]),
        ({"SLURM_JOB_NODELIST": None}, ["MASTER_ADDR is not set", "SLURM_JOB_NODELIST", "scontrol show hostnames"]),
        (
            {"SLURM_JOB_NODELIST": "node[01-04"},
            ["cannot read the node list 'node[01-04'", "Set MASTER_ADDR", "scontrol show hostnames", "srun torchrun"],
        ),
    ],
    ids=["no ntasks", "no localid", "procid not a number", "procid too large", "no nodelist", "bad nodelist"],
)
def test_what_cannot_be_used_is_refused_naming_the_variable(change: dict[str, str | None], says: list[str]) -> None:
    env = {**TASK, "SLURM_JOB_NODELIST": "node[01-04]", **change}
    with pytest.raises(ValueError) as raised:
        distributed.slurm_env({k: v for k, v in env.items() if v is not None})
    for text in says:
        assert text in str(raised.value)


def test_setup_reads_slurm_only_without_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert distributed.setup("cpu") == distributed.Dist()  # one task: one process, no group
    assert not dist.is_initialized()
    # Under `srun torchrun`, torchrun's RANK and WORLD_SIZE win: SLURM's (unusable here) are not read.
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.delenv("SLURM_LOCALID", raising=False)
    with pytest.raises(ValueError, match="SLURM_LOCALID"):
        distributed.setup("cpu")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    try:
        assert distributed.setup("cpu", timeout_s=30).world_size == 1
    finally:
        distributed.teardown()


# ------------------------------------------------------------------ srun's tasks as plain processes


def pretrain_argv(data: Path, out: Path, *more: str) -> list[str]:
    return [
        *("pretrain", "--data_path", str(data), "--output_dir", str(out), *TINY_ARGS),
        *("--batch_size", "2", "--epochs", "2", "--warmup_epochs", "1", "--save_every", "1", *more),
    ]


def plain_env(**slurm: str) -> dict[str, str]:
    """This environment without torchrun's variables (and any SLURM job's), plus ``slurm``, on one thread."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", **slurm}


def load(path: Path) -> dict[str, Any]:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return dict(torch.load(path, map_location="cpu", weights_only=True))


def assert_bit_equal(ours: Any, theirs: Any, where: str) -> None:
    """Nested dicts, lists and tensors equal bit for bit."""
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), where
        for key in ours:
            assert_bit_equal(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_bit_equal(a, b, f"{where}[{i}]")
    elif isinstance(ours, torch.Tensor):
        assert torch.equal(ours, theirs), where
    else:
        assert ours == theirs, where


def test_srun_tasks_form_one_group_equal_to_torchrun(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=4)  # 8 images: 2 batches of 2 per rank and epoch
    port = free_port()
    tasks = []
    for rank in range(2):
        # What srun gives task `rank` of 2; rank 0's host comes from the node list (no MASTER_ADDR).
        env = plain_env(
            SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_LOCALID=str(rank), SLURM_JOB_ID="4242",
            SLURM_JOB_NODELIST="127.0.0.[1-4]", MASTER_PORT=str(port),
        )  # fmt: skip
        command = [sys.executable, "-m", "mae", *pretrain_argv(data, tmp_path / "srun")]
        tasks.append(subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = []
    try:
        for task in tasks:
            out, err = task.communicate(timeout=300)
            outputs.append((task.returncode, out.decode(), err.decode()))
    finally:
        for task in tasks:
            task.kill()
            task.wait()
    for code, out, err in outputs:
        assert code == 0, out + err
    assert "batch: 2 x accum 1 x 2 process(es) = 4" in outputs[0][1]  # một nhóm hai tiến trình, không phải hai rank 0
    assert "epoch 2/2:" in outputs[0][1] and "epoch 2/2:" not in outputs[1][1]  # chỉ rank 0 in
    records = [json.loads(line) for line in (tmp_path / "srun" / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]  # chỉ rank 0 ghi log
    # 8 ảnh / 2 tiến trình / batch 2 = 2 bước mỗi epoch, 2 epoch.
    srun = load(tmp_path / "srun" / "checkpoint-1.pth")
    assert {int(s["step"]) for s in srun["optimizer"]["state"].values()} == {4}

    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "mae"]
    command += pretrain_argv(data, tmp_path / "torchrun")
    done = subprocess.run(command, env=plain_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for epoch in (0, 1):
        ours, theirs = (
            load(tmp_path / "srun" / f"checkpoint-{epoch}.pth"),
            load(tmp_path / "torchrun" / f"checkpoint-{epoch}.pth"),
        )
        for key in ("model", "optimizer", "epoch", "scaler", "rng"):
            assert_bit_equal(ours[key], theirs[key], f"checkpoint-{epoch}.{key}")


def test_a_lone_srun_task_fails_after_dist_timeout(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=2)
    port = free_port()
    env = plain_env(SLURM_PROCID="0", SLURM_NTASKS="2", SLURM_LOCALID="0", MASTER_ADDR="127.0.0.1")
    command = [sys.executable, "-m", "mae", *pretrain_argv(data, tmp_path / "out", "--dist_timeout", "2")]
    started = time.monotonic()
    done = subprocess.run(
        command, env={**env, "MASTER_PORT": str(port)}, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    waited = time.monotonic() - started
    assert done.returncode == 1
    line = f"mae pretrain: error: rank 0 of 2 could not meet the other processes at 127.0.0.1:{port} within "
    assert line + "--dist_timeout 2 s" in done.stderr, done.stderr
    assert "srun python -m mae" in done.stderr and "Traceback" not in done.stderr
    assert waited < 60  # không phải 300 s mặc định: --dist_timeout tới được điểm hẹn
    assert not (tmp_path / "out").exists()
