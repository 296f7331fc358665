"""The full MAE: official keys and sizes, the initialisation recipe, forward parity with transformers for
every registered variant, the manual attention path, the random-init loss, and errors for bad input.

The per-variant checks here run over the registry (`helpers.variant_params`); `tests/test_variants.py` has
the rest (key order, initialisation statistics and draw order, `mae verify`, the models table) and shows
that a newly registered variant is covered by all of them. The official counts stay pinned here."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

import mae
from helpers import VARIANTS, full_model, model_name, small_config, variant_params

# Official key counts (total, encoder, decoder) and parameter counts: DEVELOPERS.md "Hard facts".
KEY_COUNTS = {"base": (254, 150, 104), "large": (398, 294, 104), "huge": (494, 390, 104)}
PARAM_COUNTS = {"base": 111_907_840, "large": 329_541_888, "huge": 657_074_508}
BLOCK_SUFFIXES = [
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
]  # fmt: skip


def meta_model(variant: str) -> mae.MaskedAutoencoderViT:
    with torch.device("meta"):
        return mae.create_model(model_name(variant))


def official_key_order(encoder_keys: list[str], decoder_depth: int) -> list[str]:
    """The official full-model order, from the encoder's keys (timm's order) and the decoder's layout."""
    decoder = ["decoder_embed.weight", "decoder_embed.bias"]
    decoder += [f"decoder_blocks.{i}.{s}" for i in range(decoder_depth) for s in BLOCK_SUFFIXES]
    decoder += ["decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"]
    rest = [k for k in encoder_keys if k not in ("cls_token", "pos_embed")]
    return ["cls_token", "pos_embed", "mask_token", "decoder_pos_embed", *rest, *decoder]


# ----------------------------------------------------------------------------------------------- keys


@pytest.mark.parametrize("variant", VARIANTS)
def test_key_and_parameter_counts(variant: str) -> None:
    sd = meta_model(variant).state_dict()
    total, enc, dec = KEY_COUNTS[variant]
    decoder_keys = [k for k in sd if k.startswith("decoder_") or k == "mask_token"]
    assert (len(sd), len(sd) - len(decoder_keys), len(decoder_keys)) == (total, enc, dec)
    assert sum(t.numel() for t in sd.values()) == PARAM_COUNTS[variant]


@pytest.mark.parametrize("variant", VARIANTS)
def test_keys_in_official_order_and_encoder_equals_timm(variant: str) -> None:
    from reference.timm_encoder import timm_encoder_keys

    timm_keys = timm_encoder_keys(variant)
    model = meta_model(variant)
    with torch.device("meta"):
        encoder = mae.MAEEncoder(model.config)
        decoder = mae.MAEDecoder(model.config)
    # The standalone encoder is exactly the official encoder-only checkpoint layout (timm's keys).
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == timm_keys
    assert list(encoder.state_dict()) == list(timm_keys)
    expected = official_key_order(list(timm_keys), model.config.decoder_depth)
    assert list(model.state_dict()) == expected
    assert list(decoder.state_dict()) == [k for k in expected if k.startswith("decoder_") or k == "mask_token"]
    # The full model's names are its parameters' names: no renaming layer between them.
    assert [n for n, _ in model.named_parameters()] == expected


@pytest.mark.parametrize("variant", variant_params())
def test_shapes_equal_transformers(variant: str) -> None:
    from transformers import ViTMAEForPreTraining

    from reference.hf import hf_config, official_to_hf

    model = meta_model(variant)
    with torch.device("meta"):
        hf = ViTMAEForPreTraining(hf_config(model.config))
    ours = {k: tuple(v.shape) for k, v in official_to_hf(model.state_dict()).items()}
    assert ours == {k: tuple(v.shape) for k, v in hf.state_dict().items()}


@pytest.mark.parametrize("variant", variant_params())
def test_every_layernorm_has_eps_1e6(variant: str) -> None:
    model = meta_model(variant)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    c = model.config
    assert len(norms) == 2 * c.depth + 1 + 2 * c.decoder_depth + 1
    assert all(m.eps == 1e-6 for m in norms)
    assert model.norm.eps == model.decoder_norm.eps == 1e-6


def test_official_method_names_and_attributes(tiny: mae.MaskedAutoencoderViT) -> None:
    for name in ("patchify", "unpatchify", "random_masking", "forward_encoder", "forward_decoder", "forward_loss"):
        assert callable(getattr(tiny, name))
    assert tiny.patch_embed.patch_size[0] == 8  # the official demo reads it this way
    assert isinstance(tiny, mae.MAEEncoder) and isinstance(tiny, mae.MAEDecoder)
    assert mae.MaskedAutoencoder is mae.MaskedAutoencoderViT  # the design's name, an alias of the official one


# ------------------------------------------------------------------------------------- initialisation

# The recipe's statistics and the order of its random draws, for every registered variant: test_variants.py.


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return mae.MaskedAutoencoderViT(small_config()).state_dict()

    a, b, c = build(3), build(3), build(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])


# --------------------------------------------------------------------------------------------- parity


@contextmanager
def norm_pix(model: mae.MaskedAutoencoderViT, hf: object, enabled: bool) -> Iterator[None]:
    """Switch the reconstruction target of both models for one block."""
    saved = model.config
    model.config = dataclasses.replace(saved, norm_pix_loss=enabled)
    hf.config.norm_pix_loss = enabled  # type: ignore[attr-defined]
    try:
        yield
    finally:
        model.config = saved
        hf.config.norm_pix_loss = saved.norm_pix_loss  # type: ignore[attr-defined]


def assert_same_loss(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Bit equality; at mask_ratio 0 both are 0/0 = NaN (the official behaviour)."""
    assert torch.equal(ours, theirs) or (ours.isnan() and theirs.isnan()), (ours, theirs)


@pytest.mark.parametrize("variant", variant_params())
def test_forward_equals_transformers_bit_for_bit(variant: str) -> None:
    from reference.hf import build_hf, hf_forward

    model = full_model(variant)
    hf = build_hf(model.config, model.state_dict())
    c = model.config
    imgs = torch.randn(1, c.in_chans, c.img_size, c.img_size, generator=torch.Generator().manual_seed(1))
    length = model.config.num_patches
    with torch.no_grad():
        for ratio in (0.75, 0.0, 0.9):
            for target in (False, True):
                with norm_pix(model, hf, target):
                    torch.manual_seed(11)
                    theirs = hf_forward(hf, imgs, ratio)
                    torch.manual_seed(11)
                    loss, pred, mask = model(imgs, mask_ratio=ratio)
                    torch.manual_seed(11)
                    _, mask_only, ids_restore = model.random_masking(torch.zeros(1, length, 1), ratio)
                assert torch.equal(mask, theirs[2]) and torch.equal(mask_only, mask)
                assert torch.equal(ids_restore, theirs[3])
                assert torch.equal(pred, theirs[1]), (ratio, target, (pred - theirs[1]).abs().max())
                assert_same_loss(loss, theirs[0])
                assert pred.shape == (1, length, model.config.patch_dim)
                assert int(mask.sum()) == length - int(length * (1 - ratio))
        # An explicit noise tensor reaches the masking of both.
        noise = torch.rand(1, length, generator=torch.Generator().manual_seed(2))
        theirs = hf_forward(hf, imgs, 0.75, noise)
        loss, pred, mask = model(imgs, mask_ratio=0.75, noise=noise)
    assert torch.equal(mask, theirs[2]) and torch.equal(pred, theirs[1]) and torch.equal(loss, theirs[0])


@pytest.mark.parametrize("variant", variant_params())
def test_manual_attention_path_within_1e5(variant: str) -> None:
    model = full_model(variant)
    c = model.config
    imgs = torch.randn(1, c.in_chans, c.img_size, c.img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(7)
        loss, pred, mask = model(imgs)
        mae.set_fused_attn(model, False)
        try:
            torch.manual_seed(7)
            loss_m, pred_m, mask_m = model(imgs)
        finally:
            mae.set_fused_attn(model, True)
    assert torch.equal(mask, mask_m)
    torch.testing.assert_close(pred_m, pred, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss_m, loss, atol=1e-5, rtol=0)


@pytest.mark.xdist_group("large")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_init_loss_of_vit_large(seed: int) -> None:
    """ViT-L, random init, noise image, ratio 0.75, pixel target: loss ~1.74, equal to transformers'."""
    from reference.hf import build_hf, hf_forward

    if seed == 0:
        model = full_model("large")
    else:
        torch.manual_seed(seed)
        model = mae.create_model("mae_vit_large_patch16").eval()
    imgs = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.manual_seed(seed)
        loss, _, _ = model(imgs, mask_ratio=0.75)
        torch.manual_seed(seed)
        theirs = hf_forward(build_hf(model.config, model.state_dict()), imgs, 0.75)[0]
    assert 1.6 <= loss.item() <= 1.95, loss.item()
    assert torch.equal(loss, theirs)


# ------------------------------------------------------------------------------------ loss and grads


def test_every_trainable_parameter_gets_a_finite_gradient(tiny: mae.MaskedAutoencoderViT) -> None:
    tiny.train()
    loss, _, _ = tiny(torch.randn(2, 3, 32, 32), mask_ratio=0.5)
    loss.backward()
    for name, p in tiny.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name


def test_norm_pix_loss_normalises_each_patch(tiny: mae.MaskedAutoencoderViT) -> None:
    imgs = torch.randn(1, 3, 32, 32)
    target = tiny.patchify(imgs)
    normalised = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    mask = torch.tensor([[1.0] + [0.0] * 15])
    npl = mae.MaskedAutoencoderViT(dataclasses.replace(tiny.config, norm_pix_loss=True))
    assert torch.allclose(npl.forward_loss(imgs, normalised, mask), torch.tensor(0.0), atol=1e-10)
    # A zero prediction costs the mean square of the normalised target: the 1e-6 is inside the root.
    expected = (normalised[0, 0] ** 2).mean()
    torch.testing.assert_close(npl.forward_loss(imgs, torch.zeros_like(target), mask), expected, rtol=1e-7, atol=0)
    assert tiny.forward_loss(imgs, target, mask) == 0
    assert tiny.forward_loss(imgs, target + 2, mask) == 4
    # Only removed patches count: errors on visible patches cost nothing.
    wrong_where_visible = target.clone()
    wrong_where_visible[0, 1:] += 5.0
    assert tiny.forward_loss(imgs, wrong_where_visible, mask) == 0


def test_ratio_zero_loss_is_nan_like_the_official_code(tiny: mae.MaskedAutoencoderViT) -> None:
    loss, pred, mask = tiny(torch.randn(1, 3, 32, 32), mask_ratio=0.0)
    assert loss.isnan() and mask.sum() == 0 and torch.isfinite(pred).all()


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("imgs", "kwargs", "message"),
    [
        (torch.randn(3, 32, 32), {}, r"4 dimensions \[N, C, H, W\]"),
        (torch.randn(1, 4, 32, 32), {}, r"expected 3 channels"),
        (torch.randn(1, 3, 32, 24), {}, r"Non-square inputs are not supported"),
        (torch.randn(1, 3, 36, 36), {}, r"not divisible by the patch size 8"),
        (torch.randn(1, 3, 48, 48), {}, r"expected 32x32 images"),
        (torch.randn(1, 3, 32, 32), {"mask_ratio": 1.0}, r"mask_ratio must be in \[0, 1\)"),
        (torch.randn(1, 3, 32, 32), {"mask_ratio": -0.5}, r"mask_ratio must be in \[0, 1\)"),
        (torch.randn(2, 3, 32, 32), {"noise": torch.rand(2, 15)}, r"noise .* shape \[N, L\] = \[2, 16\]"),
        (torch.randn(2, 3, 32, 32), {"noise": torch.rand(1, 16)}, r"noise must be a tensor of shape"),
    ],
)
def test_bad_input_raises_value_error(
    tiny: mae.MaskedAutoencoderViT, imgs: torch.Tensor, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(imgs, **kwargs)  # type: ignore[arg-type]
