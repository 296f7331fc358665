"""Which attention kernel trains faster on this device: PyTorch's fused SDPA or the written-out path.

Both compute softmax(q k^T / sqrt(hd)) v (`mae.attention.attend`). Which one is faster *for training*
(forward and backward) depends on the device and the precision more than on the code. Measured on a
2-core Intel Xeon with AVX-512 and AMX, batch 8, forward + backward of the attention alone:
- bf16: the written-out path took 0.07x SDPA's time at ViT-B's encoder shape under 75 % masking
  ([8, 12, 50, 64]: 4.7 against 72 ms), 0.35x at its decoder's ([8, 16, 197, 32]) and 0.44x at the
  fine-tuning encoder's ([8, 12, 197, 64]): PyTorch's CPU flash-attention backward is slow in bf16;
- float32: the written-out path took 1.2x to 1.9x SDPA's time: SDPA stays.
So on the CPU the choice is measured, once per process and shape: both paths run a forward and a backward on
random [B, H, N, hd] tensors in the run's dtype (under its autocast), alternating, one warm-up and REPEATS
timed calls each; the least time counts, and the written-out path is kept only where it takes at most MARGIN
of SDPA's time (a clear win; a closer call keeps SDPA, the default). The batch is capped at MAX_BATCH for the
measurement (both kernels' cost grows linearly with the batch). On CUDA the rule is SDPA, untimed: there it
dispatches to the flash and memory-efficient kernels, made for this (unmeasured here: no GPU).

The default (no `--fast`) is SDPA everywhere, as before. The written-out path differs from SDPA by rounding
(float32: within 1e-5, `tests/test_attention.py`; bf16: within bf16's bound, `tests/test_fast_path.py`).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention, attend

MARGIN = 0.8  # the written-out path is kept where it takes at most 80 % of SDPA's time
REPEATS = 3
MAX_BATCH = 16


@dataclass(frozen=True)
class AttentionTiming:
    """One attention shape [batch, heads, tokens, head_dim] in `dtype`: the seconds of a forward and backward
    by SDPA and by the written-out path (None: not timed, SDPA by rule: a GPU)."""

    batch: int
    heads: int
    tokens: int
    head_dim: int
    dtype: torch.dtype
    fused_s: float | None
    written_s: float | None

    @property
    def written_out(self) -> bool:
        return self.fused_s is not None and self.written_s is not None and self.written_s <= MARGIN * self.fused_s

    def describe(self) -> str:
        shape = f"[{self.batch}, {self.heads}, {self.tokens}, {self.head_dim}]"
        if self.fused_s is None or self.written_s is None:
            return f"{shape}: SDPA (a GPU: untimed)"
        chosen = "written out" if self.written_out else "SDPA"
        return f"{shape}: written out {self.written_s / self.fused_s:.2f}x SDPA's time -> {chosen}"


def _step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dtype: torch.dtype, fused: bool) -> None:
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        out = attend(q, k, v, q.shape[-1] ** -0.5, fused=fused)
    out.float().sum().backward()  # type: ignore[no-untyped-call]


@functools.cache
def time_attention(batch: int, heads: int, tokens: int, head_dim: int, dtype: torch.dtype) -> AttentionTiming:
    """Forward and backward of both paths on the CPU (see the module docstring); made once per process and
    arguments."""
    g = torch.Generator().manual_seed(0)
    b = min(batch, MAX_BATCH)
    q, k, v = (torch.randn(b, heads, tokens, head_dim, generator=g).to(dtype).requires_grad_() for _ in range(3))
    for fused in (True, False):
        _step(q, k, v, dtype, fused)  # warm-up
    best = {True: math.inf, False: math.inf}
    for _ in range(REPEATS):
        for fused in (True, False):
            start = time.perf_counter()
            _step(q, k, v, dtype, fused)
            best[fused] = min(best[fused], time.perf_counter() - start)
    return AttentionTiming(batch, heads, tokens, head_dim, dtype, best[True], best[False])


def choose_attention(
    model: nn.Module, device: torch.device, dtype: torch.dtype, batch: int, tokens: Mapping[str, int]
) -> list[AttentionTiming]:
    """Set each `Attention` inside `model` to the kernel that trains faster here (see the module docstring);
    returns the distinct shapes' timings, in the order met.

    tokens: the sequence length each attention sees, by the name of the model's child that holds it (e.g.
    ``{"blocks": 50, "decoder_blocks": 197}`` for ViT-B pre-training at mask ratio 0.75).
    """
    found: dict[tuple[int, int, int], AttentionTiming] = {}
    for name, m in model.named_modules():
        if not isinstance(m, Attention):
            continue
        part = name.split(".", 1)[0]
        if part not in tokens:
            raise ValueError(f"no token count for the attention {name!r}: pass tokens[{part!r}]")
        key = (m.num_heads, tokens[part], m.head_dim)
        if key not in found:
            if device.type == "cpu":
                found[key] = time_attention(batch, *key, dtype)
            else:
                found[key] = AttentionTiming(batch, *key, dtype, None, None)
        m.fused = not found[key].written_out
    return list(found.values())
