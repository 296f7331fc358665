"""What every training command does around its loop: join the processes, seed, guard the output folder,
save and resume checkpoints, and speak (rank 0 only).

- a fresh run refuses a folder that already holds ``checkpoint-N.pth`` (``--overwrite`` clears the earlier
  run's files first, once the data is known to be usable);
- Ctrl-C ends the command with exit status 130 and names the checkpoint to continue from;
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

from . import distributed, metrics
from .run_checkpoint import checkpoint_path, checkpoints_in, plain_args, restore_rng, rng_state, save_atomic


def run_command(name: str, args: argparse.Namespace, train: Callable[[distributed.Dist], None]) -> int:
    """Join the processes (under torchrun), call ``train``, leave together; exit status 130 on Ctrl-C."""
    dist = distributed.setup(args.device, args.dist_url, args.dist_on_itp)
    try:
        train(dist)
        dist.barrier()  # leave together: a gloo process whose peer hangs up first can abort at exit
    except KeyboardInterrupt:
        if dist.is_main:
            print(f"mae {name}: interrupted; {last_checkpoint_hint(args.output_dir)}", file=sys.stderr)
        return 130  # the shell's code for Ctrl-C
    finally:
        distributed.teardown()
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
    found = checkpoints_in(output_dir) if output_dir else {}
    if not found:
        return "no checkpoint was saved"
    last = found[max(found)]
    return f"the last checkpoint is {last} (continue with --resume {last})"


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
    """ValueError when a fresh run (no ``--resume``, no ``--overwrite``) would write over an earlier one."""
    if args.output_dir and not args.resume and not args.overwrite:
        found = checkpoints_in(args.output_dir)
        if found:
            raise ValueError(
                f"{args.output_dir} already holds {found[max(found)].name} from an earlier run: continue it with "
                f"--resume {args.output_dir}, or start afresh in another --output_dir (or pass --overwrite)"
            )


def prepare_output(args: argparse.Namespace, dist: distributed.Dist, *extra: str) -> Path | None:
    """Create ``--output_dir`` (rank 0); with ``--overwrite``, delete the earlier run's checkpoints, log and
    the ``extra`` file names. Call it once the data is known to be usable. None when nothing is saved."""
    if not args.output_dir:
        return None
    output = Path(args.output_dir)
    if dist.is_main:
        output.mkdir(parents=True, exist_ok=True)
        if args.overwrite and not args.resume:
            for old in [*checkpoints_in(output).values(), output / metrics.LOG_NAME, *(output / e for e in extra)]:
                old.unlink(missing_ok=True)  # --overwrite: the earlier run's files would mix with this one's
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
    """``OUTPUT/checkpoint-{epoch}.pth`` in the official layout plus every rank's ``rng`` (every rank calls it)."""
    rng = rng_state(dist)  # mọi tiến trình cùng gọi (một phép all_gather)
    path = checkpoint_path(output, epoch)
    if dist.is_main:
        save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "scaler": scaler.state_dict(),
                "args": plain_args(args),
                "rng": rng,
            },
            path,
        )
    return path


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
