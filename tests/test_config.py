"""MAEConfig: derived sizes and the ValueErrors for impossible configurations."""

from __future__ import annotations

import dataclasses

import pytest

from mae import MAEConfig, MaskedAutoencoderViT
from mae.config import resolve_config


def test_defaults_are_the_official_class_defaults() -> None:
    c = MAEConfig()
    assert (c.img_size, c.patch_size, c.in_chans) == (224, 16, 3)
    assert (c.embed_dim, c.depth, c.num_heads) == (1024, 24, 16)
    assert (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads) == (512, 8, 16)
    assert (c.mlp_ratio, c.norm_pix_loss, c.norm_eps) == (4.0, False, 1e-6)
    assert (c.grid_size, c.num_patches, c.patch_dim) == (14, 196, 768)


def test_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        MAEConfig().depth = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(embed_dim=770, num_heads=12), "embed_dim (770) must be divisible by num_heads (12)"),
        (dict(decoder_embed_dim=500, decoder_num_heads=16), "decoder_embed_dim (500) must be divisible by"),
        (dict(embed_dim=6, num_heads=3), "embed_dim (6) must be divisible by 4"),
        (dict(img_size=230), "img_size (230) must be divisible by patch_size (16)"),
        (dict(img_size=(224, 160)), "Non-square inputs are not supported"),
        (dict(depth=0), "depth must be a positive int"),
        (dict(in_chans=2.0), "in_chans must be a positive int"),
        (dict(patch_size=True), "patch_size must be a positive int"),
        (dict(mlp_ratio=0), "mlp_ratio must be a positive number"),
        (dict(mlp_ratio=0.0001), "gives an empty MLP hidden layer"),
        (dict(norm_pix_loss=1), "norm_pix_loss must be a bool"),
        (dict(norm_eps=0.0), "norm_eps must be a positive float"),
    ],
)
def test_invalid_configuration_raises_value_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MAEConfig(**overrides)  # type: ignore[arg-type]


def test_unknown_override_lists_valid_fields() -> None:
    with pytest.raises(ValueError, match=r"unknown configuration field.*embed_dims.*valid fields: img_size"):
        resolve_config(None, {"embed_dims": 3})
    with pytest.raises(ValueError, match="unknown configuration field"):
        MaskedAutoencoderViT(depthh=2)


def test_config_argument_must_be_a_config() -> None:
    with pytest.raises(TypeError, match="config must be an MAEConfig"):
        resolve_config({"depth": 2}, {})  # type: ignore[arg-type]
