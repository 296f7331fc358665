"""The named MAE variants and their registry (`register_model`, `list_models`, `create_model`).

Every name is a factory; the official long names (`*_dec512d8b`) and short names are both registered.
Each `mae_vit_*.py` in this folder registers its variant when imported, and every such file is imported
here, so a new variant file is picked up without editing this one. See `README.md` in this folder for the
comparison table and "Adding a variant".
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from ..mae import MaskedAutoencoderViT
from .mae_vit_base import MAEViTBase, mae_vit_base_patch16, mae_vit_base_patch16_dec512d8b
from .mae_vit_huge import MAEViTHuge, mae_vit_huge_patch14, mae_vit_huge_patch14_dec512d8b
from .mae_vit_large import MAEViTLarge, mae_vit_large_patch16, mae_vit_large_patch16_dec512d8b
from .registry import _REGISTRY, Variant, get_variant, list_models, list_variants, register_model, unregister_model

# Every other variant file (mae_vit_small.py, ...) registers itself on import: adding the file is enough.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("mae_vit_")):
    importlib.import_module(f"{__name__}.{_module}")


def create_model(
    name: str,
    *,
    checkpoint_path: str | Path | None = None,
    interpolate_pos_embed: bool = False,
    **overrides: Any,
) -> MaskedAutoencoderViT:
    """Build a registered variant, e.g. `create_model("mae_vit_large_patch16", norm_pix_loss=True)`.

    Without `checkpoint_path`: the official random initialisation. With it: the fast path (timm's
    convention) builds on the meta device, memory-maps the file and takes its tensors as the weights,
    with the checks of `load_pretrained`; `model.load_report` says what was loaded. An encoder-only file
    leaves the decoder with the official random initialisation (the report warns).

    Keyword overrides are `MAEConfig` fields. An unknown name or field raises ValueError listing the
    valid ones; a checkpoint that does not fit raises `mae.CheckpointError`.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    if checkpoint_path is None:
        return _REGISTRY[name](**overrides)
    from ..loading import create_from_checkpoint  # no cycle: mae.loading imports no model (see its docstring)

    return create_from_checkpoint(
        _REGISTRY[name], checkpoint_path, interpolate_pos_embed=interpolate_pos_embed, **overrides
    )


__all__ = [
    "MAEViTBase",
    "MAEViTHuge",
    "MAEViTLarge",
    "Variant",
    "create_model",
    "get_variant",
    "list_models",
    "list_variants",
    "mae_vit_base_patch16",
    "mae_vit_base_patch16_dec512d8b",
    "mae_vit_huge_patch14",
    "mae_vit_huge_patch14_dec512d8b",
    "mae_vit_large_patch16",
    "mae_vit_large_patch16_dec512d8b",
    "register_model",
    "unregister_model",
]
