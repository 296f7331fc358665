"""The class token's attention in the encoder's last block, per head (Caron et al., 2021, DINO, Figure 1;
the figure asked for in facebookresearch/mae#187).

The weights are written out from the block's own ``qkv`` projection, on the input its attention sees (the
output of its ``norm1``, caught by a forward hook): ``softmax(q_cls k^T / sqrt(head_dim))`` for each head,
then the column of the class token itself is dropped, as DINO's ``visualize_attention.py`` does. The
encoder's fused attention path is left as it is (it returns no weights).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoder import MAEEncoder
from ..transformer import Block


@torch.no_grad()
def cls_attention(encoder: MAEEncoder, images: Tensor) -> Tensor:
    """The class token's attention over the patches in the last block: images [N, C, H, W] (normalised,
    the model's size) -> [N, heads, L], L = (H / p) * (W / p) patches in row-major order.

    Each row over the 1 + L tokens sums to 1; the class token's own share is left out, so a row over the
    L patches sums to 1 minus it.
    """
    block = cast(Block, encoder.blocks[-1])
    caught: list[Tensor] = []
    hook = block.norm1.register_forward_hook(lambda _module, _inputs, output: caught.append(output))
    try:
        encoder.forward_features(images)
    finally:
        hook.remove()
    x = caught[0]  # [N, 1 + L, D]: đầu vào của attention ở khối cuối (sau norm1)
    attn = block.attn
    B, T, _ = x.shape
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)  # [N, 1 + L, 3D]
    q, k, _v = qkv.reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # each [N, h, 1 + L, hd]
    # Chỉ hàng của token [CLS]: nó "nhìn" vào patch nào, theo từng head.
    scores = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)  # [N, h, 1, 1 + L]
    return scores.softmax(dim=-1)[:, :, 0, 1:]  # [N, h, L]: bỏ cột của chính token [CLS]


def upsample(maps: Tensor, grid: int, patch_size: int) -> Tensor:
    """Per-patch maps [N, h, L] -> per-pixel maps [N, h, grid * p, grid * p], each patch's value over its
    p x p pixels (nearest neighbour, as DINO's figure)."""
    N, h, L = maps.shape
    if grid * grid != L:
        raise ValueError(f"{L} patches do not make a {grid} x {grid} grid")
    return maps.reshape(N, h, grid, grid).repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
