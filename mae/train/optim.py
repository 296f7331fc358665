"""The optimizer of the official pre-training recipe: AdamW, betas (0.9, 0.95), two weight-decay groups."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

BETAS = (0.9, 0.95)  # β2 = 0.95 rather than 0.999: steadier with very large batches (He et al., Table 8)


def param_groups_weight_decay(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """[no-decay group, decay group], parameters in ``named_parameters`` order (the official order).

    No decay for 1-D tensors (norm weights, biases) and for anything named ``*.bias``; frozen tensors (the
    fixed sin-cos tables) are left out. ``cls_token`` and ``mask_token`` are 3-D and therefore *are*
    decayed, as in the official recipe (timm's ``param_groups_weight_decay`` without a skip list).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # bảng vị trí sin-cos cố định: không học, không vào optimizer
        if param.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the official groups, with PyTorch's default implementation (as the official script)."""
    return torch.optim.AdamW(param_groups_weight_decay(model, weight_decay), lr=lr, betas=BETAS)
