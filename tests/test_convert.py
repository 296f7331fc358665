"""Conversions official <-> safetensors <-> transformers, with round trips and the reference loading ours."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mae
from mae.convert import convert, format_for
from mae.safetensors_io import load_file

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "tiny_rgb.pth"


def official() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE, weights_only=True)["model"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)  # official order kept
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_format_follows_the_destination() -> None:
    assert format_for("x.pth") == "official" and format_for("x.safetensors") == "safetensors"
    assert format_for("some/folder") == "transformers"


def test_official_safetensors_round_trip(tmp_path: Path) -> None:
    convert(FIXTURE, tmp_path / "a.safetensors")
    assert_same(load_file(tmp_path / "a.safetensors"), official())
    convert(tmp_path / "a.safetensors", tmp_path / "b.pth")
    assert_same(torch.load(tmp_path / "b.pth", weights_only=True)["model"], official())


def test_half_precision_is_kept(tmp_path: Path) -> None:
    torch.save({"model": {k: v.half() for k, v in official().items()}}, tmp_path / "h.pth")
    convert(tmp_path / "h.pth", tmp_path / "h.safetensors")
    assert {t.dtype for t in load_file(tmp_path / "h.safetensors").values()} == {torch.float16}


def test_transformers_folder_loads_in_transformers_and_round_trips(tmp_path: Path) -> None:
    import transformers

    folder = convert(FIXTURE, tmp_path / "hf", num_heads=4, decoder_num_heads=2)
    hf, info = transformers.ViTMAEForPreTraining.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.layer_norm_eps == 1e-6
    model = mae.MaskedAutoencoderViT(mae.MAEConfig(**_tiny())).eval()
    model.load_pretrained(FIXTURE)
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(0)
        ours = model(imgs)
        torch.manual_seed(0)
        theirs = hf.eval()(pixel_values=imgs)
    torch.testing.assert_close(ours[1], theirs.logits, atol=1e-6, rtol=1e-5)  # small widths: see test_random_configs
    assert torch.equal(ours[2], theirs.mask)
    convert(folder, tmp_path / "back.pth", num_heads=4)
    assert_same(torch.load(tmp_path / "back.pth", weights_only=True)["model"], official())


def test_encoder_only_becomes_a_vitmae_model(tmp_path: Path) -> None:
    import transformers

    encoder = {k: v for k, v in official().items() if not (k.startswith("decoder_") or k == "mask_token")}
    torch.save({"model": encoder}, tmp_path / "enc.pth")
    folder = convert(tmp_path / "enc.pth", tmp_path / "hf", num_heads=4)
    hf, info = transformers.ViTMAEModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    from mae.checkpoint import transformers_to_official

    theirs = transformers_to_official(hf.state_dict())
    assert set(theirs) == set(encoder) and all(torch.equal(theirs[k], v) for k, v in encoder.items())
    loaded = mae.MAEEncoder(mae.MAEConfig(**_tiny()))
    loaded.load_pretrained(folder)  # a transformers folder loads directly too
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in encoder.items())


def test_official_variant_needs_no_head_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    with torch.device("meta"):
        config = mae.MAEViTBase.default_config
    encoder = mae.MAEEncoder(config)
    torch.save({"model": encoder.state_dict()}, tmp_path / "mae_pretrain_vit_base.pth")
    folder = convert(tmp_path / "mae_pretrain_vit_base.pth", tmp_path / "hf")
    import json

    cfg = json.loads((folder / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["hidden_size"], cfg["architectures"]) == (12, 768, ["ViTMAEModel"])


def test_refusals(tmp_path: Path) -> None:
    (tmp_path / "exists.pth").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="exists; choose another name"):
        convert(FIXTURE, tmp_path / "exists.pth")
    assert (tmp_path / "exists.pth").read_bytes() == b"x"
    with pytest.raises(mae.CheckpointError, match="number of heads is unknown"):
        convert(FIXTURE, tmp_path / "hf")
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").iterdir())
    with pytest.raises(ValueError, match="unknown format"):
        convert(FIXTURE, tmp_path / "x.pth", to="onnx")


def _tiny() -> dict[str, int]:
    return dict(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, decoder_embed_dim=16, decoder_depth=1,
        decoder_num_heads=2,
    )  # fmt: skip
