"""Checkpoints of a training run: ``OUTPUT/checkpoint-{epoch}.pth`` in the official layout.

``{"model", "optimizer", "epoch", "scaler", "args"}`` as the official ``util/misc.save_model`` writes it
(the model's state dict with official keys, the optimizer's with groups [no-decay, decay] in
``named_parameters`` order, the GradScaler's), so the official script resumes ours and ours resumes
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


def rng_state(dist: Dist) -> dict[str, torch.Tensor]:
    """Every rank's generator states (torch's, CUDA's, Python's and numpy's), stacked by rank (a collective:
    every rank calls it)."""
    state = {"cpu": dist.gather_rows(torch.get_rng_state())}
    if dist.device.type == "cuda":
        state["cuda"] = dist.gather_rows(torch.cuda.get_rng_state(dist.device))
    for name, row in _host_generators().items():
        state[name] = dist.gather_rows(row)
    return state


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
    torch.set_rng_state(state["cpu"][dist.rank].clone())
    if dist.device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"][dist.rank].clone(), dist.device)
    _set_host_generators(state, dist.rank)
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
    """``--resume FILE``, or ``--resume FOLDER`` for the folder's latest checkpoint-N.pth."""
    path = Path(resume).expanduser()
    if path.is_dir():
        found = checkpoints_in(path)
        if not found:
            raise CheckpointError(path, "holds no checkpoint-N.pth to resume from.", "Give the checkpoint file itself.")
        return found[max(found)]
    return path


def model_spec(run_args: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The model a `mae pretrain` run trained, from its recorded arguments (`CheckpointInfo.run_args`):
    (name, `create_model` keyword arguments from ``--model_args``, ``--input_size``, ``--norm_pix_loss``).
    None without them (an official release, a bare state dict)."""
    from .flags import key_values

    if not run_args or not isinstance(run_args.get("model"), str):
        return None
    kwargs = key_values(list(run_args.get("model_args") or []), "--model_args")
    if isinstance(run_args.get("input_size"), int):
        kwargs["img_size"] = run_args["input_size"]
    kwargs["norm_pix_loss"] = bool(run_args.get("norm_pix_loss", False))
    return run_args["model"], kwargs
