"""Where a run's per-iteration figures go: a line every ``--print_freq`` iterations when the output is not a
terminal, and TensorBoard scalars under ``--log_dir``. Rank 0 only.

Lines. On a terminal the progress bar (`metrics.Progress`) shows the figures and no line is printed. Off a
terminal (SLURM, nohup, ``> file``) one flushed line is printed at iterations 0, ``print_freq``,
``2 * print_freq``, ... and the last of each epoch (the official ``MetricLogger.log_every`` rule)::

    Epoch: [0]  [20/99]  eta 0:01:23  loss 0.8123 (avg 0.8410)  lr 1.200e-04  156.2 images/s  max mem 3120 MB (CUDA)

the epoch as in ``log.txt`` and the checkpoint names (from 0), the iteration of the epoch, the epoch's remaining
time, the batch's loss and this process's average over the epoch so far (on the last line, with one process,
the epoch's ``train_loss``), the largest group's lr, in float16 the loss scale (``loss scale 65536``, after
the batch), images per second over all processes, and the peak memory: ``torch.cuda.max_memory_allocated`` on
CUDA ("(CUDA)"), the process's peak resident set from ``getrusage`` on the CPU ("(CPU peak RSS)").

TensorBoard. The official tags and x-axis: at every optimizer step (``(step + 1) % accum_iter == 0``), at
``int((step / steps + epoch) * 1000)`` ("epoch_1000x"), the loss averaged over the processes under
``train_loss`` (pre-training) or ``loss`` (fine-tuning, linear probing) and the lr under ``lr``; after each
fine-tuning evaluation ``perf/test_acc1``, ``perf/test_acc5`` and ``perf/test_loss`` at ``epoch``. They are
written by ``torch.utils.tensorboard.SummaryWriter`` when the ``tensorboard`` package is installed (``pip install
tensorboard``); without it the run says so in one line before training and trains without events.

Where the events go (`events_dir`): ``--log_dir`` when it is given; when it is left at the official default
``./output_dir`` (which is also the default ``--output_dir``), the run's ``--output_dir``, so a run with the
default flags writes where the official one does, beside its checkpoints, and a run with ``--output_dir ''``
(nothing saved) makes no folder at all; ``--log_dir ''`` writes no events. Departure: the official script writes
to ``./output_dir`` whatever ``--output_dir`` says (and an explicit ``--log_dir ./output_dir`` reads here as the
default). The folder is made when training starts (once the set-up has checked the data); the events are flushed
after every epoch and evaluation, and the writer is closed when the run ends, also on an error.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch

OFFICIAL_LOG_DIR = "./output_dir"  # the official default of --log_dir (and of --output_dir)
MB = 1024.0 * 1024.0


def events_dir(log_dir: str, output_dir: str) -> str | None:
    """The folder of the TensorBoard events for ``--log_dir`` and ``--output_dir``; None for no events."""
    if log_dir == OFFICIAL_LOG_DIR:
        return output_dir or None
    return log_dir or None


def epoch_1000x(epoch: int, step: int, steps: int) -> int:
    """The official x-axis of the per-iteration scalars: the fractional epoch times 1000."""
    # Trục x là epoch x 1000 (như bản gốc): các đường cong với batch size khác nhau vẫn thẳng hàng theo epoch.
    return int((step / steps + epoch) * 1000)


@dataclass(frozen=True)
class StepFigures:
    """What one iteration of `engine.train_one_epoch` knows once its batch is done."""

    epoch: int
    step: int  # the batch's index in the epoch, from 0
    steps: int  # batches in the epoch
    loss: float  # this process's loss of the batch
    loss_avg: float  # this process's average loss over the epoch's batches so far
    loss_mean: float  # the batch's loss averaged over the processes (the official all_reduce_mean)
    lr: float  # the largest group's lr
    images_per_s: float  # over all processes, since the epoch started
    elapsed: float  # seconds since the epoch started (or continued, when it continues part-way)
    update: bool  # an optimizer step was taken at this batch
    loss_scale: float | None = None  # float16's loss scale after the batch (None: no scaler, float32/bfloat16)


def peak_memory(device: torch.device) -> str:
    """``max mem N MB (CUDA)`` on CUDA, ``max mem N MB (CPU peak RSS)`` elsewhere; "" where neither is known."""
    if device.type == "cuda":
        return f"max mem {torch.cuda.max_memory_allocated(device) / MB:.0f} MB (CUDA)"
    try:
        import resource
    except ImportError:  # Windows
        return ""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return f"max mem {peak * (1 if sys.platform == 'darwin' else 1024) / MB:.0f} MB (CPU peak RSS)"


def iteration_line(figures: StepFigures, device: torch.device, first_step: int = 0) -> str:
    """The line of one iteration (see the module's docstring); ``first_step``: where the epoch's timing began
    (above 0 in an epoch continued part-way)."""
    f = figures
    eta = f.elapsed / (f.step - first_step + 1) * (f.steps - f.step - 1)
    parts = [
        f"Epoch: [{f.epoch}]",
        f"[{f.step:>{len(str(f.steps))}}/{f.steps}]",
        f"eta {datetime.timedelta(seconds=int(eta))}",
        f"loss {f.loss:.4f} (avg {f.loss_avg:.4f})",
        f"lr {f.lr:.3e}",
        "" if f.loss_scale is None else f"loss scale {f.loss_scale:g}",  # float16 only
        f"{f.images_per_s:.1f} images/s",
        peak_memory(device),
    ]
    return "  ".join(part for part in parts if part)


class LogSinks:
    """The per-iteration figures of a run, to the lines and TensorBoard (rank 0 only).

    ``start()`` before the first epoch opens the writer (or says that tensorboard is missing); ``step()`` takes
    each iteration's figures, ``evaluation()`` an evaluation's. Use it as a context manager: the writer is
    closed at the end, also on an error.
    """

    def __init__(
        self, *, print_freq: int, log_dir: str | None, is_main: bool, device: torch.device, loss_tag: str
    ) -> None:
        if print_freq < 1:
            raise ValueError(f"print_freq must be >= 1; got {print_freq}")
        self.print_freq = print_freq
        self.log_dir = log_dir if is_main else None
        self.is_main = is_main
        self.device = device
        self.loss_tag = loss_tag  # "train_loss" (main_pretrain) or "loss" (main_finetune, main_linprobe)
        self._writer: Any = None  # a SummaryWriter once started, when tensorboard is installed
        self._started = False
        self._first: tuple[int, int] = (-1, 0)  # (epoch, its first step seen here), for the ETA

    def start(self) -> None:
        """Open the TensorBoard writer under ``log_dir`` (making the folder), or say why not; once."""
        if self._started:
            return
        self._started = True
        if self.log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print(
                f"tensorboard: not installed, so no events are written to {self.log_dir} "
                "(pip install tensorboard to write them)",
                flush=True,
            )
            return
        self._writer = SummaryWriter(log_dir=self.log_dir)
        print(f"tensorboard: events in {self.log_dir}", flush=True)

    def step(self, figures: StepFigures, *, bar_shown: bool) -> None:
        """One iteration: its line when due (unless the bar shows it), its scalars at an optimizer step."""
        self.start()
        f = figures
        if self._first[0] != f.epoch:
            self._first = (f.epoch, f.step)
        if self.is_main and not bar_shown and (f.step % self.print_freq == 0 or f.step == f.steps - 1):
            print(iteration_line(f, self.device, first_step=self._first[1]), flush=True)
        if self._writer is None:
            return
        if f.update:
            x = epoch_1000x(f.epoch, f.step, f.steps)
            self._writer.add_scalar(self.loss_tag, f.loss_mean, x)
            self._writer.add_scalar("lr", f.lr, x)
        if f.step == f.steps - 1:
            self._writer.flush()

    def evaluation(self, epoch: int, stats: Mapping[str, float]) -> None:
        """An evaluation's ``acc1``, ``acc5`` and ``loss`` under ``perf/test_*`` at ``epoch`` (main_finetune)."""
        if self._writer is None:
            return
        for name in ("acc1", "acc5", "loss"):
            self._writer.add_scalar(f"perf/test_{name}", stats[name], epoch)
        self._writer.flush()

    def close(self) -> None:
        """Write what is pending and close the writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> LogSinks:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
