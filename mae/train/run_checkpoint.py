"""Checkpoints of a training run: ``OUTPUT/checkpoint-{epoch}.pth`` in the official layout.

``{"model", "optimizer", "epoch", "scaler", "args"}`` as the official ``util/misc.save_model`` writes it
(the model's state dict with official keys, the optimizer's with groups [no-decay, decay] in
``named_parameters`` order, the GradScaler's: a fresh enabled scaler's state where ours is disabled, as
the official CUDA scaler refuses ``{}``), so the official script resumes ours and ours resumes
the official's. One entry is added, ``rng``: the random-generator state of every rank, which lets a
resumed run draw the same crops and masks as an uninterrupted one, bit for bit; the official loader
ignores it. A file is written to a temporary name and renamed into place: a run killed while saving
leaves the previous checkpoints whole and no half-written file under a checkpoint's name.
"""

from __future__ import annotations

import argparse
import os
import random
import re
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, load_object
from .distributed import Dist

_NAME = re.compile(r"^checkpoint-(\d+)\.pth$")
MID_EPOCH_NAME = "checkpoint-midepoch.pth"  # the newest mid-epoch checkpoint (`preemption`); one such file at most
# A save's temporary file (`save_atomic`): left behind only by a process killed while it wrote.
_TEMPORARY = re.compile(r"^\.(checkpoint-(\d+|best|midepoch)\.pth)\.(\d+)\.tmp$")


def checkpoint_path(output_dir: str | Path, epoch: int) -> Path:
    return Path(output_dir) / f"checkpoint-{epoch}.pth"


def checkpoints_in(folder: str | Path) -> dict[int, Path]:
    """The run checkpoints in ``folder`` by epoch."""
    found = {}
    for f in Path(folder).iterdir() if Path(folder).is_dir() else []:
        match = _NAME.match(f.name)
        if match and f.is_file():
            found[int(match.group(1))] = f
    return dict(sorted(found.items()))


def mid_epoch_position(path: Path) -> tuple[int, int] | None:
    """(epoch, step) of the mid-epoch checkpoint at ``path``: the epoch it interrupted and the batches of that
    epoch done; None where the file has no position (not a mid-epoch checkpoint)."""
    ckpt = load_object(path)
    position = ckpt.get("position") if isinstance(ckpt, dict) else None
    if not isinstance(position, dict):
        return None
    return int(position["epoch"]), int(position["step"])


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint a run in ``folder`` continues from: the mid-epoch one when it is ahead of the last
    epoch's (it interrupted a later epoch), else the highest ``checkpoint-N.pth``; None when there is none."""
    found = checkpoints_in(folder)
    last = found[max(found)] if found else None
    mid = Path(folder) / MID_EPOCH_NAME
    if mid.is_file():
        position = mid_epoch_position(mid)
        if position is not None and (not found or position[0] > max(found)):
            return mid
    return last


def superseded_mid_epoch(folder: str | Path) -> Path | None:
    """The folder's mid-epoch checkpoint when an epoch-end checkpoint of its epoch or a later one exists (the
    run went past it: a process killed between writing that checkpoint and deleting this file leaves it)."""
    mid, found = Path(folder) / MID_EPOCH_NAME, checkpoints_in(folder)
    if not mid.is_file() or not found:
        return None
    position = mid_epoch_position(mid)
    return mid if position is None or position[0] <= max(found) else None


def remove_stale_temporaries(folder: str | Path) -> list[str]:
    """Delete the temporary files of saves that were killed mid-write (``.checkpoint-N.pth.PID.tmp``); returns
    a line for each ("name (size)"). Call it before this run saves anything: a live save's file looks the same."""
    removed = []
    for f in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if _TEMPORARY.match(f.name) and f.is_file():
            size = f.stat().st_size
            f.unlink(missing_ok=True)
            removed.append(f"{f.name} ({size / 1e6:.1f} MB)")
    return removed


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # đổi tên là nguyên tử: tệp cũ còn nguyên cho tới khi tệp mới đã ghi xong
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def plain_args(args: argparse.Namespace) -> argparse.Namespace:
    """The run's arguments with plain values only, so the file loads under ``torch.load(weights_only=True)``."""
    keep = (str, int, float, bool, type(None))
    plain = {}
    for name, value in vars(args).items():
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, keep) or (isinstance(value, list) and all(isinstance(v, keep) for v in value)):
            plain[name] = value
    return argparse.Namespace(**plain)


def _host_generators() -> dict[str, torch.Tensor]:
    """Python's and numpy's global generator states as tensors (timm's RandAugment, crops and random erasing
    draw from ``random``, its Mixup from numpy), so that they load under ``weights_only=True``."""
    _, internal, gauss = random.getstate()
    state = {
        "python": torch.tensor(internal, dtype=torch.int64),
        "python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
    }
    try:
        import numpy as np
    except ImportError:
        return state
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state["numpy"] = torch.tensor([*np.asarray(keys).tolist(), pos, has_gauss], dtype=torch.int64)
    state["numpy_gauss"] = torch.tensor([cached], dtype=torch.float64)
    return state


def _set_host_generators(state: dict[str, torch.Tensor], rank: int) -> None:
    if "python" in state:
        has_gauss, gauss = state["python_gauss"][rank].tolist()
        random.setstate((3, tuple(int(v) for v in state["python"][rank].tolist()), gauss if has_gauss else None))
    if "numpy" in state:
        import numpy as np

        values = state["numpy"][rank].tolist()
        keys = np.array(values[:-2], dtype=np.uint32)
        np.random.set_state(("MT19937", keys, int(values[-2]), int(values[-1]), float(state["numpy_gauss"][rank][0])))


def local_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's generator states (torch's, CUDA's on a CUDA device, Python's and numpy's) as tensors."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state | _host_generators()


def gather_rng(local: dict[str, torch.Tensor], dist: Dist) -> dict[str, torch.Tensor]:
    """Every rank's ``local`` states stacked by rank (a collective: every rank calls it)."""
    return {name: dist.gather_rows(row) for name, row in local.items()}


def rng_state(dist: Dist) -> dict[str, torch.Tensor]:
    """Every rank's generator states (torch's, CUDA's, Python's and numpy's), stacked by rank (a collective:
    every rank calls it)."""
    return gather_rng(local_rng_state(dist.device), dist)


def set_local_rng(state: dict[str, torch.Tensor], rank: int, device: torch.device) -> None:
    """Set this process's generators to row ``rank`` of a stacked state (`gather_rng`)."""
    torch.set_rng_state(state["cpu"][rank].clone())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"][rank].clone(), device)
    _set_host_generators(state, rank)


def restore_rng(state: Any, dist: Dist) -> str:
    """Take this rank's row of a saved ``rng`` entry; says what was done (a note for the log)."""
    if not isinstance(state, dict) or "cpu" not in state:
        return (
            "the checkpoint holds no random-generator state (an official file?): crops and masks after resume "
            "differ from an uninterrupted run"
        )
    if state["cpu"].shape[0] != dist.world_size:
        return (
            f"the checkpoint's run had {state['cpu'].shape[0]} processes, this one has {dist.world_size}: the random "
            "generators start from --seed, so crops and masks differ from an uninterrupted run"
        )
    set_local_rng(state, dist.rank, dist.device)
    if "python" not in state:
        return (
            "torch's random-generator state restored (the checkpoint has no Python/numpy generator states: "
            "timm's augmentation and mixup draw differently from an uninterrupted run)"
        )
    return "random-generator state restored: the run continues as if uninterrupted"


def read_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint's entries; CheckpointError for a missing, unreadable or model-less file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "does not exist.", "Give --resume an existing checkpoint-N.pth (or its folder).")
    ckpt = load_object(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(
            path,
            "is not a training checkpoint: it has no 'model' entry.",
            "--resume takes a checkpoint-N.pth written by `mae pretrain` or the official main_pretrain.py.",
        )
    return ckpt


def resolve_resume(resume: str) -> Path:
    """``--resume FILE``, or ``--resume FOLDER`` for the folder's latest checkpoint (`latest_checkpoint`)."""
    path = Path(resume).expanduser()
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(path, "holds no checkpoint-N.pth to resume from.", "Give the checkpoint file itself.")
        return latest
    return path


def model_spec(run_args: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The model a `mae pretrain` run trained, from its recorded arguments (`CheckpointInfo.run_args`):
    (name, `create_model` keyword arguments from ``--model_args``, ``--input_size``, ``--norm_pix_loss``,
    ``--in_chans``).
    None without them (an official release, a bare state dict)."""
    from .flags import key_values

    if not run_args or not isinstance(run_args.get("model"), str):
        return None
    kwargs = key_values(list(run_args.get("model_args") or []), "--model_args")
    if isinstance(run_args.get("input_size"), int):
        kwargs["img_size"] = run_args["input_size"]
    kwargs["norm_pix_loss"] = bool(run_args.get("norm_pix_loss", False))
    if isinstance(run_args.get("in_chans"), int):
        kwargs["in_chans"] = run_args["in_chans"]  # `--in_chans`: grayscale or multi-band data
    return run_args["model"], kwargs
