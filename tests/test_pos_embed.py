"""Fixed 2-D sin-cos tables: the official layout, equality with transformers, and interpolation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mae.pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed

dims = st.integers(1, 48).map(lambda k: 4 * k)


@given(dim=dims, h=st.integers(1, 9), w=st.integers(1, 9))
def test_structure_column_half_then_row_half(dim: int, h: int, w: int) -> None:
    table = get_2d_sincos_pos_embed(dim, (h, w), cls_token=True, dtype=torch.float64)
    assert table.shape == (1 + h * w, dim)
    assert torch.all(table[0] == 0)  # class token row
    grid = table[1:].reshape(h, w, dim)
    q = dim // 4
    col_half, row_half = grid[..., : dim // 2], grid[..., dim // 2 :]
    # First half depends on the column only, second half on the row only.
    assert torch.equal(col_half, col_half[:1].expand(h, w, -1))
    assert torch.equal(row_half, row_half[:, :1].expand(h, w, -1))
    # Each half is [sin | cos] of position x frequency, frequencies 1 / 10000^(i / q).
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)
    cols = torch.arange(w, dtype=torch.float64)[:, None] * omega
    rows = torch.arange(h, dtype=torch.float64)[:, None] * omega
    torch.testing.assert_close(col_half[0], torch.cat([cols.sin(), cols.cos()], 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(row_half[:, 0], torch.cat([rows.sin(), rows.cos()], 1), rtol=0, atol=1e-12)


@given(dim=dims, g=st.integers(1, 16))
def test_float32_table_is_the_float64_table_rounded(dim: int, g: int) -> None:
    t32 = get_2d_sincos_pos_embed(dim, g, cls_token=True)
    assert t32.dtype == torch.float32
    assert torch.equal(t32, get_2d_sincos_pos_embed(dim, g, cls_token=True, dtype=torch.float64).float())


def test_without_cls_token_and_square_int_grid() -> None:
    assert torch.equal(get_2d_sincos_pos_embed(64, 5), get_2d_sincos_pos_embed(64, (5, 5), cls_token=True)[1:])


def test_dim_not_divisible_by_4() -> None:
    with pytest.raises(ValueError, match="embed_dim \\(6\\) must be divisible by 4"):
        get_2d_sincos_pos_embed(6, 4)


@pytest.mark.parametrize(("dim", "grid"), [(768, 14), (1024, 14), (1280, 16), (512, 14), (512, 16), (64, 4), (36, 7)])
def test_equals_transformers_table_bit_for_bit(dim: int, grid: int) -> None:
    from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

    theirs = build_2d_sinusoidal_position_embedding(grid, grid, dim, cls_token=True)
    # transformers builds [row | column] and swaps the halves to the official [column | row] layout.
    half = dim // 2
    theirs = torch.cat([theirs[..., half:], theirs[..., :half]], dim=-1)
    assert torch.equal(get_2d_sincos_pos_embed(dim, grid, cls_token=True), theirs)


def test_interpolate_same_size_is_identity() -> None:
    table = get_2d_sincos_pos_embed(64, 14, cls_token=True)[None]
    assert interpolate_pos_embed(table, 14) is table


@pytest.mark.parametrize(("old", "new"), [(14, 28), (14, 7), (16, 24), (4, (3, 5))])
def test_interpolate_equals_transformers_and_keeps_cls(old: int, new: int | tuple[int, int]) -> None:
    from transformers import ViTMAEConfig
    from transformers.models.vit_mae.modeling_vit_mae import ViTMAEEmbeddings

    dim, p = 32, 4
    table = torch.randn(1, 1 + old * old, dim)
    embeddings = ViTMAEEmbeddings(ViTMAEConfig(hidden_size=dim, image_size=old * p, patch_size=p))
    embeddings.position_embeddings.data.copy_(table)
    nh, nw = (new, new) if isinstance(new, int) else new
    ours = interpolate_pos_embed(table, new)
    theirs = embeddings.interpolate_pos_encoding(torch.zeros(1, 1 + nh * nw, dim), nh * p, nw * p)
    assert ours.shape == (1, 1 + nh * nw, dim)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours[:, 0], table[:, 0])


def test_interpolate_keeps_dtype_and_checks_shapes() -> None:
    table = get_2d_sincos_pos_embed(32, 4, cls_token=True, dtype=torch.bfloat16)[None]
    assert interpolate_pos_embed(table, 6).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="expected a position table \\[1, E \\+ L, D\\]"):
        interpolate_pos_embed(table[0], 6)
    with pytest.raises(ValueError, match="15 patch rows after 2 extra token\\(s\\), which is not a square grid"):
        interpolate_pos_embed(table, 6, num_extra_tokens=2)
