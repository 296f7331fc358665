"""FLOPs of one MAE forward, counted from the configuration and the mask ratio.

Counted like `torch.utils.flop_counter`: 2 * M * N * K for every matrix product (linear layers, the
patch projection, q @ k^T and attention @ v); element-wise work (norms, GELU, softmax, adds) is left
out. `tests/test_flops.py` holds the formula equal to torch's FlopCounterMode on real forwards.
"""

from __future__ import annotations

from mae.config import MAEConfig
from mae.masking import kept_count


def _blocks(tokens: int, dim: int, depth: int, mlp_ratio: float) -> int:
    hidden = int(dim * mlp_ratio)
    linears = 2 * tokens * (dim * 3 * dim + dim * dim + dim * hidden + hidden * dim)
    attention = 2 * 2 * tokens * tokens * dim  # q @ k^T and attention @ v, all heads together
    return depth * (linears + attention)


def forward_flops(config: MAEConfig, mask_ratio: float = 0.75, batch: int = 1) -> int:
    """Matrix-product FLOPs of `MaskedAutoencoderViT.forward` for `batch` images."""
    c = config
    length = c.num_patches
    kept = kept_count(length, mask_ratio)
    encoder_tokens, decoder_tokens = kept + 1, length + 1  # the class token goes through both
    total = 2 * length * c.patch_dim * c.embed_dim  # patch projection, on every patch
    total += _blocks(encoder_tokens, c.embed_dim, c.depth, c.mlp_ratio)
    total += 2 * encoder_tokens * c.embed_dim * c.decoder_embed_dim  # decoder_embed
    total += _blocks(decoder_tokens, c.decoder_embed_dim, c.decoder_depth, c.mlp_ratio)
    total += 2 * decoder_tokens * c.decoder_embed_dim * c.patch_dim  # decoder_pred
    return batch * total
