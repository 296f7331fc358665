"""Parity with the official code (facebookresearch/mae), built from $MAE_OFFICIAL_REPO.

Skipped, with the reason, when the variable is unset: the official code is never part of this
repository. With it set, these tests prove: the same seed gives bit-identical weights, the same keys in
the same order, the same sin-cos tables, and bit-identical forward outputs.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import mae
from helpers import VARIANTS, small_config
from mae.pos_embed import get_2d_sincos_pos_embed
from reference import official

pytestmark = pytest.mark.skipif(official.skip_reason() is not None, reason=str(official.skip_reason()))


@pytest.mark.parametrize("variant", [pytest.param(v, marks=pytest.mark.xdist_group(v)) for v in VARIANTS])
def test_same_seed_same_weights_and_same_forward(variant: str) -> None:
    torch.manual_seed(0)
    theirs = official.build_official(variant).eval()
    torch.manual_seed(0)
    ours = mae.create_model(VARIANTS[variant]).eval()
    sd_theirs, sd_ours = theirs.state_dict(), ours.state_dict()
    assert list(sd_ours) == list(sd_theirs)
    for key in sd_theirs:
        assert torch.equal(sd_ours[key], sd_theirs[key]), key
    assert [n for n, p in ours.named_parameters() if not p.requires_grad] == [
        n for n, p in theirs.named_parameters() if not p.requires_grad
    ]
    imgs = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for ratio in (0.75, 0.0, 0.9):
            torch.manual_seed(3)
            loss_t, pred_t, mask_t = theirs(imgs, mask_ratio=ratio)
            torch.manual_seed(3)
            loss_o, pred_o, mask_o = ours(imgs, mask_ratio=ratio)
            assert torch.equal(mask_o, mask_t) and torch.equal(pred_o, pred_t)
            assert torch.equal(loss_o, loss_t) or (loss_o.isnan() and loss_t.isnan())


@settings(max_examples=15)
@given(
    dim=st.integers(1, 40).map(lambda k: 4 * k),
    grid=st.integers(1, 20),
)
def test_sincos_table_equals_official(dim: int, grid: int) -> None:
    theirs = torch.from_numpy(official.official_sincos(dim, grid, cls_token=True)).float()
    assert torch.equal(get_2d_sincos_pos_embed(dim, grid, cls_token=True), theirs)


@pytest.mark.parametrize(("dim", "grid"), [(768, 14), (1024, 14), (1280, 16), (512, 14), (512, 16)])
def test_official_sizes_sincos_tables(dim: int, grid: int) -> None:
    theirs = torch.from_numpy(official.official_sincos(dim, grid, cls_token=True)).float()
    assert torch.equal(get_2d_sincos_pos_embed(dim, grid, cls_token=True), theirs)


@settings(max_examples=15)
@given(
    patch=st.sampled_from([2, 4, 8]),
    grid=st.integers(1, 4),
    depth=st.integers(1, 2),
    norm_pix=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_small_configurations_equal_official(patch: int, grid: int, depth: int, norm_pix: bool, seed: int) -> None:
    chans = 3  # the official patchify/unpatchify hard-code 3 channels
    config = small_config(img_size=patch * grid, patch_size=patch, depth=depth, norm_pix_loss=norm_pix)
    torch.manual_seed(seed)
    theirs = official.build_official_custom(
        img_size=config.img_size, patch_size=patch, in_chans=chans, embed_dim=config.embed_dim, depth=depth,
        num_heads=config.num_heads, decoder_embed_dim=config.decoder_embed_dim,
        decoder_depth=config.decoder_depth, decoder_num_heads=config.decoder_num_heads,
        mlp_ratio=config.mlp_ratio, norm_layer=partial(nn.LayerNorm, eps=1e-6), norm_pix_loss=norm_pix,
    ).eval()  # fmt: skip
    torch.manual_seed(seed)
    ours = mae.MaskedAutoencoderViT(config).eval()
    sd_t, sd_o = theirs.state_dict(), ours.state_dict()
    assert list(sd_o) == list(sd_t) and all(torch.equal(sd_o[k], sd_t[k]) for k in sd_t)
    imgs = torch.randn(2, chans, config.img_size, config.img_size)
    with torch.no_grad():
        torch.manual_seed(seed)
        loss_t, pred_t, mask_t = theirs(imgs, mask_ratio=0.5)
        torch.manual_seed(seed)
        loss_o, pred_o, mask_o = ours(imgs, mask_ratio=0.5)
    assert torch.equal(mask_o, mask_t) and torch.equal(pred_o, pred_t)
    assert torch.equal(loss_o, loss_t) or (loss_o.isnan() and loss_t.isnan())
