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


def set_fused_adamw(optimizer: torch.optim.Optimizer, fused: bool) -> bool:
    """Run ``optimizer`` (an AdamW) by PyTorch's fused kernel (``fused=True``, `--fast`) or by its default
    implementation (False, as the official script); returns whether the fused kernel is on (False for any
    other optimizer, e.g. LARS, which is left alone).

    Departure (opt-in): the fused kernel computes the same update in another order; after a few steps the
    weights differ from the default's by float32 rounding (held to a stated bound in tests/test_fast_path.py).
    The choice is kept across ``load_state_dict`` (a resume): a checkpoint's param groups carry the ``fused``
    flag of the run that wrote them, which would otherwise override this run's choice.
    """
    if not isinstance(optimizer, torch.optim.AdamW):
        return False

    optimizer._mae_fused = fused  # type: ignore[attr-defined]
    _keep_fused_choice(optimizer)
    if not getattr(optimizer, "_mae_keeps_fused", False):
        optimizer.register_load_state_dict_post_hook(_keep_fused_choice)
        optimizer._mae_keeps_fused = True  # type: ignore[attr-defined]
    return fused


def _keep_fused_choice(optimizer: torch.optim.Optimizer) -> None:
    """Set every group of ``optimizer`` to the implementation `set_fused_adamw` chose for it."""
    fused = bool(getattr(optimizer, "_mae_fused", False))
    for group in optimizer.param_groups:
        group["fused"] = True if fused else None
        group["foreach"] = None
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if fused and "step" in state:  # the fused kernel reads the step count on the weights' device
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
    # GradScaler hands the fused kernel its scale and inf flag (torch's AdamW(fused=True) sets this too).
    optimizer._step_supports_amp_scaling = fused  # type: ignore[attr-defined]
