"""Distributed data parallel set-up under ``torchrun`` (no launcher of our own).

``torchrun --nproc_per_node N [--nnodes M ...] -m mae pretrain ...`` starts one process per device and
sets RANK, WORLD_SIZE and LOCAL_RANK; each process joins the group here (gloo on the CPU, nccl on CUDA).
Rank 0 alone logs and saves. The official ``--dist_on_itp`` (OpenMPI variables) is honoured too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def setup(device: str, dist_url: str = "env://", dist_on_itp: bool = False) -> Dist:
    """Join the process group when launched by torchrun (or OpenMPI with ``dist_on_itp``); else one process.

    ``device`` is "cuda", "cuda:N" or "cpu"; under torchrun a CUDA run uses ``cuda:LOCAL_RANK``.
    """
    if dist_on_itp:
        os.environ.update(
            RANK=os.environ["OMPI_COMM_WORLD_RANK"],
            WORLD_SIZE=os.environ["OMPI_COMM_WORLD_SIZE"],
            LOCAL_RANK=os.environ["OMPI_COMM_WORLD_LOCAL_RANK"],
        )
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine (torch sees no GPU); use --device cpu")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist(device=target)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if target.type == "cuda":
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    # Mỗi tiến trình một phần dữ liệu; gradient được lấy trung bình giữa các tiến trình sau mỗi bước.
    backend = "nccl" if target.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method=dist_url, world_size=world_size, rank=rank)
    return Dist(rank=rank, world_size=world_size, device=target)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
