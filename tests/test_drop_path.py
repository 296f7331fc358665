"""Stochastic depth in the pretraining model (`MaskedAutoencoderViT(..., drop_path_rate=r)`).

The encoder's blocks drop their residual branches per sample, at rates rising linearly from 0 to r over
the blocks; the decoder has none (the official decoder has none). Checked against references: in
training, timm's `VisionTransformer(drop_path_rate=r)` (full images) and timm's blocks between
transformers' masking embeddings and decoder (the masked pretraining forward); in eval mode,
transformers' `ViTMAEForPreTraining`, which has no stochastic depth at all. Then, independently of
any implementation, what one block does to each sample: the whole branch dropped with probability
r or kept and scaled by 1 / (1 - r).
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

import mae
from helpers import assert_bit_equal, small_config

RATE = 0.4


def pretraining_model(rate: float = RATE, depth: int = 3) -> mae.MaskedAutoencoderViT:
    torch.manual_seed(0)
    return mae.MaskedAutoencoderViT(small_config(drop_path_rate=rate, depth=depth))


def timm_twin(model: mae.MaskedAutoencoderViT) -> nn.Module:
    """timm's ViT with the same encoder weights and the same stochastic depth rate."""
    import timm.models.vision_transformer as vit

    c = model.config
    twin = vit.VisionTransformer(
        img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim, depth=c.depth,
        num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=True, num_classes=0, drop_path_rate=c.drop_path_rate,
        norm_layer=partial(nn.LayerNorm, eps=c.norm_eps),
    )  # fmt: skip
    encoder = {k: v for k, v in model.state_dict().items() if not (k.startswith("decoder_") or k == "mask_token")}
    twin.load_state_dict(encoder, strict=True)
    return twin


def test_rates_per_block_equal_timms_and_the_decoder_has_none() -> None:
    model = pretraining_model(depth=5)
    twin = timm_twin(model)
    theirs = [getattr(b.drop_path1, "drop_prob", 0.0) for b in twin.blocks]  # timm: Identity at rate 0
    assert [b.drop_path1.drop_prob for b in model.blocks] == theirs == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert [b.drop_path2.drop_prob for b in model.blocks] == theirs
    assert all(b.drop_path1.drop_prob == b.drop_path2.drop_prob == 0 for b in model.decoder_blocks)


def test_training_features_equal_timm_drop_path() -> None:
    model = pretraining_model().train()
    twin = timm_twin(model).train()
    imgs = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(7)
        ours = model.forward_features(imgs)
        torch.manual_seed(7)
        theirs = twin.forward_features(imgs)
        model.eval()
        deterministic = model.forward_features(imgs)
    assert_bit_equal(ours, theirs, "train-mode features vs timm")  # the same draws, in the same order
    assert (ours - deterministic).abs().max() > 0.1  # training mode did drop and scale branches


def test_training_pretraining_forward_equals_transformers_with_timm_blocks() -> None:
    """The masked forward in train mode: transformers' embeddings and masking (explicit noise), timm's blocks
    and norm under the same seed, transformers' decoder (which has no stochastic depth) and loss."""
    from reference.hf import build_hf

    model = pretraining_model().train()
    hf = build_hf(model.config, model.state_dict())
    twin = timm_twin(model).train()
    imgs = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    noise = torch.rand(16, model.config.num_patches, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.manual_seed(11)
        loss, pred, mask = model(imgs, mask_ratio=0.75, noise=noise)
        tokens, h_mask, ids_restore = hf.vit.embeddings(imgs, noise=noise)
        torch.manual_seed(11)
        latent = twin.norm(twin.blocks(tokens))
        h_pred = hf.decoder(latent, ids_restore).logits
    assert torch.equal(mask, h_mask)
    # Small widths: the BLAS may pick other kernels for transformers' separate q/k/v (test_random_configs.py).
    torch.testing.assert_close(pred, h_pred, atol=1e-6, rtol=1e-5)
    target = hf.patchify(imgs)
    h_loss = (((h_pred - target) ** 2).mean(-1) * h_mask).sum() / h_mask.sum()  # transformers' pixel loss
    torch.testing.assert_close(loss, h_loss, atol=1e-6, rtol=1e-5)


def test_eval_mode_is_the_identity_and_draws_nothing() -> None:
    from reference.hf import build_hf, hf_forward

    model = pretraining_model().eval()
    hf = build_hf(model.config, model.state_dict())  # no stochastic depth there
    imgs = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.manual_seed(5)
        loss, pred, mask = model(imgs, mask_ratio=0.5)
        ours_next = torch.rand(1)
        torch.manual_seed(5)
        h_loss, h_pred, h_mask, _ = hf_forward(hf, imgs, 0.5)
        theirs_next = torch.rand(1)
    assert torch.equal(mask, h_mask)
    torch.testing.assert_close(pred, h_pred, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss, h_loss, atol=1e-6, rtol=1e-5)
    assert torch.equal(ours_next, theirs_next)  # the blocks drew no random numbers: only the masking noise


def test_each_sample_keeps_or_drops_a_whole_branch_with_probability_r_and_scaling() -> None:
    """One block at rate r, on many samples: per sample, each residual branch is either absent or present
    scaled by 1 / (1 - r), computed here from the block's own sub-layers; the drops are independent, per
    branch and per sample, at frequency r (2048 samples at r = 0.3: 5 standard deviations is +-0.051)."""
    rate = 0.3
    model = pretraining_model(rate=rate, depth=2)  # block 1 at the full rate
    block = model.blocks[1].train()
    n, keep = 2048, 1 - rate
    x = torch.randn(n, 5, model.config.embed_dim, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.manual_seed(8)
        out = block(x)
        attn = block.attn(block.norm1(x))
        kept_attn = (x + attn / keep, x)  # [0]: branch kept (scaled), [1]: branch dropped
        choices = []
        for first in kept_attn:
            mlp = block.mlp(block.norm2(first))
            choices += [first + mlp / keep, first]
        distance = torch.stack([(out - c).flatten(1).abs().amax(1) for c in choices], dim=1)  # [n, 4]
    # Each sample is exactly one of (attn, mlp) in {kept, dropped}^2, and clearly not the others.
    best = distance.argmin(1)
    assert distance.min(1).values.max() < 1e-5
    assert distance.topk(2, dim=1, largest=False).values[:, 1].min() > 1e-2
    attn_dropped, mlp_dropped = (best >= 2).float(), (best % 2 == 1).float()
    for frequency in (attn_dropped.mean(), mlp_dropped.mean()):
        assert abs(frequency.item() - rate) < 0.051
    both = (attn_dropped * mlp_dropped).mean().item()
    assert abs(both - rate**2) < 0.032  # independent draws: P(both) = r^2 (5 standard deviations)
