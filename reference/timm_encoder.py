"""Adapter to timm's MAE encoders `vit_{base_patch16,large_patch16,huge_patch14}_224.mae` (Apache-2.0).

These are plain `VisionTransformer`s whose keys equal the official encoder-only checkpoint (150 / 294 /
390 keys); built with `pretrained=False` (no download), then given our weights strictly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

TIMM_NAMES = {
    "base": "vit_base_patch16_224.mae",
    "large": "vit_large_patch16_224.mae",
    "huge": "vit_huge_patch14_224.mae",
}


def build_timm_encoder(variant: str, encoder_state_dict: dict[str, Tensor] | None = None) -> Any:
    """timm's MAE encoder for `variant` ("base", "large", "huge"), in eval mode.

    With `encoder_state_dict` (official encoder keys), the model is built on the meta device and the
    weights are assigned strictly; without it, timm's own random initialisation is kept.
    """
    import timm

    if variant not in TIMM_NAMES:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(TIMM_NAMES)}")
    if encoder_state_dict is None:
        return timm.create_model(TIMM_NAMES[variant], pretrained=False).eval()
    with torch.device("meta"):
        model = timm.create_model(TIMM_NAMES[variant], pretrained=False)
    model.load_state_dict(encoder_state_dict, strict=True, assign=True)
    return model.eval()


def timm_encoder_keys(variant: str) -> dict[str, tuple[int, ...]]:
    """timm's encoder keys and shapes, in order, without allocating weights."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(TIMM_NAMES[variant], pretrained=False)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
