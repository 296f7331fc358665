"""One epoch of MAE pre-training: the official ``engine_pretrain.train_one_epoch``, step for step.

The loop (per-iteration learning rate, accumulation, scaled steps, the stop on a non-finite loss) is
`engine.train_one_epoch`; a batch's loss is the MAE's reconstruction loss on the masked patches, the
labels unused.

Random numbers are drawn where the official engine draws them (the loader's seed per epoch, the crops
per image, one ``torch.rand(N, L)`` per batch for the mask), so with the same seed and data the
weights after an epoch are the official ones, bit for bit (float32, CPU, ``tests/test_official_train.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from . import engine
from .distributed import Dist
from .engine import NonFiniteLossError
from .log_sinks import LogSinks
from .position import EpochStart, StepBoundary
from .schedule import CosineSchedule

__all__ = ["NonFiniteLossError", "train_one_epoch"]


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    schedule: CosineSchedule,
    epoch: int,
    *,
    steps: int,
    accum_iter: int = 1,
    mask_ratio: float = 0.75,
    autocast: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    clip_grad: float | None = None,
    dist: Dist | None = None,
    progress: bool = False,
    sinks: LogSinks | None = None,
    start: EpochStart | None = None,
    at_boundary: Callable[[StepBoundary], None] | None = None,
    normalize: engine.ToModel | None = None,
) -> dict[str, float]:
    """Train ``model`` (an MAE, or one wrapped in DDP) for one pass over ``loader`` of ``steps`` batches.

    Returns the epoch's averages, ``{"lr": ..., "loss": ..., "images_per_s": ...}`` (the loss over all
    processes); ``normalize``: see `engine.train_one_epoch`. Raises ``NonFiniteLossError`` naming the step
    where the loss is NaN or infinite on any process.
    """

    def batch_loss(samples: Tensor, _labels: Tensor) -> Tensor:
        with autocast():
            loss, _, _ = model(samples, mask_ratio=mask_ratio)
        return loss

    return engine.train_one_epoch(
        model, loader, optimizer, scaler, schedule, epoch, batch_loss,
        steps=steps, accum_iter=accum_iter, clip_grad=clip_grad, dist=dist, progress=progress, sinks=sinks,
        start=start, at_boundary=at_boundary, normalize=normalize,
    )  # fmt: skip
