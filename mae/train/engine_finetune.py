"""One epoch of fine-tuning or linear probing, and the evaluation: the official ``engine_finetune``.

Training is the shared loop (`engine.train_one_epoch`: per-iteration learning rate on every group's
``lr_scale``, accumulation, scaled steps) with a classification loss: the batch is mixed by ``mixup_fn``
when given (timm's ``Mixup``, which turns the labels into soft targets), then ``criterion(model(images),
labels)`` runs under the run's precision.

Evaluation gives top-1 and top-5 accuracy in percent and the cross-entropy, over every image once (also
across processes). Departure: the loss is the mean over images; the official one is the mean of the
batches' means (the same when the batch size divides the data).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import engine
from .distributed import Dist
from .log_sinks import LogSinks
from .metrics import Progress
from .position import EpochStart, StepBoundary
from .schedule import CosineSchedule

Autocast = Callable[[], AbstractContextManager[object]]


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    schedule: CosineSchedule,
    epoch: int,
    *,
    steps: int,
    accum_iter: int = 1,
    mixup_fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    autocast: Autocast = contextlib.nullcontext,
    clip_grad: float | None = None,
    dist: Dist | None = None,
    progress: bool = False,
    sinks: LogSinks | None = None,
    start: EpochStart | None = None,
    at_boundary: Callable[[StepBoundary], None] | None = None,
    normalize: engine.ToModel | None = None,
) -> dict[str, float]:
    """Train the classifier ``model`` (or a DDP wrapper of it) for one pass over ``loader``.

    Returns ``{"lr", "loss", "images_per_s"}`` averaged over the epoch (``lr``: the largest group's, as
    the official log). ``normalize`` (see `engine.train_one_epoch`) runs before ``mixup_fn``, as the official
    normalisation (in the loader) does. Raises ``engine.NonFiniteLossError`` naming the step of a NaN or infinite loss.
    """

    def batch_loss(samples: Tensor, targets: Tensor) -> Tensor:
        if mixup_fn is not None:
            # Mixup/CutMix: trộn cặp ảnh trong batch, nhãn thành nhãn mềm theo cùng tỉ lệ.
            samples, targets = mixup_fn(samples, targets)
        with autocast():
            return criterion(model(samples), targets)

    return engine.train_one_epoch(
        model, loader, optimizer, scaler, schedule, epoch, batch_loss,
        steps=steps, accum_iter=accum_iter, clip_grad=clip_grad, dist=dist, progress=progress, sinks=sinks,
        start=start, at_boundary=at_boundary, normalize=normalize,
    )  # fmt: skip


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    shared: bool,
    dist: Dist | None = None,
    autocast: Autocast = contextlib.nullcontext,
    progress: bool = False,
    steps: int | None = None,
    normalize: engine.ToModel | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy of ``model`` on ``loader``'s images.

    ``shared``: each process's ``loader`` holds its own share of the images (``--dist_eval``,
    `data.build_eval_loader`): the counts are summed over the processes. Otherwise every process evaluates
    every image and keeps its own counts (summing them would count each image once per process). Either
    way the figures are those of one process on all the images. ``normalize`` turns each batch on the device
    into the model's input (see `engine.train_one_epoch`). Returns ``{"acc1", "acc5", "loss",
    "images", "images_per_s"}``.
    """
    dist = dist or Dist()
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    count = 0
    started = time.perf_counter()
    bar = Progress(loader, steps or 0, "evaluate", enabled=progress and dist.is_main and steps is not None)
    for images, target in bar:
        images = images.to(dist.device, non_blocking=True)
        if normalize is not None:
            images = normalize(images)  # ToTensor + Normalize trên thiết bị
        target = target.to(dist.device, non_blocking=True)
        with autocast():
            output = model(images)
        output = output.float()
        loss_sum += float(F.cross_entropy(output, target, reduction="sum"))
        # Top-k: nhãn đúng nằm trong k lớp có điểm cao nhất (k = 5, hoặc số lớp nếu ít hơn).
        k = min(5, output.shape[1])
        top = output.topk(k, dim=1, largest=True, sorted=True).indices
        hits = top.eq(target.unsqueeze(1))
        correct1 += float(hits[:, :1].sum())
        correct5 += float(hits.sum())
        count += images.shape[0]
    bar.close()
    totals = [correct1, correct5, loss_sum, float(count)]
    # Chỉ cộng qua các tiến trình khi mỗi tiến trình giữ một phần ảnh riêng; nếu không, mỗi ảnh bị đếm N lần.
    correct1, correct5, loss_sum, total = dist.sum(totals) if shared else totals
    if total == 0:
        raise ValueError("evaluation got no images")
    return {
        "acc1": 100.0 * correct1 / total,
        "acc5": 100.0 * correct5 / total,
        "loss": loss_sum / total,
        "images": total,
        "images_per_s": total / (time.perf_counter() - started),
    }
