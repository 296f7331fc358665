"""Preemption under DistributedDataParallel (2 gloo processes): a signal to one rank stops both at the same step.

SIGTERM reaches rank 1 alone, in the middle of epoch 1. At the next optimizer-step boundary the ranks agree
(one all-reduce of the flags): both write their share of ``checkpoint-midepoch.pth`` (rank 0 the file, with
both ranks' generator states and running averages) and both exit with status 75. The same command with
``--auto_resume`` then ends bit for bit where the uninterrupted 2-process run ends.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist
from test_requeue import same_run
from torch.multiprocessing.spawn import spawn
from train_helpers import TINY_ARGS, make_image_folder
from train_helpers import load_checkpoint as load

from helpers import free_port
from mae.train.preemption import EXIT_PREEMPTED
from mae.train.run_checkpoint import MID_EPOCH_NAME

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"),
    pytest.mark.xdist_group("requeue-distributed"),
]

STEPS = 3  # 24 images, 2 processes, batches of 4: 3 per process and epoch


def _rank(rank: int, port: int, argv: list[str], signal_at: int, results: str) -> None:
    """One process of the run: `mae pretrain` as torchrun would start it; rank 1 sends itself SIGTERM from its
    ``signal_at``-th forward (0 for none). Writes its exit status to ``results/rank``."""
    import torch

    import mae
    import mae.cli

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    calls = [0]
    forward = mae.MaskedAutoencoderViT.forward

    def counted(model: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if rank == 1 and calls[0] == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)  # chỉ tiến trình 1 nhận tín hiệu
        return forward(model, *args, **kwargs)

    mae.MaskedAutoencoderViT.forward = counted  # type: ignore[method-assign]
    code = mae.cli.main(argv)
    Path(results, str(rank)).write_text(str(code))


def run(out: Path, data: Path, signal_at: int = 0) -> list[int]:
    argv = [
        "pretrain",
        "--data_path",
        str(data),
        *TINY_ARGS,
        "--batch_size",
        "4",
        "--epochs",
        "2",
        "--warmup_epochs",
        "1",
        "--save_every",
        "1",
        "--auto_resume",
        "--output_dir",
        str(out),
        "--dist_timeout",
        "30",
    ]  # fmt: skip  (ranks that disagree fail in 30 s, not hang)
    results = out.parent / f"{out.name}-codes"
    results.mkdir(exist_ok=True)
    spawn(_rank, args=(free_port(), argv, signal_at, str(results)), nprocs=2, join=True)
    return [int((results / str(r)).read_text()) for r in range(2)]


def test_a_signal_to_one_rank_stops_both_at_one_step_and_the_requeue_is_the_straight_run(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", classes=2, per_class=12)
    assert run(tmp_path / "straight", data) == [0, 0]
    out = tmp_path / "requeued"
    assert run(out, data, signal_at=STEPS + 2) == [EXIT_PREEMPTED, EXIT_PREEMPTED]  # epoch 1, its second batch
    mid = load(out / MID_EPOCH_NAME)
    assert (mid["position"]["epoch"], mid["position"]["step"]) == (1, 2)
    assert mid["rng"]["cpu"].shape[0] == 2 and mid["position"]["averages"].shape == (2, 5)  # both ranks' rows
    assert run(out, data) == [0, 0]
    same_run(tmp_path / "straight", out, last_epoch=1)
