"""mae.checkpoint without a model: prefixes, layouts, the transformers key conversion (held equal to the
reference adapter's independent one), and what `describe_state_dict` reads from keys and shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mae
from mae.checkpoint import (
    describe_state_dict,
    detect_layout,
    official_to_transformers,
    strip_prefixes,
    transformers_to_official,
)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "tiny_rgb.pth"


def weights() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE, weights_only=True)["model"]


def test_strip_prefixes_only_when_every_key_has_them() -> None:
    sd = {"module._orig_mod.a": torch.zeros(1), "module._orig_mod.b": torch.zeros(1)}
    stripped, removed = strip_prefixes(sd)
    assert list(stripped) == ["a", "b"] and removed == ["module.", "_orig_mod."]
    assert strip_prefixes({"_orig_mod.module.a": torch.zeros(1)})[1] == ["_orig_mod.", "module."]
    mixed = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert strip_prefixes(mixed) == (mixed, [])


def test_layouts() -> None:
    assert detect_layout(list(weights())) == "official"
    assert detect_layout(["vit.layers.0.attention.q_proj.weight"]) == "transformers-5"
    assert detect_layout(["vit.encoder.layer.0.attention.attention.query.weight"]) == "transformers-4"
    assert detect_layout(["embeddings.patch_embeddings.projection.weight"]) == "transformers-5"


def test_conversion_equals_the_reference_adapter_and_round_trips() -> None:
    from reference.hf import hf_to_official, official_to_hf

    sd = weights()
    ours, theirs = official_to_transformers(sd), official_to_hf(sd)
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    back, reference_back = transformers_to_official(ours), hf_to_official(theirs)
    assert set(back) == set(sd) == set(reference_back)
    assert all(torch.equal(back[k], sd[k]) and torch.equal(reference_back[k], sd[k]) for k in sd)


def test_encoder_only_converts_to_vitmae_model_keys() -> None:
    encoder = {k: v for k, v in weights().items() if not (k.startswith("decoder_") or k == "mask_token")}
    hf = official_to_transformers(encoder)
    assert all(k.startswith(("embeddings.", "layers.", "layernorm.")) for k in hf)
    back = transformers_to_official(hf)
    assert set(back) == set(encoder)


def test_incomplete_attention_is_an_error() -> None:
    hf = official_to_transformers(weights())
    hf.pop("vit.layers.0.attention.k_proj.weight")
    with pytest.raises(mae.CheckpointError, match=r"incomplete attention projection blocks.0.attn.qkv.weight: k"):
        transformers_to_official(hf)


@pytest.mark.parametrize(
    ("name", "kind", "tensors", "label"),
    [
        ("mae_vit_base_patch16", "full", 254, "ViT-Base/16, 12 blocks, dim 768, 224x224"),
        ("mae_vit_large_patch16", "full", 398, "ViT-Large/16, 24 blocks, dim 1024, 224x224"),
        ("mae_vit_huge_patch14", "full", 494, "ViT-Huge/14, 32 blocks, dim 1280, 224x224"),
    ],
)
def test_describe_reads_the_architecture(name: str, kind: str, tensors: int, label: str) -> None:
    with torch.device("meta"):
        sd = mae.create_model(name).state_dict()
    info = describe_state_dict(sd, "x.pth")
    assert (info.kind, info.num_tensors, info.describe(), info.model_name) == (kind, tensors, label, name)
    assert (info.decoder_embed_dim, info.decoder_depth, info.in_chans) == (512, 8, 3)


def test_describe_other_kinds() -> None:
    sd = weights()
    assert describe_state_dict({**sd, "head.weight": torch.zeros(2, 32)}, "x").kind == "classifier"
    assert describe_state_dict({k: v for k, v in sd.items() if k.startswith("decoder")}, "x").kind == "decoder"
    assert describe_state_dict({"a": torch.zeros(1)}, "x").kind == "unknown"
    assert describe_state_dict({"a": torch.zeros(1)}, "x").describe() == "no recognisable ViT encoder"
    info = describe_state_dict(sd, "data/mae_pretrain_vit_huge_full.pth")
    assert info.official is not None and info.norm_pix_loss is True
