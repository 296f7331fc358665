"""``mae linprobe``: the official ``main_linprobe.py`` protocol (He et al., 2022, §4 and Appendix A.3).

    mae linprobe --data_path IMAGENET --model vit_base_patch16 --finetune mae_pretrain_vit_base.pth \\
        --batch_size 512 --accum_iter 4 --epochs 90 --blr 0.1 --weight_decay 0.0 --dist_eval --output_dir out

The pre-trained encoder is frozen; only a linear classifier on the class token learns. As in the
official protocol (after MoCo v3), the classifier is a ``BatchNorm1d`` without affine parameters
(eps 1e-6) followed by the linear layer — the batch norm whitens the features, which MAE needs because
its features are not normalised like those of contrastive methods — trained by LARS (`lars.LARS`)
with momentum 0.9, no weight decay, on random-resized crops and flips only. The head's weight starts
at truncated-normal std 0.01. Checkpoints hold the whole model with the head's keys ``head.0.*`` (the
batch norm's running statistics) and ``head.1.*`` (the linear layer), as the official ones.

The trainer is fine-tuning's (`finetune.train`), with this recipe; its departures apply here too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from ..classifier import VisionTransformer
from .finetune import Recipe, add_run_arguments, build_classifier, load_finetune, redraw_head
from .finetune import run as run_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The official ``main_linprobe.py`` flags (same names and defaults, dashed spellings too), then ours."""
    add_run_arguments(parser, batch_size=512, epochs=90, blr=0.1, min_lr=0.0, warmup_epochs=10, weight_decay=0.0)
    parser.set_defaults(global_pool=False)  # linear probing reads the class token


def add_probe_head(model: VisionTransformer) -> VisionTransformer:
    """Put a ``BatchNorm1d(affine=False, eps=1e-6)`` before the model's linear head and freeze all but the head."""
    head = cast(nn.Linear, model.head)
    # BatchNorm không có tham số học được trước lớp tuyến tính: chuẩn hoá đặc trưng của encoder MAE.
    model.head = nn.Sequential(nn.BatchNorm1d(head.in_features, affine=False, eps=1e-6), head)
    # Đóng băng encoder: chỉ lớp tuyến tính được học (linear probing).
    for param in model.parameters():
        param.requires_grad = False
    for param in model.head.parameters():
        param.requires_grad = True
    return model


def _model(args: argparse.Namespace, classes: int) -> VisionTransformer:
    return build_classifier(args, classes)


def _prepare(args: argparse.Namespace, model: VisionTransformer) -> list[str]:
    notes: list[str] = []
    if args.finetune and not args.eval:
        notes = load_finetune(args, model)
        # Khởi tạo lại lớp tuyến tính với std 0.01 (như MoCo v3 và bản gốc).
        redraw_head(model, std=0.01)
    add_probe_head(model)
    return notes


def _optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    from .lars import LARS

    return LARS(cast(VisionTransformer, model).head.parameters(), lr=args.lr, weight_decay=args.weight_decay)


def _transforms(args: argparse.Namespace) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    from .augment import eval_transform, linprobe_transform

    return linprobe_transform(args.input_size), eval_transform(args.input_size)


LINPROBE = Recipe(
    name="linprobe",
    check=lambda args: None,
    transforms=_transforms,
    build_model=_model,
    prepare_model=_prepare,
    optimizer=_optimizer,
    criterion=lambda args: torch.nn.CrossEntropyLoss(),
    mixup=lambda args, classes: None,
    clip_grad=lambda args: None,
)


def run(args: argparse.Namespace) -> int:
    """The ``mae linprobe`` command."""
    return run_recipe(args, LINPROBE)


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser (``mae linprobe`` registers the same arguments as a sub-command)."""
    parser = argparse.ArgumentParser("mae linprobe", description="MAE linear probing, the official protocol.")
    add_arguments(parser)
    return parser
