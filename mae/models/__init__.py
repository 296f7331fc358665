"""The named MAE variants and their registry (`list_models`, `create_model`).

Every name is a factory; the official long names (`*_dec512d8b`) and short names are both registered.
See `README.md` in this folder for the comparison table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..mae import MaskedAutoencoderViT
from .mae_vit_base import MAEViTBase, mae_vit_base_patch16, mae_vit_base_patch16_dec512d8b
from .mae_vit_huge import MAEViTHuge, mae_vit_huge_patch14, mae_vit_huge_patch14_dec512d8b
from .mae_vit_large import MAEViTLarge, mae_vit_large_patch16, mae_vit_large_patch16_dec512d8b

_REGISTRY: dict[str, Callable[..., MaskedAutoencoderViT]] = {
    "mae_vit_base_patch16": mae_vit_base_patch16,
    "mae_vit_base_patch16_dec512d8b": mae_vit_base_patch16_dec512d8b,
    "mae_vit_large_patch16": mae_vit_large_patch16,
    "mae_vit_large_patch16_dec512d8b": mae_vit_large_patch16_dec512d8b,
    "mae_vit_huge_patch14": mae_vit_huge_patch14,
    "mae_vit_huge_patch14_dec512d8b": mae_vit_huge_patch14_dec512d8b,
}


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **overrides: Any) -> MaskedAutoencoderViT:
    """Build a registered variant with the official initialisation, e.g.
    `create_model("mae_vit_large_patch16", norm_pix_loss=True, img_size=448)`.

    Keyword overrides are `MAEConfig` fields. An unknown name or field raises ValueError listing the
    valid ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _REGISTRY[name](**overrides)


__all__ = [
    "MAEViTBase",
    "MAEViTHuge",
    "MAEViTLarge",
    "create_model",
    "list_models",
    "mae_vit_base_patch16",
    "mae_vit_base_patch16_dec512d8b",
    "mae_vit_huge_patch14",
    "mae_vit_huge_patch14_dec512d8b",
    "mae_vit_large_patch16",
    "mae_vit_large_patch16_dec512d8b",
]
