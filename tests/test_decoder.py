"""MAEDecoder on its own: official decoder keys, composition with the encoder, and input checks."""

from __future__ import annotations

import pytest
import torch

import mae


def test_decoder_keys_are_the_official_decoder_keys() -> None:
    with torch.device("meta"):
        decoder = mae.MAEDecoder(mae.MAEViTLarge.default_config)
    keys = list(decoder.state_dict())
    assert len(keys) == 104
    assert keys[:4] == ["mask_token", "decoder_pos_embed", "decoder_embed.weight", "decoder_embed.bias"]
    assert keys[-4:] == ["decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"]
    assert decoder.decoder_pred.out_features == 16 * 16 * 3
    assert decoder.decoder_pos_embed.requires_grad is False


def test_standalone_encoder_and_decoder_compose_to_the_full_model(tiny: mae.MaskedAutoencoderViT) -> None:
    sd = tiny.state_dict()
    encoder, decoder = mae.MAEEncoder(tiny.config), mae.MAEDecoder(tiny.config)
    encoder.load_state_dict({k: v for k, v in sd.items() if k in encoder.state_dict()}, strict=True)
    decoder.load_state_dict({k: v for k, v in sd.items() if k in decoder.state_dict()}, strict=True)
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(5)
        latent, mask, ids_restore = encoder(imgs, 0.5)
        pred = decoder(latent, ids_restore)
        torch.manual_seed(5)
        loss, pred_full, mask_full = tiny(imgs, 0.5)
    assert torch.equal(pred, pred_full) and torch.equal(mask, mask_full)
    assert torch.equal(tiny.forward_loss(imgs, pred, mask), loss)


def test_decoder_input_errors(tiny: mae.MaskedAutoencoderViT) -> None:
    latent, _, ids_restore = tiny.forward_encoder(torch.randn(2, 3, 32, 32), 0.5)
    with pytest.raises(ValueError, match=r"latent must be \[N, 1 \+ K, 32\]"):
        tiny.forward_decoder(latent[..., :8], ids_restore)
    with pytest.raises(ValueError, match=r"ids_restore must be \[N, L\] = \[2, 16\]"):
        tiny.forward_decoder(latent, ids_restore[:, :8])
    with pytest.raises(ValueError, match="more than the 16 patches"):
        tiny.forward_decoder(torch.randn(2, 20, 32), ids_restore)
