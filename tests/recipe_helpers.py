"""What a training command builds before its first epoch, taken from the command line's own path.

`build("pretrain", "--data_path", ...)` parses the argv with `mae.cli.build_parser()` and runs the command
(`args.func(args)`, as `mae.cli.main` does) until its trainer calls `train_one_epoch`, where it stops: the
model, loader, optimizer, schedule, criterion and mixup it was going to train with are returned, together with
the parsed flags and (fine-tuning, linear probing) the evaluation dataset. Nothing is trained or written (pass
``--output_dir ''``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import torch
from torch import nn

import mae.cli
from mae.train import finetune, pretrain
from mae.train.schedule import CosineSchedule

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def official_recipe() -> ModuleType:
    """`fixtures/official_recipe.py` as a module: its cases (the official figures are computed only with
    $MAE_OFFICIAL_REPO)."""
    spec = importlib.util.spec_from_file_location("official_recipe", FIXTURES / "official_recipe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Built:
    """What the trainer of a command built, as it was about to train its first epoch."""

    args: argparse.Namespace  # after the trainer's set-up (args.lr is filled in from --blr)
    model: nn.Module  # the model train_one_epoch gets (one process: no DDP wrapper)
    loader: Any  # the training loader; loader.dataset.transform is the training augmentation
    optimizer: torch.optim.Optimizer
    schedule: CosineSchedule
    criterion: nn.Module | None = None  # fine-tuning and linear probing
    mixup_fn: Any = None
    val: Any = None  # the evaluation dataset; val.transform is the evaluation transform
    kwargs: dict[str, Any] = field(default_factory=dict)  # train_one_epoch's keywords (mask_ratio, clip_grad, ...)


def model_input(built: Built, sample: Any) -> torch.Tensor:
    """What the model gets for one sample of ``built``'s transforms: the sample collated as a batch of one
    (`collate.collate`), then the normalisation the trainer hands its engine (on the device, here the CPU)."""
    from mae.train.collate import collate

    images, _ = collate([(sample, 0)])
    return built.kwargs["normalize"](images)[0]


class _Stop(BaseException):
    """Carries `Built` out of the trainer (a BaseException: the command's error report does not catch it)."""

    def __init__(self, built: Built) -> None:
        super().__init__("stopped before the first epoch")
        self.built = built


def build(*argv: str) -> Built:
    """`mae ARGV` up to its first epoch (see the module's docstring), on one thread, its console output dropped."""
    args = mae.cli.build_parser().parse_args(list(argv))
    seen: dict[str, Any] = {}

    def pretrain_epoch(
        model: nn.Module, loader: Any, optimizer: Any, scaler: Any, schedule: Any, *a: Any, **k: Any
    ) -> Any:
        raise _Stop(Built(args, model, loader, optimizer, schedule, kwargs=k))

    def finetune_epoch(
        model: nn.Module,
        criterion: nn.Module,
        loader: Any,
        optimizer: Any,
        scaler: Any,
        schedule: Any,
        *a: Any,
        **k: Any,
    ) -> Any:
        raise _Stop(Built(args, model, loader, optimizer, schedule, criterion, k.get("mixup_fn"), seen.get("val"), k))

    datasets = finetune.build_classification_datasets

    def recording_datasets(*a: Any, **k: Any) -> Any:
        train, val, classes = datasets(*a, **k)
        seen["val"] = val
        return train, val, classes

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with (
            mock.patch.object(pretrain, "train_one_epoch", pretrain_epoch),
            mock.patch.object(finetune, "train_one_epoch", finetune_epoch),
            mock.patch.object(finetune, "build_classification_datasets", recording_datasets),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            code = args.func(args)
    except _Stop as stop:
        return stop.built
    finally:
        torch.set_num_threads(threads)
    raise AssertionError(f"mae {args.command} returned {code} before its first epoch")
