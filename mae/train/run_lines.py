"""What a trainer says before its first epoch, made from the few values each line is about.

``mae pretrain`` and ``mae finetune`` / ``linprobe`` print the same kinds of set-up lines (the model, the
batch and learning rate, the device and precision, notes on the epoch's shape); each line is a function of
typed values here, so the trainers only wire them and the wording stays one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .fast_path import FastPath


def effective_batch(batch_size: int, accum_iter: int, world_size: int) -> int:
    """Images per optimizer step over all processes (the official ``eff_batch_size``)."""
    return batch_size * accum_iter * world_size


def trained_parameter_count(model: nn.Module) -> int:
    """The number of parameters that require gradients (the official log's ``n_parameters``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trained_parameters(model: nn.Module) -> str:
    """``"86.2M"``, or the exact count below a million: `trained_parameter_count`, for the model line."""
    n = trained_parameter_count(model)
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def model_line(name: str, model: nn.Module, img_size: int, patch_size: int, details: str) -> str:
    """``model: NAME (SIZE trained parameters), IMGpx, patch P, DETAILS``."""
    size = trained_parameters(model)
    return f"model: {name} ({size} trained parameters), {img_size}px, patch {patch_size}, {details}"


def batch_line(
    batch_size: int, accum_iter: int, world_size: int, lr: float, warmup_epochs: int, epochs: int, extra: str = ""
) -> str:
    """The batch, its effective size, the learning rate with the base rate it is, and the warmup."""
    eff = effective_batch(batch_size, accum_iter, world_size)
    return (
        f"batch: {batch_size} x accum {accum_iter} x {world_size} process(es) = {eff}; "
        f"lr {lr:.2e} (blr {lr * 256 / eff:.2e}), warmup {warmup_epochs} of {epochs} epochs{extra}"
    )


def device_line(
    device: torch.device,
    dtype: torch.dtype,
    *,
    compiled: bool,
    grad_checkpointing: bool,
    fast: FastPath,
    output: Path | None,
) -> str:
    """The device and precision, what runs differently from the default path, and where checkpoints go."""
    return (
        f"device: {device}, {str(dtype).removeprefix('torch.')}"
        f"{', compiled' if compiled else ''}{', gradient checkpointing' if grad_checkpointing else ''}"
        f"{fast.describe()}; output: {output or 'none (no saving)'}"
    )


def epoch_notes(steps: int, accum_iter: int, warmup_epochs: int, epochs: int) -> list[str]:
    """Notes on the epoch's shape a user may not expect: batches that complete no step, a warmup-only run."""
    notes = []
    if steps % accum_iter:
        notes.append(
            f"note: {steps % accum_iter} batch(es) at the end of each epoch complete no optimizer step "
            "(their gradients are dropped, as in the official engine)"
        )
    if warmup_epochs >= epochs:
        notes.append(f"note: --warmup_epochs {warmup_epochs} >= --epochs {epochs}: the lr only warms up")
    return notes


def nothing_to_train(start_epoch: int, epochs: int) -> str | None:
    """The line for a run that starts at or past its last epoch (None when there is an epoch to train)."""
    if start_epoch < epochs:
        return None
    return f"nothing to train: epoch {start_epoch} is past --epochs {epochs}; raise --epochs to go on"
