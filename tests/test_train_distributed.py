"""Data-parallel pre-training (gloo on the CPU, 2 processes): the same steps as one process on the whole batch.

- `torchrun --standalone --nproc_per_node 2 -m mae pretrain ...` trains a tiny MAE for one epoch with
  accum_iter 2 and finishes; rank 0 alone logs and saves (one log.txt record per epoch, one console
  line, one checkpoint holding both ranks' generator states). The figures its log.txt holds are the ones
  computed here: ``train_lr`` the schedule's per-iteration lr averaged over the epoch, ``train_loss`` the mean
  over the two ranks of each rank's average loss, each rank's recomputed in this process from its seed, its
  share of the data and its draws (rank 0's as it printed it).
- At the engine level (2 processes spawned here, the model wrapped in DistributedDataParallel, each rank
  fed its half of every global batch): at EVERY optimizer step the ranks use identical gradients and
  then hold identical weights (torch.equal), and these equal a single-process run of `train_one_epoch`
  on the whole batches within 1e-6, over 2 epochs with accum_iter 2 and a partial accumulation at the
  end of each epoch. The gradients are compared as well as the weights because AdamW's step hardly
  depends on the gradient's scale (a gradient summed instead of averaged over ranks would pass). Each
  epoch's figures (the ``loss`` and ``lr`` `mae pretrain` logs) are the same on both ranks and equal the
  single process's: the loss, the mean over ranks, within 1e-9; the lr exactly.

The masking noise is given, not drawn: the model is wrapped in a module that passes each micro-batch's
precomputed noise rows (rank r gets rows of its half). Seeding alike would not do: one process on the
whole batch draws one torch.rand(2B, L), two ranks draw two torch.rand(B, L) from their own generators,
and these are different numbers. float64, for the reason given in `tests/test_train_parity.py`: the
ranks' gradients are averaged in another order than one process sums them, and AdamW amplifies that
rounding noise on the key bias, whose exact gradient is zero.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.multiprocessing.spawn import spawn
from torch.nn.parallel import DistributedDataParallel
from train_helpers import FixedNoise, make_image_folder

import mae
from helpers import free_port, gloo_group, small_config
from mae.train.data import IMAGENET_MEAN, IMAGENET_STD, build_loader, build_pretrain_dataset
from mae.train.distributed import Dist
from mae.train.engine_pretrain import train_one_epoch
from mae.train.normalize import DeviceNormalize
from mae.train.optim import build_adamw
from mae.train.precision import grad_scaler
from mae.train.runs import seed_everything
from mae.train.schedule import CosineSchedule

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"),
    pytest.mark.xdist_group("distributed"),
]

WORLD = 2
HALF = 2  # images per rank and micro-batch; the single process takes 2 x HALF
STEPS = 5  # micro-batches per epoch: accum_iter 2 leaves one unfinished at the end of each epoch
ACCUM = 2
EPOCHS = 2
LR = 2e-3
TINY_ARGS = ["embed_dim=32", "depth=2", "num_heads=4", "decoder_embed_dim=16", "decoder_depth=1"]
TINY_ARGS += ["decoder_num_heads=2", "patch_size=8"]


def test_torchrun_pretrain_two_processes_rank0_writes(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD)]
    command += ["-m", "mae", "pretrain", "--data_path", str(tmp_path / "data"), "--output_dir", str(out)]
    command += ["--model", "mae_vit_base_patch16", "--input_size", "32", "--device", "cpu", "--num_workers", "0"]
    command += ["--batch_size", "2", "--accum_iter", str(ACCUM), "--epochs", "1", "--warmup_epochs", "1"]
    command += ["--model_args", *TINY_ARGS, "--log_dir", ""]  # no TensorBoard events: the folder holds the run's
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    assert "batch: 2 x accum 2 x 2 process(es) = 8" in done.stdout  # cả hai tiến trình đã vào nhóm
    assert done.stdout.count("epoch 1/1:") == 1  # chỉ rank 0 in
    assert "training time" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-0.pth", "log.txt"]  # không còn tệp tạm
    records = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert len(records) == 1 and records[0]["epoch"] == 0  # một bản ghi: chỉ rank 0 ghi log
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(out / "checkpoint-0.pth", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 0
    assert ckpt["rng"]["cpu"].shape[0] == WORLD  # trạng thái sinh số của từng rank, rank 0 gom về và lưu
    assert not torch.equal(ckpt["rng"]["cpu"][0], ckpt["rng"]["cpu"][1])  # seed + rank: mỗi rank một dãy
    # 16 ảnh / 2 tiến trình / batch 2 = 4 micro-batch mỗi rank, cộng dồn 2: 2 bước tối ưu.
    assert {int(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {2}
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())

    # Các con số log.txt ghi dưới DDP, tính lại ở đây: lr theo lịch trình, loss là trung bình loss của hai rank.
    r0, r1 = rank_average_losses(tmp_path / "data")
    assert f"(avg {r0:.4f})" in done.stdout  # rank 0 in trung bình của chính nó: phép tính lại đúng là lần chạy đó
    assert abs(r0 - r1) > 1e-3 * r0  # hai rank thấy ảnh khác nhau: trung bình không trùng với loss của một rank
    assert records[0]["train_loss"] == pytest.approx((r0 + r1) / 2, rel=1e-6)
    lr = 1e-3 * 2 * ACCUM * WORLD / 256  # blr x effective batch / 256
    steps = 16 // WORLD // 2  # batches per rank
    lrs = [lr * ((s - s % ACCUM) / steps + 0) / 1 for s in range(steps)]  # set at a step's first batch; warmup 1
    assert records[0]["train_lr"] == pytest.approx(sum(lrs) / len(lrs), rel=1e-12)


def rank_average_losses(data: Path) -> list[float]:
    """The epoch's average loss on each rank of the torchrun run above, recomputed in this process.

    Rank r seeds seed + r, takes its share of the shuffled data and builds its own model (drawing what that draws)
    before DDP gives it rank 0's weights; then each batch's crops and mask come from its generator. Every loss of
    the epoch is at the initial weights: warmup starts the lr at 0, so the first optimizer step changes nothing,
    and the second comes after the last batch.
    """
    model_kwargs = {k: int(v) for k, v in (item.split("=") for item in TINY_ARGS)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # OMP_NUM_THREADS=1, as the run
    averages, initial = [], None
    try:
        for rank in range(WORLD):
            seed_everything(0 + rank)
            dataset = build_pretrain_dataset(data, 32)
            loader = build_loader(dataset, batch_size=2, num_workers=0, pin_memory=False, rank=rank, world_size=WORLD)
            model = mae.create_model("mae_vit_base_patch16", img_size=32, norm_pix_loss=False, **model_kwargs)
            initial = initial or {k: v.clone() for k, v in model.state_dict().items()}
            model.load_state_dict(initial)
            cast(Any, loader.sampler).set_epoch(0)
            normalize = DeviceNormalize(IMAGENET_MEAN, IMAGENET_STD)  # the trainer's: the loader yields uint8
            with torch.no_grad():
                losses = [model(normalize(images), mask_ratio=0.75)[0].item() for images, _ in loader]
            averages.append(sum(losses) / len(losses))
    finally:
        torch.set_num_threads(threads)
    return averages


def train(
    data: dict[str, Tensor], rows: slice, dist_: Dist, figures: list[dict[str, float]] | None = None
) -> list[dict[str, Tensor]]:
    """EPOCHS epochs of `train_one_epoch` on the given rows of every global batch.

    Returns, for every optimizer step, the gradients it used (``grad.NAME``) and the weights after it; appends each
    epoch's figures (what `mae pretrain` writes to log.txt) to ``figures`` when given.
    """
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config()).double()
    images, noise = data["images"][:, rows], data["noise"][:, :, rows]
    # Nhiễu của từng micro-batch, theo thứ tự epoch rồi bước: cả hai cách chạy che cùng các patch.
    wrapped: nn.Module = FixedNoise(model, [noise[e, s] for e in range(EPOCHS) for s in range(STEPS)])
    if dist_.enabled:
        wrapped = DistributedDataParallel(wrapped)
    optimizer = build_adamw(model, LR, 0.05)
    snapshots: list[dict[str, Tensor]] = []
    grads: dict[str, Tensor] = {}

    def before(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads.clear()
        grads.update({f"grad.{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    def after(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        snapshots.append({**grads, **{k: v.detach().clone() for k, v in model.state_dict().items()}})

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
    loader = [(images[s], torch.zeros(len(images[s]), dtype=torch.long)) for s in range(STEPS)]
    schedule = CosineSchedule(LR, 1e-4, 1, EPOCHS)
    scaler = grad_scaler(torch.device("cpu"), torch.float32)
    for epoch in range(EPOCHS):
        stats = train_one_epoch(
            wrapped, loader, optimizer, scaler, schedule, epoch, steps=STEPS, accum_iter=ACCUM, dist=dist_
        )
        if figures is not None:
            figures.append(stats)
    return snapshots


def worker(rank: int, port: int, folder: str) -> None:
    with gloo_group(rank, port, WORLD):
        data = torch.load(Path(folder) / "data.pt", weights_only=True)
        rows = slice(rank * HALF, (rank + 1) * HALF)
        figures: list[dict[str, float]] = []
        snapshots = train(data, rows, Dist(rank=rank, world_size=WORLD), figures)
        torch.save(snapshots, Path(folder) / f"rank{rank}.pt")
        torch.save(figures, Path(folder) / f"figures{rank}.pt")


def assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6, msg=lambda message: f"{what}: {message}")


def test_ddp_steps_equal_across_ranks_and_single_process(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    data = {
        "images": torch.randn(STEPS, WORLD * HALF, 3, 32, 32, generator=g, dtype=torch.float64),
        "noise": torch.rand(EPOCHS, STEPS, WORLD * HALF, small_config().num_patches, generator=g),
    }
    torch.save(data, tmp_path / "data.pt")
    spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)  # type: ignore[no-untyped-call]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    single_figures: list[dict[str, float]] = []
    single = train(data, slice(None), Dist(), single_figures)

    assert len(single) == len(ranks[0]) == len(ranks[1]) == EPOCHS * (STEPS // ACCUM)
    for i, expected in enumerate(single):
        assert list(ranks[0][i]) == list(expected)
        for key, value in expected.items():
            assert torch.equal(ranks[0][i][key], ranks[1][i][key]), f"ranks differ at step {i}: {key}"
            assert_close(ranks[0][i][key], value, f"{key} at optimizer step {i}")
    # Phép so sánh có nghĩa: các bước sau khởi động làm trọng số đổi hơn 10 lần dung sai.
    moved = max((single[-1][k] - single[0][k]).abs().max().item() for k in single[0])
    assert moved > 1e-5
    # Các con số của log.txt: loss trung bình qua các rank bằng loss của một tiến trình trên cả batch (hai nửa bằng
    # nhau, cùng số patch bị che mỗi ảnh), lr bằng hệt; mỗi rank ghi cùng một con số.
    ranks_figures = [torch.load(tmp_path / f"figures{r}.pt", weights_only=True) for r in range(WORLD)]
    assert len(single_figures) == EPOCHS
    for epoch, expected in enumerate(single_figures):
        for figures in ranks_figures:
            assert figures[epoch]["lr"] == expected["lr"], f"lr of epoch {epoch}"
            assert figures[epoch]["loss"] == pytest.approx(expected["loss"], rel=1e-9), f"loss of epoch {epoch}"
        assert ranks_figures[0][epoch]["loss"] == ranks_figures[1][epoch]["loss"]
