"""`mae.look.attention_map`: the class token's attention in the last block equals timm's attention matrix
(its written-out path, caught where it is dropped out) and a softmax(q k^T / sqrt(d)) written out in numpy
from the block's weights; the per-pixel maps hold each patch's weight over its pixels."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn

import mae
from mae.look.attention_figure import attention_for_image
from mae.look.attention_map import cls_attention, upsample
from mae.look.encoder_file import LoadedEncoder
from mae.train.data import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import small_config


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def test_cls_attention_equals_timm_and_a_written_out_softmax() -> None:
    import timm.models.vision_transformer as vit

    config = small_config(depth=3, num_heads=4)
    torch.manual_seed(0)
    ours = mae.MAEEncoder(config).eval()
    theirs = vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, qkv_bias=True, num_classes=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    ).eval()  # fmt: skip
    theirs.load_state_dict(ours.state_dict(), strict=True)
    last = theirs.blocks[-1]
    last.attn.fused_attn = False  # timm's written-out path: the weights pass through attn_drop
    caught: dict[str, torch.Tensor] = {}
    last.attn.attn_drop.register_forward_hook(lambda m, i, o: caught.__setitem__("attn", i[0]))
    last.register_forward_pre_hook(lambda m, i: caught.__setitem__("block_input", i[0]))
    imgs = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs.forward_features(imgs)
        maps = cls_attention(ours, imgs)
    assert maps.shape == (3, 4, 16)
    torch.testing.assert_close(maps, caught["attn"][:, :, 0, 1:], atol=1e-6, rtol=1e-5)

    # The same weights written out in float64 from the last block's input and its norm1 / qkv weights.
    sd = {k: v.double().numpy() for k, v in ours.state_dict().items()}
    x = _layer_norm(
        caught["block_input"].double().numpy(), sd["blocks.2.norm1.weight"], sd["blocks.2.norm1.bias"], 1e-6
    )
    qkv = x @ sd["blocks.2.attn.qkv.weight"].T + sd["blocks.2.attn.qkv.bias"]  # [N, T, 3D]
    q, k = qkv[..., :32], qkv[..., 32:64]
    expected = np.zeros((3, 4, 16))
    for h in range(4):
        qh, kh = q[:, 0, h * 8 : (h + 1) * 8], k[:, :, h * 8 : (h + 1) * 8]  # [N, 8], [N, T, 8]
        scores = np.einsum("nd,ntd->nt", qh, kh) / np.sqrt(8)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        expected[:, h] = (weights / weights.sum(-1, keepdims=True))[:, 1:]
    np.testing.assert_allclose(maps.double().numpy(), expected, atol=1e-6)
    # A row over all 1 + L tokens sums to 1: the patches' share plus the class token's own is 1.
    assert bool((maps.sum(-1) < 1).all())


def test_figure_maps_are_each_patch_weight_over_its_pixels() -> None:
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config()).eval()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))
    maps = attention_for_image(LoadedEncoder(model, "full", "tiny", IMAGENET_MEAN, IMAGENET_STD, ""), image)
    normalised = (image - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    per_patch = cls_attention(model, normalised[None])[0].reshape(4, 4, 4).numpy()  # [heads, 4, 4]
    expected = np.stack([np.kron(per_patch[h], np.ones((8, 8))) for h in range(4)])
    np.testing.assert_array_equal(maps.numpy(), expected.astype(np.float32))
    assert upsample(torch.zeros(1, 2, 9), 3, 2).shape == (1, 2, 6, 6)
