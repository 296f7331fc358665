"""DistributedDataParallel (gloo, 2 processes on loopback, spawned here): gradients equal the
single-process run on the same global batch, for the MAE and the classifier; a checkpoint saved from
the DDP-wrapped model (`module.` keys) loads back through `load_pretrained`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import mae
from helpers import free_port, gloo_group, small_config

WORLD = 2
BATCH = 4  # global batch, split evenly between the ranks


def build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mae":
        return mae.MaskedAutoencoderViT(small_config())
    return mae.VisionTransformer(small_config(), num_classes=5)


def loss_of(kind: str, model: nn.Module, batch: dict[str, torch.Tensor], rows: slice) -> torch.Tensor:
    if kind == "mae":
        # Every sample has the same number of removed patches, so the mean of the ranks' losses is the
        # loss of the whole batch; the noise is given so both runs mask alike.
        return model(batch["imgs"][rows], mask_ratio=0.75, noise=batch["noise"][rows])[0]
    return nn.functional.cross_entropy(model(batch["imgs"][rows]), batch["labels"][rows])


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def worker(rank: int, port: int, folder: str) -> None:
    with gloo_group(rank, port, WORLD):
        batch = torch.load(Path(folder) / "batch.pt", weights_only=True)
        per_rank = BATCH // WORLD
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        for kind in ("mae", "classifier"):
            ddp = DistributedDataParallel(build(kind))
            loss_of(kind, ddp, batch, rows).backward()  # DDP averages the gradients over the ranks
            if rank == 0:
                torch.save(gradients(ddp.module), Path(folder) / f"{kind}_grads.pt")
                torch.save({"model": ddp.state_dict()}, Path(folder) / f"{kind}_ddp.pth")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_ddp_gradients_equal_single_process_and_checkpoints_load(tmp_path: Path) -> None:
    torch.manual_seed(1)
    batch = {
        "imgs": torch.randn(BATCH, 3, 32, 32),
        "noise": torch.rand(BATCH, 16),
        "labels": torch.randint(0, 5, (BATCH,)),
    }
    torch.save(batch, tmp_path / "batch.pt")
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for kind in ("mae", "classifier"):
        model = build(kind)
        loss_of(kind, model, batch, slice(0, BATCH)).backward()
        single = gradients(model)
        distributed = torch.load(tmp_path / f"{kind}_grads.pt", weights_only=True)
        assert set(distributed) == set(single)
        for name in single:
            torch.testing.assert_close(distributed[name], single[name], atol=1e-6, rtol=1e-5, msg=name)
        saved = torch.load(tmp_path / f"{kind}_ddp.pth", weights_only=True)["model"]
        assert all(k.startswith("module.") for k in saved)
        fresh = build(kind)
        with torch.no_grad():
            for p in fresh.parameters():
                p.zero_()
        report = fresh.load_pretrained(tmp_path / f"{kind}_ddp.pth")  # type: ignore[operator]
        assert "module." in " ".join(report.notes)
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
