"""Preemption: a mid-epoch checkpoint every few minutes, and on the signal a scheduler sends before it kills a job.

A scheduler (SLURM, Kubernetes, a spot market) preempts a job by sending SIGTERM (SLURM: also SIGUSR1 with
``--signal=USR1@SECONDS``) and killing it a grace period later. Epoch-end checkpoints every ``--save_every``
epochs can then lose hours; so, while a run trains:

- ``--save_every_minutes M`` writes ``OUTPUT/checkpoint-midepoch.pth`` at most every M minutes, at an
  optimizer-step boundary (no gradient is half accumulated), replacing the previous one;
- SIGTERM or SIGUSR1 writes it at the next step boundary, and the command exits with status
  ``EXIT_PREEMPTED`` (75, ``EX_TEMPFAIL``: "try again later"), which a job script requeues on. A second
  signal of the same kind stops the process at once (the signal's default action).

Under several processes the ranks agree at every step boundary (one all-reduce of two flags: any rank's
signal or due timer decides for all), so they all save at the same step and all leave together. The file
is a checkpoint in the official layout (its ``epoch`` is the last *complete* epoch) plus a ``position``:
the epoch it interrupted, the batches of it done, the random-generator states of every rank at that
epoch's start and at that step, and the epoch's running averages; `engine.train_one_epoch` continues
from there with the same batches, crops and masks as the uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import torch
import torch.distributed

from .distributed import Dist

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: a temporary failure; the same command, run again, continues
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """A signal asked the run to stop at an optimizer-step boundary (``where``), after the mid-epoch checkpoint."""

    def __init__(self, signal_name: str, where: str) -> None:
        super().__init__(f"stopped by {signal_name} {where}")
        self.signal_name = signal_name
        self.where = where


class Preemption:
    """The decision at each optimizer-step boundary: save a mid-epoch checkpoint, and stop after it?

    Use as a context manager around training: it installs the SIGTERM/SIGUSR1 handlers (main thread only) and
    restores the previous ones on exit. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        dist: Dist,
        every_minutes: float | None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.dist = dist
        self.every_s = None if every_minutes is None else every_minutes * 60.0
        self.clock = clock if clock is not None else lambda: time.monotonic()
        self.last_save = self.clock()
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    # --- signals ----------------------------------------------------------------------------------------

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:  # the second time: the signal's own action, at once
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signal_name = signal.Signals(signum).name  # chỉ ghi nhận; lưu ở ranh giới bước tối ưu kế tiếp

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)  # type: ignore[arg-type]
        self._previous.clear()

    # --- the decision -----------------------------------------------------------------------------------

    def decide(self) -> tuple[bool, bool]:
        """(save, stop) at this step boundary, the same on every rank."""
        stop = self.signal_name is not None
        due = self.every_s is not None and self.clock() - self.last_save >= self.every_s
        if self.dist.enabled:
            # Mọi tiến trình cùng quyết định: một tiến trình nhận tín hiệu hay tới hạn thì tất cả cùng lưu.
            flags = torch.tensor([float(stop), float(due)], device=self.dist.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            stop, due = bool(flags[0].item()), bool(flags[1].item())
            if stop and self.signal_name is None:
                self.signal_name = "a signal to another process"
        return stop or due, stop

    def saved(self) -> None:
        """A mid-epoch checkpoint was written: the next one is due ``every_minutes`` from now."""
        self.last_save = self.clock()
