"""Mixup / CutMix and the loss that goes with them, as the official ``main_finetune.py`` chooses them.

- ``--mixup A`` / ``--cutmix A`` / ``--cutmix_minmax LO HI``: timm's ``Mixup`` mixes pairs of images and
  their labels (``--mixup_prob``, ``--mixup_switch_prob``, ``--mixup_mode``); the labels become soft,
  label-smoothed by ``--smoothing`` inside ``Mixup``, and the loss is ``SoftTargetCrossEntropy``;
- otherwise, ``--smoothing > 0``: ``LabelSmoothingCrossEntropy``; else plain cross-entropy.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn


def mixup_active(args: argparse.Namespace) -> bool:
    """Whether the flags turn Mixup or CutMix on (the official test)."""
    return bool(args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None)


def build_mixup(args: argparse.Namespace, num_classes: int) -> Any:
    """timm's ``Mixup`` for the flags, or None when neither mixup nor cutmix is on."""
    if not mixup_active(args):
        return None
    from timm.data.mixup import Mixup

    # Trộn hai ảnh và trộn nhãn theo cùng tỉ lệ: nhãn trở thành phân phối mềm trên các lớp.
    return Mixup(
        mixup_alpha=args.mixup,
        cutmix_alpha=args.cutmix,
        cutmix_minmax=args.cutmix_minmax,
        prob=args.mixup_prob,
        switch_prob=args.mixup_switch_prob,
        mode=args.mixup_mode,
        label_smoothing=args.smoothing,
        num_classes=num_classes,
    )


def build_criterion(args: argparse.Namespace) -> nn.Module:
    """The training loss: soft-target CE with mixup, label-smoothing CE with ``--smoothing``, else CE."""
    from timm.loss.cross_entropy import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active(args):
        return SoftTargetCrossEntropy()  # làm mượt nhãn đã nằm trong Mixup
    if args.smoothing > 0.0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return torch.nn.CrossEntropyLoss()
