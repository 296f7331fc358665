"""ViT-Huge/14 MAE (He et al., 2022, §4 and Table 3): encoder 1280-d, 32 blocks, 16 heads,
14x14 patches; the default decoder, 512-d, 8 blocks, 16 heads ("dec512d8b").
Fine-tuned: 86.9% ImageNet-1K top-1 (87.8% at 448).
"""

from __future__ import annotations

from typing import Any

from ..config import MAEConfig
from ..mae import MaskedAutoencoderViT
from .registry import register_model

MAE_VIT_HUGE_CONFIG = MAEConfig(
    patch_size=14,
    embed_dim=1280,
    depth=32,
    num_heads=16,
    decoder_embed_dim=512,
    decoder_depth=8,
    decoder_num_heads=16,
    mlp_ratio=4.0,
)


class MAEViTHuge(MaskedAutoencoderViT):
    """ViT-Huge/14 MAE; keyword overrides change its configuration (e.g. `norm_pix_loss=True`)."""

    default_config = MAE_VIT_HUGE_CONFIG

    def __init__(self, **overrides: Any) -> None:
        super().__init__(self.default_config, **overrides)


def mae_vit_huge_patch14_dec512d8b(**overrides: Any) -> MAEViTHuge:
    """The official factory name: ViT-Huge/14 encoder, 512-d 8-block decoder."""
    return MAEViTHuge(**overrides)


mae_vit_huge_patch14 = mae_vit_huge_patch14_dec512d8b  # the official short name
register_model(
    "mae_vit_huge_patch14",
    mae_vit_huge_patch14,
    official=True,
    aliases=["mae_vit_huge_patch14_dec512d8b"],
    label="ViT-H/14",
)
