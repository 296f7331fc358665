"""The training loop every recipe shares: one epoch of per-iteration learning rates, gradient
accumulation and (scaled) optimizer steps — the loop of the official ``engine_pretrain`` and
``engine_finetune``, which differ only in the loss of a batch.

For every batch: set the learning rate at the fractional epoch (at accumulation boundaries), compute the
batch's loss, stop on a non-finite loss before it touches the weights, divide the loss by ``accum_iter``
and back-propagate; every ``accum_iter`` batches, step the optimizer (through the gradient scaler, after
clipping when ``clip_grad`` is set) and clear the gradients. Batches after the last full accumulation
of an epoch complete no step (their gradients are dropped, as in the official engines). Under DDP the
gradients are all-reduced once per optimizer step (``no_sync`` on the other micro-batches), not once per
batch as in the official engines.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .distributed import Dist
from .metrics import Average, Progress
from .schedule import CosineSchedule

BatchLoss = Callable[[Tensor, Tensor], Tensor]  # (images, labels) on the device -> the batch's mean loss


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step. No update was made from it."""


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    schedule: CosineSchedule,
    epoch: int,
    batch_loss: BatchLoss,
    *,
    steps: int,
    accum_iter: int = 1,
    clip_grad: float | None = None,
    dist: Dist | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Train for one pass over ``loader`` (``steps`` batches); ``batch_loss`` runs ``model`` on a batch.

    Returns the epoch's averages: ``lr`` (the largest group's), ``loss`` (over all processes) and
    ``images_per_s``. Raises ``NonFiniteLossError`` naming the step where the loss is NaN or infinite on
    any process.
    """
    dist = dist or Dist()
    device = dist.device
    model.train(True)
    optimizer.zero_grad()
    loss_avg, lr_avg = Average(), Average()
    ddp = getattr(model, "_orig_mod", model)  # under torch.compile, the DDP module inside
    bar = Progress(loader, steps, f"epoch {epoch}", enabled=progress and dist.is_main)
    started, images = time.perf_counter(), 0
    for step, (samples, targets) in enumerate(bar):
        # Learning rate theo từng iteration (không theo epoch), tại epoch phân số.
        if step % accum_iter == 0:
            schedule.apply(optimizer, step / steps + epoch)
        samples = samples.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        update = (step + 1) % accum_iter == 0
        # Khi cộng dồn gradient với DDP: chỉ đồng bộ gradient ở micro-batch cuối của mỗi bước.
        sync = update or not isinstance(ddp, DistributedDataParallel)
        with contextlib.nullcontext() if sync else cast(DistributedDataParallel, ddp).no_sync():
            loss = batch_loss(samples, targets)
            loss_value = loss.item()
            checked = dist.mean(loss_value)  # mọi tiến trình cùng dừng nếu một tiến trình gặp NaN
            if not math.isfinite(checked):
                raise NonFiniteLossError(
                    f"the loss is {loss_value if not math.isfinite(loss_value) else checked} at epoch {epoch}, "
                    f"iteration {step} of {steps} (optimizer step {(epoch * steps + step) // accum_iter}); "
                    "training stopped before this batch changed any weight"
                )
            # Chia loss cho accum_iter trước backward: tổng gradient qua các micro-batch là gradient trung bình.
            scaler.scale(loss / accum_iter).backward()  # type: ignore[no-untyped-call]
        if update:
            if clip_grad is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        loss_avg.update(loss_value)
        lr = max(group["lr"] for group in optimizer.param_groups)
        lr_avg.update(lr)
        images += samples.shape[0] * dist.world_size
        rate = images / (time.perf_counter() - started)
        bar.show(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
    bar.close()
    return {
        "lr": lr_avg.value,
        "loss": dist.mean(loss_avg.value),
        "images_per_s": images / (time.perf_counter() - started),
    }
