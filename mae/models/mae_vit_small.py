"""ViT-Small/16 MAE: encoder 384-d, 12 blocks, 6 heads (DeiT-S, Touvron et al. 2021), 16x16 patches; the
default decoder, 512-d, 8 blocks, 16 heads ("dec512d8b", He et al. 2022, Table 1a/1b).

Not an official MAE release (the paper trains ViT-B/L/H only): it is registered with `official=False`,
so no official key counts are pinned for it; the harness holds it to transformers and to the official
recipe (key order, eps, initialisation) like every registered variant. The worked example of
`README.md`, "Adding a variant".
"""

from __future__ import annotations

from typing import Any

from ..config import MAEConfig
from ..mae import MaskedAutoencoderViT
from .registry import register_model

MAE_VIT_SMALL_CONFIG = MAEConfig(
    patch_size=16,
    embed_dim=384,
    depth=12,
    num_heads=6,  # 64 kênh mỗi đầu, như ViT-B
    decoder_embed_dim=512,  # bộ giải mã mặc định của bài báo, không đổi theo kích thước bộ mã hoá
    decoder_depth=8,
    decoder_num_heads=16,
    mlp_ratio=4.0,
)


class MAEViTSmall(MaskedAutoencoderViT):
    """ViT-Small/16 MAE; keyword overrides change its configuration (e.g. `norm_pix_loss=True`)."""

    default_config = MAE_VIT_SMALL_CONFIG

    def __init__(self, **overrides: Any) -> None:
        super().__init__(self.default_config, **overrides)


def mae_vit_small_patch16(**overrides: Any) -> MAEViTSmall:
    """ViT-Small/16 encoder, 512-d 8-block decoder."""
    return MAEViTSmall(**overrides)


register_model("mae_vit_small_patch16", mae_vit_small_patch16, label="ViT-S/16")
