"""The learning-rate schedule of the official recipe: linear warmup, then half-cycle cosine.

It is evaluated per iteration at the *fractional* epoch ``t = epoch + step / steps_per_epoch`` (not once
per epoch), and set at accumulation boundaries only. The arithmetic is written in the official order,
so the same ``t`` gives the same float, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer


def base_learning_rate(blr: float, effective_batch: int) -> float:
    """The linear scaling rule (Goyal et al., 2017): ``lr = blr * effective batch / 256``."""
    # Quy tắc tỉ lệ tuyến tính: batch hiệu dụng gấp đôi thì learning rate gấp đôi.
    return blr * effective_batch / 256


@dataclass(frozen=True)
class CosineSchedule:
    """``lr(t)`` for a fractional epoch ``t`` in ``[0, epochs)``."""

    lr: float  # the peak (absolute) learning rate, reached at the end of warmup
    min_lr: float  # where the cosine ends, at t = epochs
    warmup_epochs: float
    epochs: int

    def __call__(self, t: float) -> float:
        if t < self.warmup_epochs:
            # Khởi động tuyến tính từ 0: tránh các bước cập nhật quá lớn khi trọng số còn ngẫu nhiên.
            return self.lr * t / self.warmup_epochs
        # Nửa chu kỳ cosin từ lr xuống min_lr trong các epoch còn lại.
        progress = math.pi * (t - self.warmup_epochs) / (self.epochs - self.warmup_epochs)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(progress))

    def apply(self, optimizer: Optimizer, t: float) -> float:
        """Set every group's lr to ``lr(t)``, times the group's ``lr_scale`` where it has one; returns lr(t)."""
        lr = self(t)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
        return lr
