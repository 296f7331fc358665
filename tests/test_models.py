"""The registry: names (the official ones pinned), registration, factories, overrides, and errors."""

from __future__ import annotations

import pytest
import torch

import mae
from helpers import small_config
from mae.models import (
    get_variant,
    list_variants,
    mae_vit_base,
    mae_vit_huge,
    mae_vit_large,
    mae_vit_small,
    register_model,
    unregister_model,
)

# The official MAE release's names: pinned by hand, never read from the registry.
OFFICIAL_NAMES = [
    "mae_vit_base_patch16",
    "mae_vit_base_patch16_dec512d8b",
    "mae_vit_huge_patch14",
    "mae_vit_huge_patch14_dec512d8b",
    "mae_vit_large_patch16",
    "mae_vit_large_patch16_dec512d8b",
]


def test_list_models_has_every_official_name() -> None:
    assert mae.list_models(official=True) == OFFICIAL_NAMES
    assert mae.list_models() == sorted([*OFFICIAL_NAMES, "mae_vit_small_patch16"])
    assert [v.name for v in list_variants(official=False)] == ["mae_vit_small_patch16"]  # ViT-S: not a release


@pytest.mark.parametrize(
    ("name", "cls", "dims"),
    [
        ("mae_vit_base_patch16", mae.MAEViTBase, (16, 768, 12, 12)),
        ("mae_vit_large_patch16_dec512d8b", mae.MAEViTLarge, (16, 1024, 24, 16)),
        ("mae_vit_huge_patch14", mae.MAEViTHuge, (14, 1280, 32, 16)),
        ("mae_vit_small_patch16", mae_vit_small.MAEViTSmall, (16, 384, 12, 6)),
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


def _tiny(**overrides: object) -> mae.MaskedAutoencoderViT:
    return mae.MaskedAutoencoderViT(small_config(), **overrides)  # type: ignore[arg-type]


def test_register_and_unregister_a_variant() -> None:
    factory = register_model("mae_vit_tiny_patch8", _tiny, aliases=["mae_vit_tiny_patch8_dec16d1b"], label="tiny")
    try:
        assert factory is _tiny
        assert {"mae_vit_tiny_patch8", "mae_vit_tiny_patch8_dec16d1b"} <= set(mae.list_models())
        assert "mae_vit_tiny_patch8" not in mae.list_models(official=True)
        variant = get_variant("mae_vit_tiny_patch8_dec16d1b")  # an alias finds its variant
        assert (variant.name, variant.official, variant.display) == ("mae_vit_tiny_patch8", False, "tiny")
        model = mae.create_model("mae_vit_tiny_patch8_dec16d1b", norm_pix_loss=True)
        assert model.config == small_config(norm_pix_loss=True)
    finally:
        unregister_model("mae_vit_tiny_patch8")
    assert not {"mae_vit_tiny_patch8", "mae_vit_tiny_patch8_dec16d1b"} & set(mae.list_models())
    with pytest.raises(ValueError, match="unknown model 'mae_vit_tiny_patch8'"):
        mae.create_model("mae_vit_tiny_patch8")


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    [
        ("mae_vit_base_patch16", {}, ValueError, r"'mae_vit_base_patch16' already registered; choose another name"),
        ("mae_vit_new", {"aliases": ["mae_vit_large_patch16_dec512d8b"]}, ValueError, r"already registered"),
        ("mae_vit_new", {"aliases": ["mae_vit_new"]}, ValueError, r"a name is given twice"),
        ("mae-vit-new", {}, ValueError, r"must be a Python identifier.*got 'mae-vit-new'"),
        ("mae_vit_new", {"official": "yes"}, TypeError, r"official must be a bool"),
    ],
)
def test_bad_registration_is_refused_and_changes_nothing(
    name: str, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    before = mae.list_models()
    with pytest.raises(error, match=message):
        register_model(name, _tiny, **kwargs)  # type: ignore[arg-type]
    assert mae.list_models() == before


def test_a_factory_must_be_callable() -> None:
    with pytest.raises(TypeError, match="'mae_vit_new': the factory must be callable; got str"):
        register_model("mae_vit_new", "not a factory")  # type: ignore[type-var]
    assert "mae_vit_new" not in mae.list_models()


def test_official_variants_cannot_be_unregistered() -> None:
    with pytest.raises(ValueError, match="'mae_vit_base_patch16' is an official variant"):
        unregister_model("mae_vit_base_patch16_dec512d8b")
    assert mae.list_models(official=True) == OFFICIAL_NAMES
