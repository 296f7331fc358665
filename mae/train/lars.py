"""LARS, the optimizer of the official linear probe (He et al., 2022, Appendix A.3).

Layer-wise Adaptive Rate Scaling (You, Gitman and Ginsburg, 2017, "Large Batch Training of Convolutional
Networks", arXiv:1708.03888) in the form MoCo v3 (Chen, Xie and He, 2021) uses and the MAE linear probe
takes from it: SGD with momentum whose update of each weight matrix is rescaled so that its norm is a
fixed fraction (the trust coefficient) of the weight's norm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


def _check(name: str, value: float, *, positive: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"LARS: {name} must be a finite number; got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"LARS: {name} must be {'> 0' if positive else '>= 0'}; got {value!r}")


class LARS(torch.optim.Optimizer):
    """LARS with momentum (You et al., 2017; the MoCo v3 form used by the official MAE linear probe).

    For every parameter ``p`` with gradient ``g`` in a group (``lr``, ``weight_decay``, ``momentum``,
    ``trust_coefficient``):

    - ``p.ndim > 1`` (weight matrices): ``d = g + weight_decay * p``, then ``d *= trust_coefficient *
      ||p|| / ||d||`` when both norms are positive (else ``d`` is left as is);
    - ``p.ndim <= 1`` (biases, norm parameters): ``d = g`` — no weight decay and no scaling;
    - ``mu = momentum * mu + d`` (``mu`` starts at zeros; per-parameter state key ``"mu"``), ``p -= lr * mu``.

    The arithmetic is done in the order of the official ``util/lars.py``, so the same parameters and
    gradients give the same bits; the state and group keys are the official ones, so optimizer states
    load across the two. Parameters whose gradient is None are skipped.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        _check("lr", lr)
        _check("weight_decay", weight_decay)
        _check("momentum", momentum)
        _check("trust_coefficient", trust_coefficient, positive=True)
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum}
        super().__init__(params, {**defaults, "trust_coefficient": trust_coefficient})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; returns ``closure()``'s loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
            trust = group["trust_coefficient"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients; use dense gradients")
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=decay)
                    # Tỉ lệ tin cậy (trust ratio): bước cập nhật của mỗi lớp có chuẩn bằng trust * ||p||,
                    # nên mọi lớp học cùng một tốc độ tương đối, dù gradient lớn hay nhỏ (You et al., 2017).
                    p_norm = torch.linalg.vector_norm(p)
                    u_norm = torch.linalg.vector_norm(update)
                    # Chuẩn bằng 0 (trọng số hoặc cập nhật toàn 0): không co giãn, tỉ lệ = 1.
                    ratio = torch.where((p_norm > 0) & (u_norm > 0), trust * p_norm / u_norm, 1.0)
                    update = update.mul(ratio)
                # Bias và tham số chuẩn hoá (ndim <= 1): không weight decay, không co giãn.
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                # Động lượng như SGD: mu = momentum * mu + d, rồi p -= lr * mu.
                mu.mul_(momentum).add_(update)
                p.add_(mu, alpha=-lr)
        return loss
