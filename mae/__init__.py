"""mae: Masked Autoencoders (He et al., CVPR 2022) in plain PyTorch, proven equal to independent references.

import mae
model = mae.create_model("mae_vit_large_patch16")
loss, pred, mask = model(imgs)          # imgs: [N, 3, 224, 224]
"""

from __future__ import annotations

from .attention import set_fused_attn
from .checkpoint import CheckpointError, CheckpointInfo, inspect_checkpoint
from .classifier import VisionTransformer, param_groups_lrd, vit_base_patch16, vit_huge_patch14, vit_large_patch16
from .config import MAEConfig
from .decoder import MAEDecoder
from .encoder import MAEEncoder
from .loading import LoadReport
from .mae import MaskedAutoencoder, MaskedAutoencoderViT
from .models import (
    MAEViTBase,
    MAEViTHuge,
    MAEViTLarge,
    create_model,
    list_models,
    mae_vit_base_patch16,
    mae_vit_base_patch16_dec512d8b,
    mae_vit_huge_patch14,
    mae_vit_huge_patch14_dec512d8b,
    mae_vit_large_patch16,
    mae_vit_large_patch16_dec512d8b,
)
from .onednn import onednn_available, set_onednn_linear

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "LoadReport",
    "MAEConfig",
    "MAEDecoder",
    "MAEEncoder",
    "MAEViTBase",
    "MAEViTHuge",
    "MAEViTLarge",
    "MaskedAutoencoder",
    "MaskedAutoencoderViT",
    "VisionTransformer",
    "create_model",
    "inspect_checkpoint",
    "list_models",
    "mae_vit_base_patch16",
    "mae_vit_base_patch16_dec512d8b",
    "mae_vit_huge_patch14",
    "mae_vit_huge_patch14_dec512d8b",
    "mae_vit_large_patch16",
    "mae_vit_large_patch16_dec512d8b",
    "onednn_available",
    "param_groups_lrd",
    "set_fused_attn",
    "set_onednn_linear",
    "vit_base_patch16",
    "vit_huge_patch14",
    "vit_large_patch16",
]
