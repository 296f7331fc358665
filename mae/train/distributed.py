"""Distributed data parallel set-up under ``torchrun`` or SLURM's ``srun`` (no launcher of our own).

``torchrun --nproc_per_node N [--nnodes M ...] -m mae pretrain ...`` starts one process per device and
sets RANK, WORLD_SIZE and LOCAL_RANK; each process joins the group here (gloo on the CPU, nccl on CUDA).
Rank 0 alone logs and saves. The official ``--dist_on_itp`` (OpenMPI variables) is honoured too.

``srun python -m mae pretrain ...`` (one task per process, no torchrun): where RANK and WORLD_SIZE are not
set, SLURM's variables are read as the official ``util/misc.init_distributed_mode`` reads them (`slurm_env`):
rank SLURM_PROCID, world size SLURM_NTASKS, local rank SLURM_LOCALID; the group meets at MASTER_ADDR, else
the first host of the step's node list (task 0 is there under Slurm's block and cyclic distributions), on
MASTER_PORT, else `port_of_job`. A single task (SLURM_NTASKS=1) is one process, without a group.
Departures from the official: the official takes the world size from its submitit launcher and the device
as SLURM_PROCID % device count; here SLURM_NTASKS and SLURM_LOCALID % device count (the same where every
node runs as many tasks as it has GPUs; also right with ``--gpus-per-task 1``, where a task sees one GPU).

Failures (`DEFAULT_TIMEOUT_S`, `teardown`): every collective and the rendezvous wait at most
``--dist_timeout`` seconds; a process that fails leaves without waiting for the others (no barrier).
"""

from __future__ import annotations

import contextlib
import datetime
import faulthandler
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError

# How long a process waits for the others, in a collective or at the rendezvous (--dist_timeout). PyTorch's
# defaults are 30 min (gloo) and 10 min (nccl). Under gloo a peer that dies is noticed at once (its
# connection closes), whatever the timeout; under nccl only when a collective outlives it (PyTorch's watchdog
# then ends the process: TORCH_NCCL_ASYNC_ERROR_HANDLING, 3 by default since PyTorch 2.2; 0 would let it wait
# on). 5 min: more than the longest honest wait here, the other ranks waiting at the next step while rank 0
# writes a checkpoint (ViT-H with its AdamW state is 7.6 GB: 2.5 min at 50 MB/s) or compiles, and half nccl's.
DEFAULT_TIMEOUT_S = 300.0
# After an error, how long closing the group may take before the process is ended regardless (`teardown`).
LEAVE_TIMEOUT_S = 20.0
# The rendezvous port under srun without MASTER_PORT: 20000 + SLURM_JOB_ID % 10000 (`port_of_job`); 29500
# (torchrun's default) without a job id.
DEFAULT_PORT = 29500
TORCHRUN_HINT = (
    "srun torchrun --nnodes $SLURM_NNODES --nproc_per_node GPUS_PER_NODE --rdzv_backend c10d "
    "--rdzv_endpoint $MASTER_ADDR:29500 -m mae ... (one task per node)"
)


class RendezvousError(UserError, RuntimeError):
    """The processes could not meet: the message names the rank, the address and what to check."""


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank, world size and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # noqa: RUF009  (an immutable value)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def where(self) -> str:
        """The text "rank R of N" in a process group (for messages); "" in one process."""
        return f"rank {self.rank} of {self.world_size}" if self.enabled else ""

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all ranks (the value itself in one process)."""
        if not self.enabled:
            return value
        t = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def sum(self, values: list[float]) -> list[float]:
        """The element-wise sums of ``values`` over all ranks, in float64 (the values themselves in one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(v) for v in t.tolist()]

    def gather_rows(self, row: torch.Tensor) -> torch.Tensor:
        """Every rank's ``row`` (same shape on all ranks), stacked in rank order: [world_size, *row.shape]."""
        if not self.enabled:
            return row.unsqueeze(0)
        parts = [torch.empty_like(row, device=self.device) for _ in range(self.world_size)]
        dist.all_gather(parts, row.to(self.device))
        return torch.stack([p.cpu() for p in parts])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


_ITEM = re.compile(r"(?:[A-Za-z0-9._-]+|\[\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*\])+")  # node[01-04,07]-ib
_GROUP = re.compile(r"\[([^\]]*)\]")


def first_host(nodelist: str) -> str:
    """The first host of Slurm's compact node list: "node[01-04,07],gpu3" -> "node01", "r[2-3]-n[5-6]" -> "r2-n5".

    ValueError where this reader cannot tell (empty, an unclosed or nested bracket, a range that is not of
    numbers or runs backwards): set MASTER_ADDR then.
    """
    item, depth = nodelist.strip(), 0
    for i, char in enumerate(item):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            item = item[:i]  # dấu phẩy ngoài ngoặc vuông ngăn cách các nút; nút đầu là nút của tác vụ 0
            break
    if not _ITEM.fullmatch(item):
        raise ValueError(f"cannot read the node list {nodelist!r}")
    for group in _GROUP.findall(item):
        for part in group.split(","):
            start, _, end = part.partition("-")
            if end and int(end) < int(start):
                raise ValueError(f"cannot read the node list {nodelist!r}: the range {part} runs backwards")
    # Mỗi ngoặc lấy số đầu tiên, giữ nguyên số 0 ở đầu: node[01-04] -> node01.
    return _GROUP.sub(lambda m: m.group(1).split(",")[0].split("-")[0], item)


def port_of_job(job_id: str | None) -> int:
    """The rendezvous port of a SLURM job without MASTER_PORT: 20000 + SLURM_JOB_ID % 10000, else 29500.

    Every task of a job computes the same port; two jobs whose rank 0 share a node get different ones unless
    their ids differ by a multiple of 10000; the range 20000-29999 lies below Linux's ephemeral ports
    (32768 and up), so no outgoing connection holds it.
    """
    if job_id is None or not job_id.isdigit():
        return DEFAULT_PORT
    return 20000 + int(job_id) % 10000


def _slurm_int(env: Mapping[str, str], name: str) -> int:
    value = env.get(name)
    if value is None or not value.strip().isdigit():
        problem = "is not set" if value is None else f"is {value!r}, not a number"
        raise ValueError(
            f"{name} {problem}, though SLURM_PROCID is set: this is not a task that srun started. Start one task "
            f"per process with `srun python -m mae ...`, or one per node with `{TORCHRUN_HINT}`"
        )
    return int(value)


def _rank0_host(env: Mapping[str, str]) -> str:
    names = [n for n in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST") if env.get(n)]
    if not names:
        raise ValueError(
            "MASTER_ADDR is not set, nor SLURM_STEP_NODELIST, SLURM_JOB_NODELIST or SLURM_NODELIST: rank 0's host "
            'is unknown. Set it before srun: export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
            f"| head -n 1); or launch with `{TORCHRUN_HINT}`"
        )
    name = names[0]
    try:
        return first_host(env[name])
    except ValueError as e:
        raise ValueError(
            f"{e} ({name}): rank 0's host is unknown. Set MASTER_ADDR before srun: export MASTER_ADDR=$(scontrol "
            f'show hostnames "${name}" | head -n 1); or launch with `{TORCHRUN_HINT}`'
        ) from None


def slurm_env(env: Mapping[str, str], need_address: bool = True) -> dict[str, str]:
    """What torchrun would have set for this srun task, read from SLURM's variables (the module docstring says
    how): RANK, WORLD_SIZE, LOCAL_RANK, and with ``need_address`` (an ``env://`` rendezvous) MASTER_ADDR and
    MASTER_PORT. {} where there is nothing to join: no SLURM_PROCID, or a single task (SLURM_NTASKS=1).

    ValueError naming the variable that is missing or unreadable, and the command to use instead.
    """
    if "SLURM_PROCID" not in env:
        return {}
    world_size = _slurm_int(env, "SLURM_NTASKS")
    if world_size <= 1:
        return {}  # một tác vụ: một tiến trình, không cần nhóm
    rank = _slurm_int(env, "SLURM_PROCID")
    if rank >= world_size:
        raise ValueError(f"SLURM_PROCID {rank} is not below SLURM_NTASKS {world_size}: the SLURM variables disagree")
    found = {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(_slurm_int(env, "SLURM_LOCALID"))}
    if need_address:
        found["MASTER_ADDR"] = env.get("MASTER_ADDR") or _rank0_host(env)
        found["MASTER_PORT"] = env.get("MASTER_PORT") or str(port_of_job(env.get("SLURM_JOB_ID")))
    return found


def available_device(name: str) -> torch.device:
    """``--device name`` as a device; ValueError, before any work, for CUDA on a machine where torch sees no GPU."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine (torch sees no GPU); use --device cpu")
    return device


def setup(
    device: str, dist_url: str = "env://", dist_on_itp: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Dist:
    """Join the process group when launched by torchrun, by srun (`slurm_env`) or by OpenMPI with ``dist_on_itp``;
    else one process.

    ``device`` is "cuda", "cuda:N" or "cpu"; a CUDA run uses ``cuda:LOCAL_RANK`` (under srun, LOCAL_RANK modulo
    the devices this task sees). The rendezvous and every collective wait at most ``timeout_s`` seconds.
    Raises ValueError where the SLURM variables cannot be used, `RendezvousError` where the processes do not
    meet within ``timeout_s``.
    """
    if dist_on_itp:
        os.environ.update(
            RANK=os.environ["OMPI_COMM_WORLD_RANK"],
            WORLD_SIZE=os.environ["OMPI_COMM_WORLD_SIZE"],
            LOCAL_RANK=os.environ["OMPI_COMM_WORLD_LOCAL_RANK"],
        )
    target = available_device(device)
    under_srun = False
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        found = slurm_env(os.environ, need_address=dist_url == "env://")
        if not found:
            return Dist(device=target)
        os.environ.update(found)  # "env://" đọc RANK, MASTER_ADDR... như khi torchrun đặt chúng
        under_srun = True
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if target.type == "cuda":
        target = torch.device("cuda", local_rank % torch.cuda.device_count() if under_srun else local_rank)
        torch.cuda.set_device(target)
    # Mỗi tiến trình một phần dữ liệu; gradient được lấy trung bình giữa các tiến trình sau mỗi bước.
    backend = "nccl" if target.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        dist.init_process_group(
            backend=backend, init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
        )
    except dist.DistError as e:
        raise RendezvousError(_rendezvous_problem(rank, world_size, dist_url, timeout_s, e, under_srun)) from e
    return Dist(rank=rank, world_size=world_size, device=target)


def _rendezvous_problem(
    rank: int, world_size: int, dist_url: str, timeout_s: float, error: Exception, under_srun: bool
) -> str:
    address = dist_url
    if dist_url == "env://":
        address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    cause = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
    advice = (
        "Start every task with srun (`srun python -m mae ...`: `python` alone in a batch script with --ntasks N "
        "is one task waiting for others that never start), check that every node reaches that address (or set "
        "MASTER_ADDR and MASTER_PORT)"
        if under_srun
        else "Check that every process was started (with torchrun --nnodes M, one torchrun per machine) and "
        "reaches that address"
    )
    return (
        f"rank {rank} of {world_size} could not meet the other processes at {address} within --dist_timeout "
        f"{timeout_s:g} s ({cause}). {advice}; raise --dist_timeout if they start far apart"
    )


def teardown(failed: bool = False) -> None:
    """Leave the process group (none: nothing to do).

    After an error (``failed``), nothing waits for the other processes (no barrier), and should closing the
    group hang (nccl with a lost peer can: unmeasured here, there is no GPU), the process is ended with exit
    status 1 after `LEAVE_TIMEOUT_S`, the stacks of its threads printed (faulthandler's watchdog needs no GIL).
    """
    if not dist.is_initialized():
        return
    if not failed:
        dist.destroy_process_group()
        return
    if sys.__stderr__ is not None:
        faulthandler.dump_traceback_later(LEAVE_TIMEOUT_S, exit=True, file=sys.__stderr__)
    try:
        with contextlib.suppress(Exception):  # sau một lỗi, nhóm bị bỏ lại dù đóng được hay không
            dist.destroy_process_group()
    finally:
        faulthandler.cancel_dump_traceback_later()
