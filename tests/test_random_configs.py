"""Random small configurations: keys, shapes and forward equal to transformers built from the same
configuration, for any configuration a developer might register. A registered variant gets the per-variant
checks as well (bit equality at batch 1, init order and statistics: test_mae.py, test_variants.py)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mae


@st.composite
def configs(draw: st.DrawFn) -> mae.MAEConfig:
    patch = draw(st.sampled_from([2, 3, 4, 7, 8]))
    heads, dec_heads = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return mae.MAEConfig(
        img_size=patch * draw(st.integers(1, 5)),
        patch_size=patch,
        in_chans=draw(st.integers(1, 4)),
        embed_dim=heads * draw(st.sampled_from([8, 12, 16])),
        depth=draw(st.integers(1, 3)),
        num_heads=heads,
        decoder_embed_dim=dec_heads * draw(st.sampled_from([8, 16])),
        decoder_depth=draw(st.integers(1, 2)),
        decoder_num_heads=dec_heads,
        mlp_ratio=draw(st.sampled_from([1.0, 2.0, 2.5, 4.0])),
        norm_pix_loss=draw(st.booleans()),
    )


@settings(max_examples=int(__import__("os").environ.get("MAE_EXAMPLES", 40)))
@given(
    config=configs(),
    batch=st.integers(1, 3),
    ratio=st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_random_configuration_equals_transformers(config: mae.MAEConfig, batch: int, ratio: float, seed: int) -> None:
    from transformers import ViTMAEForPreTraining

    from reference.hf import build_hf, hf_config, hf_forward, official_to_hf

    torch.manual_seed(seed)
    model = mae.MaskedAutoencoderViT(config).eval()
    sd = model.state_dict()
    with torch.device("meta"):
        reference_shapes = {k: tuple(v.shape) for k, v in ViTMAEForPreTraining(hf_config(config)).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in official_to_hf(sd).items()} == reference_shapes
    hf = build_hf(config, sd)

    imgs = torch.randn(batch, config.in_chans, config.img_size, config.img_size)
    with torch.no_grad():
        torch.manual_seed(seed)
        loss, pred, mask = model(imgs, mask_ratio=ratio)
        torch.manual_seed(seed)
        hf_loss, hf_pred, hf_mask, _ = hf_forward(hf, imgs, ratio)
    assert torch.equal(mask, hf_mask)
    # Not bit for bit here: at some small widths the CPU BLAS picks different kernels for our fused
    # [3D x D] qkv projection and transformers' three [D x D] ones, so q, k, v can differ in the last
    # bit, and the blocks carry that on (measured over 600 examples: up to 1.5e-6 absolute on outputs
    # near 1). At the official widths the kernels agree and test_mae.py asserts bit equality.
    torch.testing.assert_close(pred, hf_pred, atol=1e-6, rtol=1e-5)
    if mask.sum() == 0:  # mask ratio 0, or too few patches to remove one: 0 / 0 in both
        assert loss.isnan() and hf_loss.isnan()
    else:
        torch.testing.assert_close(loss, hf_loss, atol=1e-6, rtol=1e-5)
