"""What a failed ``mae`` command prints: a user's mistake in one line, anything else with its traceback.

- A user's mistake is a ``ValueError`` (``CheckpointError`` among them), an ``ImportError`` (a missing extra:
  ``pip install 'mae[train]'``), an ``OSError`` that names a path the user gave (``FileExistsError``,
  ``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``, ``NotADirectoryError``), or any error
  marked `UserError` (``DownloadError``, ``NonFiniteLossError``, ...: they derive from ``RuntimeError`` for
  their callers, and their message already says what to do). One line: ``mae CMD: error: MESSAGE``.
- Anything else (a ``RuntimeError`` from PyTorch, CUDA or NCCL, an I/O error such as a full disk, a bug) is
  unexpected: its full traceback, then the one line, exit status 1. Out of memory adds what to try.
- In a process group the line names the process: ``mae pretrain: rank 1 of 2: error: ...``.
"""

from __future__ import annotations

import sys
import traceback

import torch


class UserError(Exception):
    """Marker of an error whose message says what went wrong and what to do: ``mae`` prints it on one line.

    Mixed into errors that are ``RuntimeError``s for their callers, e.g. ``class DownloadError(UserError,
    RuntimeError)``; ``ValueError`` and the path ``OSError``s are user errors without it.
    """


# OSErrors that name a path the user gave: the message is enough (``[Errno 2] No such file or directory: 'x'``).
_PATH_ERRORS = (FileExistsError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)

# Commands with --batch_size and --accum_iter: a smaller batch with more accumulation keeps the recipe.
_TRAINING = ("pretrain", "finetune", "linprobe")


def is_user_error(error: BaseException) -> bool:
    """True for a user's mistake (printed on one line), False for an unexpected error (printed with its traceback)."""
    return isinstance(error, (UserError, ValueError, ImportError, *_PATH_ERRORS))


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError``, Python's ``MemoryError``, or a ``RuntimeError`` whose text says memory ran out
    (the CPU allocator's "can't allocate memory", other devices' "out of memory")."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_hint(command: str) -> str:
    """What to try after running out of memory in ``command``."""
    if command in _TRAINING:
        return (
            "out of memory: lower --batch_size and raise --accum_iter by the same factor (e.g. --batch_size 32 "
            "--accum_iter 2 in place of --batch_size 64): the effective batch, batch_size x accum_iter x processes, "
            "and with it the lr and the recipe stay the same, while one micro-batch's activations are held at a "
            "time. On CUDA, --dtype bfloat16 (or float16, the default there) keeps activations in half the memory; "
            "a smaller --input_size or model needs less again"
        )
    if command == "evaluate":
        return "out of memory: lower --batch_size (the accuracy does not depend on it)"
    return "out of memory: free the device (other processes on it?), or run on --device cpu"


def lost_peer(error: BaseException) -> bool:
    """An error of the process group's backend: usually another process ended first (gloo: "Connection closed
    by peer"), or a collective outlived --dist_timeout."""
    import torch.distributed as dist

    return isinstance(error, dist.DistBackendError) or "closed by peer" in str(error)


def report(command: str, error: BaseException, where: str = "") -> int:
    """Print ``error`` for ``mae COMMAND`` on stderr as the module docstring says; returns the exit status, 1.

    ``where`` names the process in a group ("rank 1 of 2"), "" in one process.
    """
    sys.stdout.flush()  # những dòng đã in trước lỗi đứng trước thông báo lỗi
    prefix = f"mae {command}: {where + ': ' if where else ''}"
    if is_user_error(error):
        print(f"{prefix}error: {error}", file=sys.stderr, flush=True)
        return 1
    # Lỗi bất ngờ: giữ nguyên traceback, vì chỗ lỗi xảy ra mới là manh mối.
    traceback.print_exception(error, file=sys.stderr)
    lines = [f"{prefix}error: {type(error).__name__}: {error}"]
    if is_out_of_memory(error):
        lines.append(f"{prefix}hint: {out_of_memory_hint(command)}")
    elif where and lost_peer(error):
        lines.append(
            f"{prefix}hint: the process group failed, usually because another process ended first: its own "
            "message (in its log) gives the cause; a collective that waits longer than --dist_timeout ends too"
        )
    print("\n".join(lines), file=sys.stderr, flush=True)
    return 1
