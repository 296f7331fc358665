"""patchify / unpatchify and PatchEmbed: layout, round trips, and errors for bad images."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mae.patch_embed import PatchEmbed, check_images, patchify, unpatchify


@given(
    n=st.integers(1, 3),
    c=st.integers(1, 5),
    p=st.integers(1, 6),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
)
def test_round_trip_any_channels_patch_and_size(n: int, c: int, p: int, h: int, w: int) -> None:
    imgs = torch.randn(n, c, h * p, w * p)
    x = patchify(imgs, p)
    assert x.shape == (n, h * w, p * p * c)
    assert torch.equal(unpatchify(x, p, (h, w)), imgs)
    if h == w:
        assert torch.equal(unpatchify(x, p), imgs)


@given(p=st.integers(1, 5), h=st.integers(1, 4), w=st.integers(1, 4), c=st.integers(1, 4))
def test_patch_layout_is_row_major_patches_then_row_column_channel(p: int, h: int, w: int, c: int) -> None:
    imgs = torch.arange(c * h * p * w * p, dtype=torch.float32).reshape(1, c, h * p, w * p)
    x = patchify(imgs, p)
    for i in range(h):
        for j in range(w):
            patch = imgs[0, :, i * p : (i + 1) * p, j * p : (j + 1) * p]  # [C, p, p]
            assert torch.equal(x[0, i * w + j], patch.permute(1, 2, 0).reshape(-1))


def test_patchify_equals_transformers() -> None:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    for c, p, size in [(3, 16, 224), (1, 7, 28), (4, 4, 16)]:
        cfg = ViTMAEConfig(
            image_size=size,
            patch_size=p,
            num_channels=c,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=8,
            decoder_hidden_size=8,
            decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2,
            decoder_intermediate_size=8,
        )
        with torch.device("meta"):
            hf = ViTMAEForPreTraining(cfg)
        imgs = torch.randn(2, c, size, size)
        assert torch.equal(patchify(imgs, p), hf.patchify(imgs))
        assert torch.equal(unpatchify(patchify(imgs, p), p), hf.unpatchify(hf.patchify(imgs)))


def test_patch_embed_shapes_and_official_attributes() -> None:
    pe = PatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=12)
    assert pe.patch_size == (8, 8) and pe.img_size == (32, 32) and pe.grid_size == (4, 4)
    assert pe.num_patches == 16
    assert pe.proj.kernel_size == (8, 8) and pe.proj.stride == (8, 8)
    out = pe(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 16, 12)
    # Token i*w + j is the projection of patch (i, j).
    imgs = torch.randn(1, 3, 32, 32)
    expected = torch.nn.functional.linear(patchify_channel_first(imgs, 8), pe.proj.weight.flatten(1), pe.proj.bias)
    torch.testing.assert_close(pe(imgs), expected, atol=1e-5, rtol=1e-5)


def patchify_channel_first(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """Patches flattened as (channel, row, column), the Conv2d weight's own layout."""
    n, c, h, w = imgs.shape
    return imgs.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)


@pytest.mark.parametrize(
    ("imgs", "message"),
    [
        (torch.randn(3, 32, 32), r"4 dimensions \[N, C, H, W\]; got shape \(3, 32, 32\).*unsqueeze\(0\)"),
        (torch.randn(1, 1, 3, 32, 32), r"got shape \(1, 1, 3, 32, 32\) \(5 dimensions\)"),
        (torch.randn(2, 1, 32, 32), r"expected 3 channels \(in_chans=3\); got 1"),
        (torch.randn(2, 32, 32, 3), r"expected 3 channels \(in_chans=3\); got 32"),
        (torch.randn(1, 3, 30, 30), r"image size 30x30 is not divisible by the patch size 8"),
        (torch.randn(1, 3, 32, 24), r"expected square 32x32 images; got 32x24.*Non-square"),
        (torch.randn(1, 3, 64, 64), r"expected 32x32 images.*got 64x64.*img_size=64"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), r"expected floating-point images.*torch.uint8"),
    ],
)
def test_bad_images_raise_value_error(imgs: torch.Tensor, message: str) -> None:
    pe = PatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=12)
    with pytest.raises(ValueError, match=message):
        pe(imgs)


def test_non_tensor_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor"):
        check_images([[1.0]], 3)


def test_patchify_errors() -> None:
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        patchify(torch.randn(1, 3, 224, 220), 16)
    with pytest.raises(ValueError, match="4 dimensions"):
        patchify(torch.randn(3, 224, 224), 16)
    assert patchify(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2).dtype == torch.uint8


def test_unpatchify_errors() -> None:
    with pytest.raises(ValueError, match="3 dimensions"):
        unpatchify(torch.randn(4, 12), 2)
    with pytest.raises(ValueError, match="last dimension 10 is not p\\*p\\*C for patch size 2"):
        unpatchify(torch.randn(1, 4, 10), 2)
    with pytest.raises(ValueError, match="6 patches do not form a square grid; pass grid_size"):
        unpatchify(torch.randn(1, 6, 12), 2)
    with pytest.raises(ValueError, match="grid_size 2x2 = 4 patches, but x has 6"):
        unpatchify(torch.randn(1, 6, 12), 2, (2, 2))
