"""The set-up lines the trainers print (`mae/train/run_lines.py`), from the values each is about."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mae.train.fast_path import FastPath
from mae.train.run_lines import (
    batch_line,
    device_line,
    effective_batch,
    epoch_notes,
    model_line,
    nothing_to_train,
    trained_parameters,
)


def test_parameter_counts_only_what_is_trained() -> None:
    small = nn.Linear(10, 3)  # 33 parameters
    small.bias.requires_grad_(False)
    assert trained_parameters(small) == "30"
    assert trained_parameters(nn.Linear(1000, 1000)) == "1.0M"  # 1,001,000
    line = model_line("mae_vit_tiny", small, 32, 8, "mask ratio 0.75, pixel target")
    assert line == "model: mae_vit_tiny (30 trained parameters), 32px, patch 8, mask ratio 0.75, pixel target"


def test_batch_line_gives_the_base_rate_the_learning_rate_is() -> None:
    assert effective_batch(64, 4, 8) == 2048
    lr = 1.5e-4 * 2048 / 256  # the paper's blr at the paper's batch
    line = batch_line(64, 4, 8, lr, 40, 800, "; loss X")
    want = "batch: 64 x accum 4 x 8 process(es) = 2048; lr 1.20e-03 (blr 1.50e-04), warmup 40 of 800 epochs; loss X"
    assert line == want


def test_device_line_says_each_departure_from_the_default_path() -> None:
    plain = device_line(torch.device("cpu"), torch.float32, compiled=False, grad_checkpointing=False, fast=FastPath(),
                        output=None)  # fmt: skip
    assert plain == "device: cpu, float32; output: none (no saving)"
    fast = FastPath(enabled=True, fused_adamw=True)
    line = device_line(torch.device("cpu"), torch.bfloat16, compiled=True, grad_checkpointing=True, fast=fast,
                       output=Path("out"))  # fmt: skip
    assert line == "device: cpu, bfloat16, compiled, gradient checkpointing; --fast: fused AdamW; output: out"


def test_epoch_notes_and_nothing_to_train() -> None:
    assert epoch_notes(10, 2, 1, 5) == []
    leftover, warmup_only = epoch_notes(7, 3, 5, 5)
    assert leftover.startswith("note: 1 batch(es) at the end of each epoch complete no optimizer step")
    assert warmup_only == "note: --warmup_epochs 5 >= --epochs 5: the lr only warms up"
    assert nothing_to_train(1, 2) is None
    assert nothing_to_train(2, 2) == "nothing to train: epoch 2 is past --epochs 2; raise --epochs to go on"
