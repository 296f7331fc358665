"""Where a run stands inside an epoch: what a mid-epoch checkpoint keeps so that the epoch continues exactly.

An epoch's random numbers are drawn in two places: the loader draws its seed from the process's torch
generator when the epoch's iterator is made (each worker then seeds its crops from it, and draws them batch
after batch), and the main process draws the masks (and, fine-tuning, Mixup's and, without workers, the
crops) as it goes. So an interrupted epoch is continued by setting the generators to their state at the
epoch's start, making the iterator (the same seed, the same workers' draws), letting it load the batches
already done without computing them, then setting the generators to their state at the interruption.
With the running averages of the epoch's loss and lr (and the count of its skipped float16 steps), the epoch
then ends as the uninterrupted one did, bit for bit, at any ``--num_workers``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepBoundary:
    """This process at an optimizer-step boundary: ``step`` batches of ``epoch`` done."""

    epoch: int
    step: int
    epoch_rng: dict[str, torch.Tensor]  # this process's generators as the epoch's iterator was made
    # The epoch's running loss total and count, lr total and count, and optimizer steps the float16 scaler skipped.
    averages: tuple[float, int, float, int, int]


@dataclass(frozen=True)
class EpochStart:
    """Where an interrupted epoch continues (from a mid-epoch checkpoint), for this process."""

    step: int  # batches of the epoch already done (a multiple of accum_iter)
    epoch_rng: dict[str, torch.Tensor]  # stacked by rank (`run_checkpoint.gather_rng`)
    step_rng: dict[str, torch.Tensor]  # the same, at the interruption
    averages: tuple[float, int, float, int, int]  # this process's running averages at the interruption
