"""Multi-head self-attention (Vaswani et al., 2017, §3.2; as used by ViT and MAE's encoder and decoder).

One fused `qkv` projection (with bias) and an output projection `proj`, the official checkpoint's layout.
The default path calls PyTorch's fused `scaled_dot_product_attention` (SDPA); the manual path spells the
same computation out and serves as the readable reference (tests hold the two within 1e-5).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Self-attention over a token sequence: [B, N, C] -> [B, N, C]."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = True  # SDPA; False selects the manual path below (see `set_fused_attn`)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        # Một phép chiếu chung sinh ra q, k, v cho mọi head: [B, N, 3C] -> 3 x [B, H, N, C/H].
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, H, N, hd]
        x = attend(q, k, v, self.scale, fused=self.fused)  # [B, H, N, hd]
        x = x.transpose(1, 2).reshape(B, N, C)  # ghép các head lại: [B, N, C]
        return self.proj(x)


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float, *, fused: bool) -> Tensor:
    """softmax(q k^T * scale) v over [B, H, N, hd] tensors: by SDPA (`fused`) or written out (the reference;
    `mae/attention_kernel.py` times the two for a training run's `--fast`)."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v)  # [B, H, N, hd]
    # Mỗi token lấy trung bình có trọng số của các value; trọng số = softmax(q·k / sqrt(hd)).
    attn = (q * scale) @ k.transpose(-2, -1)  # [B, H, N, N]
    attn = attn.softmax(dim=-1)
    return attn @ v  # [B, H, N, hd]


def set_fused_attn(module: nn.Module, enabled: bool) -> None:
    """Switch every `Attention` inside `module` between SDPA (True) and the manual path (False)."""
    for m in module.modules():
        if isinstance(m, Attention):
            m.fused = enabled
