"""Attention: SDPA path equals timm's attention bit for bit; the manual path stays within 1e-5."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mae.attention import Attention, set_fused_attn
from mae.transformer import Block


@given(heads=st.integers(1, 4), head_dim=st.integers(1, 16), n=st.integers(1, 20), b=st.integers(1, 3))
def test_manual_path_matches_sdpa(heads: int, head_dim: int, n: int, b: int) -> None:
    attn = Attention(heads * head_dim, heads)
    x = torch.randn(b, n, heads * head_dim)
    with torch.no_grad():
        fused = attn(x)
        attn.fused = False
        manual = attn(x)
    torch.testing.assert_close(manual, fused, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("dim", "heads"), [(768, 12), (512, 16), (1280, 16), (24, 3)])
def test_equals_timm_attention(dim: int, heads: int) -> None:
    import timm.layers as timm_layers

    ours = Attention(dim, heads)
    theirs = timm_layers.Attention(dim, heads, qkv_bias=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 50, dim)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
        ours.fused, theirs.fused_attn = False, False
        assert torch.equal(ours(x), theirs(x))  # the written-out paths too: the same operations in the same order


def test_keys_are_the_official_fused_layout() -> None:
    attn = Attention(64, 4)
    assert {k: tuple(v.shape) for k, v in attn.state_dict().items()} == {
        "qkv.weight": (192, 64),
        "qkv.bias": (192,),
        "proj.weight": (64, 64),
        "proj.bias": (64,),
    }
    assert attn.scale == 16**-0.5


def test_set_fused_attn_switches_every_attention() -> None:
    blocks = torch.nn.Sequential(*[Block(16, 2, 4.0, torch.nn.LayerNorm) for _ in range(3)])
    set_fused_attn(blocks, False)
    assert [m.fused for m in blocks.modules() if isinstance(m, Attention)] == [False] * 3
    set_fused_attn(blocks, True)
    assert [m.fused for m in blocks.modules() if isinstance(m, Attention)] == [True] * 3


def test_dim_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match="dim \\(10\\) must be divisible by num_heads \\(4\\)"):
        Attention(10, 4)
