"""MAEEncoder: parity with timm's MAE encoders (full size, and random small configurations)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import mae
from helpers import VARIANTS, assert_bit_equal, full_model, small_config


def unshuffle_latent(latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """[N, 1 + L, D] in shuffled order (mask ratio 0) -> patch order, class token first."""
    patches = torch.gather(latent[:, 1:], 1, ids_restore.unsqueeze(-1).expand(-1, -1, latent.shape[-1]))
    return torch.cat([latent[:, :1], patches], dim=1)


@pytest.mark.parametrize("variant", [pytest.param(v, marks=pytest.mark.xdist_group(v)) for v in VARIANTS])
def test_features_equal_timm_mae_encoder(variant: str) -> None:
    from reference.timm_encoder import build_timm_encoder

    model = full_model(variant)
    encoder_weights = {k: v for k, v in model.state_dict().items() if not _is_decoder_key(k)}
    timm_model = build_timm_encoder(variant, encoder_weights)
    imgs = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = timm_model.forward_features(imgs)
        ours = model.forward_features(imgs)
        torch.manual_seed(0)
        latent, mask, ids_restore = model.forward_encoder(imgs, mask_ratio=0.0)
    assert ours.shape == (1, 1 + model.config.num_patches, model.config.embed_dim)
    assert_bit_equal(ours, theirs, "features vs timm")  # the same kernels on the same shapes
    # The masked path at ratio 0, un-shuffled: the same features up to float rounding, since its tokens go
    # through the products in another (shuffled) row order, which changes the BLAS blocking.
    assert mask.sum() == 0
    torch.testing.assert_close(unshuffle_latent(latent, ids_restore), theirs, atol=1e-5, rtol=0)


def _is_decoder_key(key: str) -> bool:
    return key.startswith("decoder_") or key == "mask_token"


@given(
    patch=st.sampled_from([2, 4, 7, 8]),
    grid=st.integers(1, 4),
    chans=st.integers(1, 4),
    heads=st.integers(1, 4),
    head_dim=st.sampled_from([4, 8]),
    depth=st.integers(1, 3),
    ratio=st.sampled_from([1.0, 2.0, 4.0]),
    seed=st.integers(0, 2**16),
)
def test_random_small_encoders_equal_timm(
    patch: int, grid: int, chans: int, heads: int, head_dim: int, depth: int, ratio: float, seed: int
) -> None:
    import timm.models.vision_transformer as vit

    dim = heads * head_dim  # a multiple of 4, as the sin-cos table needs
    torch.manual_seed(seed)
    ours = mae.MAEEncoder(
        img_size=patch * grid, patch_size=patch, in_chans=chans, embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=ratio, decoder_embed_dim=8, decoder_num_heads=2,
    ).eval()  # fmt: skip
    theirs = vit.VisionTransformer(
        img_size=patch * grid, patch_size=patch, in_chans=chans, embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=ratio, qkv_bias=True, num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    ).eval()  # fmt: skip
    assert list(theirs.state_dict()) == list(ours.state_dict())
    theirs.load_state_dict(ours.state_dict(), strict=True)
    imgs = torch.randn(2, chans, patch * grid, patch * grid)
    with torch.no_grad():
        assert_bit_equal(ours.forward_features(imgs), theirs.forward_features(imgs), "features vs timm")


@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.0])
def test_masked_encoder_equals_transformers_vitmae_model(ratio: float) -> None:
    """`MAEEncoder(imgs, ratio)` and `forward_encoder`: transformers' `ViTMAEModel` (the encoder half of
    `ViTMAEForPreTraining`) with the same weights and the same global seed: same mask, same shuffle,
    same visible-token features."""
    from reference.hf import build_hf

    config = small_config(embed_dim=16, num_heads=2, depth=1)
    torch.manual_seed(0)
    weights = mae.MaskedAutoencoderViT(config).state_dict()
    encoder = mae.MAEEncoder(config)
    encoder.load_state_dict({k: v for k, v in weights.items() if not _is_decoder_key(k)}, strict=True)
    hf = build_hf(config, weights)
    hf.config.mask_ratio = ratio
    imgs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(5)
        theirs = hf.vit(pixel_values=imgs)
        for ours in (encoder, encoder.forward_encoder):
            torch.manual_seed(5)
            latent, mask, ids_restore = ours(imgs, ratio)
            assert torch.equal(mask, theirs.mask) and torch.equal(ids_restore, theirs.ids_restore)
            # Small widths: the BLAS may pick other kernels for our fused qkv (see test_random_configs.py).
            torch.testing.assert_close(latent, theirs.last_hidden_state, atol=1e-6, rtol=1e-5)
    assert latent.shape == (2, 1 + int(16 * (1 - ratio)), 16)


def test_bad_ratio_fails_before_any_work() -> None:
    encoder = mae.MAEEncoder(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="mask_ratio must be"):
        encoder(torch.randn(1, 3, 16, 16), mask_ratio=1.5)
