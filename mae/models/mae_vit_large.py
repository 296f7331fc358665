"""ViT-Large/16 MAE (He et al., 2022, §4 and Table 3): encoder 1024-d, 24 blocks, 16 heads,
16x16 patches; the default decoder, 512-d, 8 blocks, 16 heads ("dec512d8b").
Fine-tuned: 85.9% ImageNet-1K top-1.
"""

from __future__ import annotations

from typing import Any

from ..config import MAEConfig
from ..mae import MaskedAutoencoderViT
from .registry import register_model

MAE_VIT_LARGE_CONFIG = MAEConfig(
    patch_size=16,
    embed_dim=1024,
    depth=24,
    num_heads=16,
    decoder_embed_dim=512,
    decoder_depth=8,
    decoder_num_heads=16,
    mlp_ratio=4.0,
)


class MAEViTLarge(MaskedAutoencoderViT):
    """ViT-Large/16 MAE; keyword overrides change its configuration (e.g. `norm_pix_loss=True`)."""

    default_config = MAE_VIT_LARGE_CONFIG

    def __init__(self, **overrides: Any) -> None:
        super().__init__(self.default_config, **overrides)


def mae_vit_large_patch16_dec512d8b(**overrides: Any) -> MAEViTLarge:
    """The official factory name: ViT-Large/16 encoder, 512-d 8-block decoder."""
    return MAEViTLarge(**overrides)


mae_vit_large_patch16 = mae_vit_large_patch16_dec512d8b  # the official short name
register_model(
    "mae_vit_large_patch16",
    mae_vit_large_patch16,
    official=True,
    aliases=["mae_vit_large_patch16_dec512d8b"],
    label="ViT-L/16",
)
