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

float16 (an enabled scaler): a step whose gradients hold inf or NaN is skipped by ``scaler.step`` and the
scale lowered by ``scaler.update``; such a step is counted as skipped when the scale went down (torch's own
idiom: ``get_scale()`` before and after ``update``), never treated as a non-finite loss, and the lr
schedule goes on as in the official engine (set per iteration whatever the scaler did). The epoch's
figures then include ``skipped_steps`` and ``loss_scale`` (the scale at the epoch's end).
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

from ..errors import UserError
from .distributed import Dist
from .log_sinks import LogSinks, StepFigures
from .metrics import Average, Progress
from .position import EpochStart, StepBoundary
from .run_checkpoint import local_rng_state, set_local_rng
from .schedule import CosineSchedule

BatchLoss = Callable[[Tensor, Tensor], Tensor]  # (images, labels) on the device -> the batch's mean loss
ToModel = Callable[[Tensor], Tensor]  # the loader's batch on the device -> the model's float32 input (`normalize`)


class NonFiniteLossError(UserError, RuntimeError):
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
    sinks: LogSinks | None = None,
    start: EpochStart | None = None,
    at_boundary: Callable[[StepBoundary], None] | None = None,
    normalize: ToModel | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader`` (``steps`` batches); ``batch_loss`` runs ``model`` on a batch.
    ``normalize`` turns each batch, once on the device, into the model's input (`normalize.DeviceNormalize`:
    the loader yields stored integers); None: the loader's batches are the model's input already.
    ``sinks`` receives every iteration's figures (`log_sinks`: the lines off a terminal, TensorBoard).
    ``start`` continues an interrupted epoch (`position`); ``at_boundary`` is called after every optimizer
    step with where the epoch stands (`preemption` saves a mid-epoch checkpoint there, or stops the run).

    Returns the epoch's averages: ``lr`` (the largest group's), ``loss`` (over all processes) and
    ``images_per_s``; with an enabled ``scaler`` (float16) also ``skipped_steps`` (optimizer steps of the
    epoch skipped for inf/NaN gradients, an int; kept across a mid-epoch resume) and ``loss_scale`` (the
    scale at the epoch's end). Raises ``NonFiniteLossError`` naming the step where the loss is NaN or
    infinite on any process.
    """
    dist = dist or Dist()
    device = dist.device
    model.train(True)
    optimizer.zero_grad()
    loss_avg, lr_avg = Average(), Average()
    scaled = scaler.is_enabled()  # float16: loss scaling, and steps the scaler may skip
    skipped = 0
    ddp = getattr(model, "_orig_mod", model)  # under torch.compile, the DDP module inside
    if start is not None:
        set_local_rng(start.epoch_rng, dist.rank, device)  # the generators as the interrupted epoch began
    epoch_rng = local_rng_state(device)  # kept for a mid-epoch checkpoint: the iterator below draws from it
    batches = iter(loader)
    first = 0
    if start is not None:
        # Tiếp tục epoch bị ngắt: nạp (không tính) các batch đã học, để các worker rút ảnh cắt theo đúng thứ tự,
        # rồi đặt lại bộ sinh ngẫu nhiên như lúc bị ngắt: mặt nạ và ảnh cắt sau đó giống hệt lần chạy liền mạch.
        for _ in range(start.step):
            next(batches)
        set_local_rng(start.step_rng, dist.rank, device)
        first = start.step
        loss_avg.total, loss_avg.count, lr_avg.total, lr_avg.count, skipped = start.averages
    loss_scale = scaler.get_scale() if scaled else 1.0
    bar = Progress(batches, steps, f"epoch {epoch}", enabled=progress and dist.is_main, initial=first)
    started, images = time.perf_counter(), 0
    for step, (samples, targets) in enumerate(bar, start=first):
        # Learning rate theo từng iteration (không theo epoch), tại epoch phân số.
        if step % accum_iter == 0:
            schedule.apply(optimizer, step / steps + epoch)
        samples = samples.to(device, non_blocking=True)
        if normalize is not None:
            samples = normalize(samples)  # ToTensor + Normalize trên thiết bị: qua PCIe chỉ là uint8
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
            scaler.step(optimizer)  # float16: bỏ qua bước nếu gradient (đã bỏ scale) có inf/NaN
            scaler.update()
            if scaled:
                # Scale giảm sau update() nghĩa là bước vừa rồi bị bỏ qua (cách của torch), không phải loss NaN.
                before, loss_scale = loss_scale, scaler.get_scale()
                if loss_scale < before:
                    skipped += 1
            optimizer.zero_grad()
        loss_avg.update(loss_value)
        lr = max(group["lr"] for group in optimizer.param_groups)
        lr_avg.update(lr)
        images += samples.shape[0] * dist.world_size
        rate = images / (time.perf_counter() - started)
        bar.show(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}", **scale_shown(scaled, loss_scale))
        if sinks is not None:  # the lines off a terminal, TensorBoard (`log_sinks`)
            figures = StepFigures(
                epoch=epoch, step=step, steps=steps, loss=loss_value, loss_avg=loss_avg.value, loss_mean=checked,
                lr=lr, images_per_s=rate, elapsed=time.perf_counter() - started, update=update,
                loss_scale=loss_scale if scaled else None,
            )  # fmt: skip
            sinks.step(figures, bar_shown=bar.shown)
        if update and at_boundary is not None:
            totals = (loss_avg.total, loss_avg.count, lr_avg.total, lr_avg.count, skipped)
            at_boundary(StepBoundary(epoch, step + 1, epoch_rng, totals))
    bar.close()
    stats: dict[str, float] = {
        "lr": lr_avg.value,
        "loss": dist.mean(loss_avg.value),
        "images_per_s": images / (time.perf_counter() - started),
    }
    if scaled:  # float16 only: absent from the log of float32 and bfloat16 runs
        stats |= {"skipped_steps": skipped, "loss_scale": loss_scale}
    return stats


def scale_shown(scaled: bool, loss_scale: float) -> dict[str, str]:
    """The progress bar's ``scale`` (float16 only)."""
    return {"scale": f"{loss_scale:g}"} if scaled else {}
