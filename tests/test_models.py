"""The registry: names, factories, overrides, and errors for unknown names."""

from __future__ import annotations

import pytest
import torch

import mae
from mae.models import mae_vit_base, mae_vit_huge, mae_vit_large

OFFICIAL_NAMES = [
    "mae_vit_base_patch16",
    "mae_vit_base_patch16_dec512d8b",
    "mae_vit_huge_patch14",
    "mae_vit_huge_patch14_dec512d8b",
    "mae_vit_large_patch16",
    "mae_vit_large_patch16_dec512d8b",
]


def test_list_models_has_every_official_name() -> None:
    assert mae.list_models() == OFFICIAL_NAMES


@pytest.mark.parametrize(
    ("name", "cls", "dims"),
    [
        ("mae_vit_base_patch16", mae.MAEViTBase, (16, 768, 12, 12)),
        ("mae_vit_large_patch16_dec512d8b", mae.MAEViTLarge, (16, 1024, 24, 16)),
        ("mae_vit_huge_patch14", mae.MAEViTHuge, (14, 1280, 32, 16)),
    ],
)
def test_create_model_builds_the_variant(name: str, cls: type, dims: tuple[int, ...]) -> None:
    with torch.device("meta"):
        model = mae.create_model(name)
    assert type(model) is cls
    c = model.config
    assert (c.patch_size, c.embed_dim, c.depth, c.num_heads) == dims
    assert (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads, c.mlp_ratio) == (512, 8, 16, 4.0)


def test_short_names_are_the_long_factories() -> None:
    assert mae_vit_base.mae_vit_base_patch16 is mae_vit_base.mae_vit_base_patch16_dec512d8b
    assert mae_vit_large.mae_vit_large_patch16 is mae_vit_large.mae_vit_large_patch16_dec512d8b
    assert mae_vit_huge.mae_vit_huge_patch14 is mae_vit_huge.mae_vit_huge_patch14_dec512d8b


def test_overrides_reach_the_config() -> None:
    with torch.device("meta"):
        model = mae.create_model("mae_vit_base_patch16", norm_pix_loss=True, img_size=448)
    assert model.config.norm_pix_loss is True
    assert model.config.img_size == 448
    assert model.pos_embed.shape == (1, 28 * 28 + 1, 768)
    assert mae.MAEViTBase.default_config.img_size == 224  # the variant's default is untouched


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'mae_vit_giant'.*mae_vit_base_patch16, "):
        mae.create_model("mae_vit_giant")


def test_unknown_override_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"unknown configuration field.*norm_pix"):
        mae.create_model("mae_vit_base_patch16", norm_pix=True)
