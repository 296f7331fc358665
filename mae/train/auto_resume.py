"""``--auto_resume``: the same command, run again, continues the run in its ``--output_dir``.

What a scheduler does after a preemption, or a person after a crash: run the job script again. With
``--auto_resume`` the command then continues from the folder's latest whole checkpoint (the mid-epoch one
when it is ahead, `run_checkpoint.latest_checkpoint`), or starts afresh when the folder holds none. It
refuses, naming each difference, when the folder's run was made with settings that change what is computed
(the model, the data, the batch, the schedule, the precision, the seed, ...): continuing it under other
settings would give a run that is neither. Settings that change only where the output goes or how the
processes meet (``--print_freq``, ``--output_dir``, ``--pin_mem``, ``--dist_url`` ...) may differ. The number
of loader workers is compared as started (capped at the CPUs, `data.capped_workers`): each worker draws its
own crops, so another count gives other crops.

Without ``--auto_resume`` a command refuses a folder that holds a run (`runs.refuse_earlier_run`), as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import load_object
from .data import capped_workers
from .run_checkpoint import latest_checkpoint

# Flags that do not change what a run computes: how the data is read, where things are written, how the
# processes meet, what is printed. Every other recorded flag must be the same to continue a run.
NEUTRAL = frozenset(
    {
        "auto_resume", "resume", "start_epoch", "overwrite", "output_dir", "log_dir", "print_freq",
        "pin_mem", "save_every", "save_every_minutes", "dist_url", "dist_on_itp", "local_rank",
        "world_size", "dist_timeout", "dist_eval", "eval", "command", "func",
        "grad_checkpointing",  # the same gradients, bit for bit (`mae.grad_checkpointing`): only memory and time
    }
)  # fmt: skip


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings that differ between a folder's run and this command ("name: A there, B now"), ignoring
    `NEUTRAL` flags and flags one side does not know (a newer or older version of the command)."""
    found = []
    for name in sorted(set(recorded) & set(current) - NEUTRAL):
        theirs, ours = recorded[name], current[name]
        if ours is None and theirs is not None:
            continue  # a default derived as the run starts (--lr from --blr and the batch, --nb_classes from the data)
        if isinstance(theirs, tuple):
            theirs = list(theirs)
        if isinstance(ours, tuple):
            ours = list(ours)
        if theirs != ours:
            found.append(f"--{name}: {theirs!r} there, {ours!r} now")
    return found


def find_run_to_continue(output_dir: str, current: dict[str, Any]) -> Path | None:
    """The checkpoint of ``output_dir`` to continue from, or None to start afresh; ValueError when its run was
    made with other settings (`differences`)."""
    latest = latest_checkpoint(output_dir)
    if latest is None:
        return None
    ckpt = load_object(latest)
    args = ckpt.get("args") if isinstance(ckpt, dict) else None
    recorded: dict[str, Any] = dict(vars(args)) if hasattr(args, "__dict__") else dict(args or {})
    if not recorded:
        raise ValueError(
            f"--auto_resume: {latest} records no settings (not written by this command?), so it cannot be "
            f"checked against this run's: continue it with --resume {latest}, or use another --output_dir"
        )
    # Số worker đổi ảnh cắt (mỗi worker một bộ sinh ngẫu nhiên): so số worker thực chạy, sau giới hạn số CPU.
    workers = {"num_workers": capped_workers(int(current.get("num_workers", 0)))}
    if "num_workers" in recorded:
        recorded = recorded | {"num_workers": capped_workers(int(recorded["num_workers"]))}
    found = differences(recorded, current | workers)
    if found:
        raise ValueError(
            f"--auto_resume: {output_dir} holds a run made with other settings ({latest.name}): "
            + "; ".join(found)
            + ". Run the command that made it, or start afresh in another --output_dir (or pass --overwrite "
            "instead of --auto_resume)"
        )
    return latest
