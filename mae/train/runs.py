"""What every training command does around its loop: join the processes, seed, guard the output folder,
save and resume checkpoints, and speak (rank 0 only).

- a fresh run refuses a folder that already holds ``checkpoint-N.pth`` (``--overwrite`` clears the earlier
  run's files first, once the data is known to be usable; ``--auto_resume`` continues it, `auto_resume`);
- a start removes the temporary files of saves that were killed mid-write, and says so;
- Ctrl-C ends the command with exit status 130 and names the checkpoint to continue from; a signal from a
  scheduler (`preemption`) with 75, after a mid-epoch checkpoint (`save_mid_epoch`, `interrupted_epoch`);
- a checkpoint is ``{"model", "optimizer", "epoch", "scaler", "args", "rng"}`` (`run_checkpoint`),
  written by rank 0 after every rank has given its random-generator state.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import report
from . import distributed, metrics
from .position import EpochStart, StepBoundary
from .precision import scaler_state
from .preemption import EXIT_PREEMPTED, Preempted, Preemption
from .run_checkpoint import (
    MID_EPOCH_NAME,
    checkpoint_path,
    checkpoints_in,
    gather_rng,
    latest_checkpoint,
    plain_args,
    read_run_checkpoint,
    remove_stale_temporaries,
    restore_rng,
    rng_state,
    save_atomic,
    superseded_mid_epoch,
)


def run_command(name: str, args: argparse.Namespace, train: Callable[[distributed.Dist], None]) -> int:
    """Join the processes (under torchrun or srun), call ``train``, leave together; exit status 130 on Ctrl-C.

    An error ends this process with exit status 1 and its message (`mae.errors.report`: one line for a user's
    mistake, else the traceback), naming the rank in a group ("mae pretrain: rank 1 of 2: error: ..."), printed
    before it leaves; it leaves without waiting for the others (`distributed.teardown`), who stop at their next
    collective (gloo: at once; nccl: within --dist_timeout), or when the launcher ends them.
    """
    dist = distributed.setup(args.device, args.dist_url, args.dist_on_itp, args.dist_timeout)
    failed = True  # chỉ khi mọi tiến trình đã xong mới được chờ nhau lúc rời nhóm
    try:
        train(dist)
        dist.barrier()  # leave together: a gloo process whose peer hangs up first can abort at exit
        failed = False
    except KeyboardInterrupt:
        if dist.is_main:
            print(f"mae {name}: interrupted; {last_checkpoint_hint(args.output_dir)}", file=sys.stderr)
        return 130  # the shell's code for Ctrl-C
    except Preempted as e:
        if dist.is_main:
            saved = (
                f"saved {Path(args.output_dir) / MID_EPOCH_NAME}"
                if args.output_dir
                else "nothing saved (no --output_dir)"
            )
            print(
                f"mae {name}: {e}: {saved}; exit status {EXIT_PREEMPTED} (requeue): the same command with "
                "--auto_resume continues from there",
                file=sys.stderr,
                flush=True,
            )
        return EXIT_PREEMPTED
    except Exception as e:  # lỗi ở tiến trình này: nói rõ rank nào và vì sao, rồi rời đi ngay, không chờ ai
        return report(name, e, dist.where)
    finally:
        distributed.teardown(failed)
    return 0


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hold back the loader's log lines (the trainer prints the load report itself, on rank 0 only)."""
    logger = logging.getLogger("mae")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def say(dist: distributed.Dist, text: str) -> None:
    """Print on rank 0 only."""
    if dist.is_main:
        print(text, flush=True)


def last_checkpoint_hint(output_dir: str) -> str:
    """Where the run can be continued from, for a message."""
    last = latest_checkpoint(output_dir) if output_dir else None
    if last is None:
        return "no checkpoint was saved"
    return f"the last checkpoint is {last} (continue with --resume {last}, or the same command with --auto_resume)"


def seed_everything(seed: int) -> None:
    """Seed torch, Python's ``random`` and numpy (timm's augmentations draw from the last two)."""
    # Cùng seed (cộng rank) thì cùng dãy số ngẫu nhiên: khởi tạo, tăng cường dữ liệu và mặt nạ giống bản gốc.
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed)


def refuse_earlier_run(args: argparse.Namespace) -> None:
    """ValueError when a fresh run (no ``--resume``, no ``--overwrite``) would write over an earlier one. With
    ``--auto_resume``, sets ``args.resume`` to the folder's latest checkpoint instead (`auto_resume`), or leaves
    it empty for a fresh start."""
    from .auto_resume import find_run_to_continue

    if getattr(args, "auto_resume", False):
        for other in ("resume", "overwrite"):
            if getattr(args, other):
                what = "names the file to continue" if other == "resume" else "starts afresh"
                raise ValueError(f"--auto_resume continues the run in --output_dir; --{other} {what}: pass one of them")
        if not args.output_dir:
            raise ValueError("--auto_resume continues the run in --output_dir: give one")
        found = find_run_to_continue(args.output_dir, vars(args))
        args.resume = str(found) if found is not None else ""
        return
    if args.output_dir and not args.resume and not args.overwrite:
        last = latest_checkpoint(args.output_dir)
        if last is not None:
            raise ValueError(
                f"{args.output_dir} already holds {last.name} from an earlier run: continue it with "
                f"--resume {args.output_dir} (or the same command with --auto_resume), or start afresh in another "
                "--output_dir (or pass --overwrite)"
            )


def prepare_output(args: argparse.Namespace, dist: distributed.Dist, *extra: str) -> Path | None:
    """Create ``--output_dir`` (rank 0); with ``--overwrite``, delete the earlier run's checkpoints, log and
    the ``extra`` file names. Call it once the data is known to be usable. None when nothing is saved."""
    if not args.output_dir:
        return None
    output = Path(args.output_dir)
    if dist.is_main:
        output.mkdir(parents=True, exist_ok=True)
        for name in remove_stale_temporaries(output):  # nothing of this run is being written yet
            print(f"removed {output / name}: the temporary file of a save that was killed mid-write", flush=True)
        stale = superseded_mid_epoch(output)
        if stale is not None:
            stale.unlink()
            print(f"removed {stale}: a later epoch's checkpoint supersedes it", flush=True)
        fresh = not args.resume and (args.overwrite or getattr(args, "auto_resume", False))
        if fresh:
            # --overwrite, or --auto_resume with nothing to continue: the earlier files would mix with this run's.
            earlier = [*checkpoints_in(output).values(), output / MID_EPOCH_NAME, output / metrics.LOG_NAME]
            for old in [*earlier, *(output / e for e in extra)]:
                old.unlink(missing_ok=True)
    return output


def save_checkpoint(
    output: Path,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    args: argparse.Namespace,
    dist: distributed.Dist,
) -> Path:
    """``OUTPUT/checkpoint-{epoch}.pth`` in the official layout plus every rank's ``rng`` (every rank calls it).
    A mid-epoch checkpoint of this epoch or an earlier one is superseded by it and deleted."""
    rng = rng_state(dist)  # mọi tiến trình cùng gọi (một phép all_gather)
    path = checkpoint_path(output, epoch)
    if dist.is_main:
        save_atomic(_training_state(epoch, model, optimizer, scaler, args) | {"rng": rng}, path)
        stale = superseded_mid_epoch(output)
        if stale is not None:
            stale.unlink(missing_ok=True)
    return path


def _training_state(
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The official ``misc.save_model`` entries: ``epoch`` is the last epoch the weights have completed."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "scaler": scaler_state(scaler),  # không bao giờ là {}: resume của bản gốc từ chối nó
        # The loader's workers as started here (capped at the CPUs): the crops depend on it (`auto_resume`).
        "args": argparse.Namespace(**vars(plain_args(args)) | _started_workers(args)),
    }


def _started_workers(args: argparse.Namespace) -> dict[str, int]:
    from .data import capped_workers

    return (
        {"num_workers": capped_workers(args.num_workers)} if isinstance(getattr(args, "num_workers", None), int) else {}
    )


def save_mid_epoch(
    output: Path,
    at: StepBoundary,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    args: argparse.Namespace,
    dist: distributed.Dist,
) -> Path:
    """``OUTPUT/checkpoint-midepoch.pth`` at an optimizer-step boundary (every rank calls it): the official
    entries with ``epoch`` the last complete one, every rank's ``rng`` now, and the ``position`` that lets
    `engine.train_one_epoch` continue this epoch exactly (`position`). Replaces the previous such file."""
    rng = rng_state(dist)
    position = {
        "epoch": at.epoch,
        "step": at.step,
        "epoch_rng": gather_rng(at.epoch_rng, dist),
        # Mỗi tiến trình một hàng: tổng và số đếm của loss, lr trong epoch (để trung bình cuối epoch giống hệt),
        # và số bước float16 bị bỏ qua (số nguyên nhỏ: float64 giữ đúng).
        "averages": dist.gather_rows(torch.tensor(at.averages, dtype=torch.float64)),
    }
    path = output / MID_EPOCH_NAME
    if dist.is_main:
        save_atomic(
            _training_state(at.epoch - 1, model, optimizer, scaler, args) | {"rng": rng, "position": position}, path
        )
    return path


def mid_epoch_saver(
    output: Path | None,
    preemption: Preemption,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    args: argparse.Namespace,
    dist: distributed.Dist,
    steps: int,
) -> Callable[[StepBoundary], None]:
    """What the loop calls at every optimizer-step boundary: a mid-epoch checkpoint when ``preemption`` says
    one is due, then `Preempted` when a signal asked the run to stop."""

    def at_boundary(at: StepBoundary) -> None:
        save, stop = preemption.decide()
        where = f"at epoch {at.epoch}, iteration {at.step} of {steps}"
        if save and output is not None:
            path = save_mid_epoch(output, at, model, optimizer, scaler, args, dist)
            preemption.saved()
            if not stop:
                say(dist, f"saved {path.name} {where}")
        if stop:
            raise Preempted(preemption.signal_name or "a signal", where)

    return at_boundary


def interrupted_epoch(resume: str, steps: int, dist: distributed.Dist) -> EpochStart | None:
    """Where the epoch of a mid-epoch checkpoint continues (None for an epoch-end checkpoint); CheckpointError
    when it was written by a run of another number of processes (its batches were cut for that many)."""
    from ..checkpoint import CheckpointError

    if not resume:
        return None
    ckpt = read_run_checkpoint(resume)
    position = ckpt.get("position")
    if not isinstance(position, dict):
        return None
    processes = int(position["averages"].shape[0])
    if processes != dist.world_size:
        raise CheckpointError(
            resume,
            f"was written in the middle of epoch {position['epoch']} by a run of {processes} process(es); this run "
            f"has {dist.world_size}, whose batches are cut differently.",
            f"Resume it with {processes} process(es), or resume from the last epoch's checkpoint-N.pth.",
        )
    if int(position["step"]) > steps:
        raise CheckpointError(
            resume,
            f"was written at iteration {position['step']} of epoch {position['epoch']}, but an epoch of this run has "
            f"{steps} batches: the data or the batch size differ from the run that wrote it.",
            "Resume it with the data and --batch_size of that run.",
        )
    # Tệp ghi trước khi có cột số bước bị bỏ qua chỉ có bốn cột: số đó không được lưu, tính là 0.
    row: list[float] = [*position["averages"][dist.rank].tolist(), 0.0]
    total, count, lr_total, lr_count, skipped = row[:5]
    return EpochStart(
        step=int(position["step"]),
        epoch_rng=position["epoch_rng"],
        step_rng=ckpt["rng"],
        averages=(total, int(count), lr_total, int(lr_count), int(skipped)),
    )


def resume_training_state(
    args: argparse.Namespace,
    ckpt: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    dist: distributed.Dist,
) -> list[str]:
    """After the weights, as the official ``misc.load_model``: the optimizer, scaler and next epoch when the
    file has them, and our random-generator states. Sets ``args.start_epoch``; returns notes for the log."""
    from ..checkpoint import CheckpointError

    if "optimizer" not in ckpt or "epoch" not in ckpt:
        return ["the file has no optimizer state or epoch: weights only, training starts at --start_epoch"]
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as e:
        raise CheckpointError(
            args.resume,
            f"has an optimizer state that does not fit this run ({e}).",
            "Resume with the model and flags of the run that wrote it.",
        ) from None
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    args.start_epoch = int(ckpt["epoch"]) + 1
    notes = [f"continuing at epoch {args.start_epoch} with the saved optimizer state"]
    notes.append(restore_rng(ckpt.get("rng"), dist))
    if args.output_dir and dist.is_main:
        dropped = metrics.drop_log_from(args.output_dir, args.start_epoch)
        if dropped:
            notes.append(f"dropped {dropped} log.txt record(s) of epochs >= {args.start_epoch}: they are trained again")
    return notes
