"""Block and Mlp: equal to timm's pre-norm Block bit for bit; the official initialisation recipe."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from mae.transformer import Block, Mlp, init_official


def test_mlp_uses_exact_gelu_and_int_hidden_width() -> None:
    mlp = Mlp(10, int(10 * 4.0))
    assert isinstance(mlp.act, nn.GELU) and mlp.act.approximate == "none"
    assert mlp.fc1.out_features == 40 and mlp.fc2.in_features == 40
    x = torch.randn(3, 10)
    with torch.no_grad():
        expected = mlp.fc2(0.5 * mlp.fc1(x) * (1 + torch.erf(mlp.fc1(x) / math.sqrt(2))))
    torch.testing.assert_close(mlp(x), expected, atol=1e-6, rtol=1e-6)


def test_block_keys_in_official_order() -> None:
    block = Block(8, 2, 4.0, partial(nn.LayerNorm, eps=1e-6))
    assert list(block.state_dict()) == [
        "norm1.weight", "norm1.bias",
        "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
        "norm2.weight", "norm2.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    ]  # fmt: skip


@pytest.mark.parametrize(("dim", "heads", "ratio"), [(768, 12, 4.0), (512, 16, 4.0), (40, 5, 2.5)])
def test_block_equals_timm_block(dim: int, heads: int, ratio: float) -> None:
    import timm.models.vision_transformer as vt

    norm = partial(nn.LayerNorm, eps=1e-6)
    ours = Block(dim, heads, ratio, norm)
    theirs = vt.Block(dim, heads, ratio, qkv_bias=True, norm_layer=norm)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 17, dim)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_init_official_recipe_statistics() -> None:
    torch.manual_seed(0)
    block = Block(256, 8, 4.0, partial(nn.LayerNorm, eps=1e-6))
    for p in block.parameters():
        nn.init.normal_(p)  # scramble, so the recipe has to set everything
    init_official(block)
    for name, m in block.named_modules():
        if isinstance(m, nn.Linear):
            bound = math.sqrt(6.0 / (m.in_features + m.out_features))  # xavier-uniform
            w = m.weight
            assert w.abs().max() <= bound, name
            assert abs(w.std().item() - bound / math.sqrt(3)) < 0.02 * bound, name  # U(-a, a) has std a/sqrt(3)
            assert abs(w.mean().item()) < 0.01 * bound, name
            assert torch.all(m.bias == 0), name
        elif isinstance(m, nn.LayerNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name
