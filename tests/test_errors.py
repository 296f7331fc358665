"""What a failed command prints (`mae.errors`): a user's mistake in one line, anything else with its traceback.

- An unexpected error (a ``RuntimeError("boom")`` from a patched function) inside `mae inspect` and inside a
  training epoch: exit status 1, the full traceback naming the function that raised, then the one line
  ``mae CMD: error: RuntimeError: boom``.
- Out of memory (CUDA's ``OutOfMemoryError``, the CPU allocator's RuntimeError) adds what to try: a smaller
  --batch_size with a larger --accum_iter keeps the effective batch.
- A ValueError, a path OSError, an ImportError and the RuntimeErrors marked `UserError` (DownloadError,
  NonFiniteLossError, NoOneDNNError) stay one line; a full disk (ENOSPC) does not.
- In a process group the line names the rank (``mae pretrain: rank 1 of 2: error: ...``).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import make_image_folder, pretrain, run_cli

import mae.checkpoint
from mae.download import DownloadError
from mae.errors import is_user_error, report
from mae.onednn import NoOneDNNError
from mae.train import pretrain as pretrain_module
from mae.train.distributed import RendezvousError
from mae.train.engine import NonFiniteLossError


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data", classes=2, per_class=4)


def raising(error: BaseException) -> Any:
    def exploding_epoch(*args: Any, **kwargs: Any) -> None:
        raise error

    return exploding_epoch


def test_an_unexpected_error_keeps_its_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def exploding_read(path: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(mae.checkpoint, "inspect_checkpoint", exploding_read)
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "x.pth"))
    assert code == 1 and out == ""
    assert err.startswith("Traceback (most recent call last):"), err
    assert "in exploding_read" in err and 'raise RuntimeError("boom")' in err
    assert err.endswith("RuntimeError: boom\nmae inspect: error: RuntimeError: boom\n"), err


def test_an_unexpected_error_in_training_keeps_its_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Path
) -> None:
    monkeypatch.setattr(pretrain_module, "train_one_epoch", raising(RuntimeError("boom")))
    code, out, err = pretrain(capsys, data, tmp_path / "out")
    assert code == 1 and "model: " in out  # the set-up was printed, then the epoch failed
    assert "Traceback (most recent call last):" in err and "in exploding_epoch" in err
    assert err.rstrip().splitlines()[-1] == "mae pretrain: error: RuntimeError: boom"  # one process: no rank


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried"),
    ],
    ids=["cuda", "cpu"],
)
def test_out_of_memory_says_what_to_try(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Path, error: Exception
) -> None:
    monkeypatch.setattr(pretrain_module, "train_one_epoch", raising(error))
    code, _, err = pretrain(capsys, data, tmp_path / "out")
    assert code == 1 and "Traceback (most recent call last):" in err
    hint = err.rstrip().splitlines()[-1]
    assert hint.startswith("mae pretrain: hint: out of memory: lower --batch_size and raise --accum_iter"), err
    assert "batch_size x accum_iter x processes" in hint and "--dtype bfloat16" in hint


def test_a_value_error_stays_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = pretrain(capsys, tmp_path / "nowhere", tmp_path / "out")
    assert code == 1
    assert (
        err.startswith(f"mae pretrain: error: --data_path {tmp_path / 'nowhere'} does not exist")
        and err.count("\n") == 1
    ), err


def test_a_user_error_raised_in_training_stays_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Path
) -> None:
    message = "the loss is nan at epoch 0, iteration 3; lower --blr"
    monkeypatch.setattr(pretrain_module, "train_one_epoch", raising(NonFiniteLossError(message)))
    code, _, err = pretrain(capsys, data, tmp_path / "out")
    assert code == 1 and err.startswith("mae pretrain: error: the loss is nan at epoch 0") and err.count("\n") == 1


USER_ERRORS = [
    ValueError("--mask_ratio must be in [0, 1)"),
    mae.checkpoint.CheckpointError("x.pth", "is not a checkpoint."),
    FileExistsError("out.pth exists; choose another name"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "x.pth"),
    PermissionError(errno.EACCES, "Permission denied", "/out"),
    ImportError("training needs torchvision and Pillow: pip install 'mae[train]'"),
    DownloadError("x.pth", "the md5 does not match.", "Delete it."),
    NonFiniteLossError("the loss is nan at epoch 0, iteration 3"),
    NoOneDNNError("this PyTorch build has no oneDNN"),
    RendezvousError("rank 1 of 2 could not meet the other processes"),
]
UNEXPECTED = [
    RuntimeError("boom"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EIO, "Input/output error"),
    torch.cuda.OutOfMemoryError("CUDA out of memory"),
    KeyError("model"),
]


@pytest.mark.parametrize("error", USER_ERRORS, ids=lambda e: type(e).__name__)
def test_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], error: Exception) -> None:
    assert is_user_error(error)
    assert report("pretrain", error, "rank 1 of 2") == 1
    err = capsys.readouterr().err
    assert err == f"mae pretrain: rank 1 of 2: error: {error}\n"


@pytest.mark.parametrize("error", UNEXPECTED, ids=lambda e: f"{type(e).__name__}({e})")
def test_unexpected_errors_keep_their_traceback(capsys: pytest.CaptureFixture[str], error: Exception) -> None:
    assert not is_user_error(error)
    try:
        raise error
    except Exception as e:
        report("finetune", e, "rank 0 of 4")
    err = capsys.readouterr().err
    assert (
        err.startswith("Traceback (most recent call last):") and "in test_unexpected_errors_keep_their_traceback" in err
    )
    assert f"mae finetune: rank 0 of 4: error: {type(error).__name__}: {error}\n" in err
