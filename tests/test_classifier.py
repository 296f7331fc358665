"""The fine-tuning classifier: keys and outputs equal timm's VisionTransformer, the official loading
expectations, layer-wise learning-rate decay groups, stochastic depth."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.models import vision_transformer
from torch import nn

import mae
from helpers import assert_bit_equal, small_config
from reference import official


def timm_twin(model: mae.VisionTransformer) -> nn.Module:
    """timm's VisionTransformer of the same architecture and pooling, holding `model`'s weights."""
    c = model.config
    theirs = vision_transformer.VisionTransformer(
        img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim, depth=c.depth,
        num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=True, num_classes=model.num_classes,
        global_pool="avg" if model.global_pool else "token", drop_path_rate=c.drop_path_rate,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )  # fmt: skip
    assert list(theirs.state_dict()) == list(model.state_dict())
    theirs.load_state_dict(model.state_dict(), strict=True)
    return theirs


@settings(max_examples=20)
@given(
    global_pool=st.booleans(),
    num_classes=st.sampled_from([0, 1, 7]),
    depth=st.integers(1, 3),
    patch=st.sampled_from([4, 8]),
    seed=st.integers(0, 1000),
)
def test_small_classifiers_equal_timm(global_pool: bool, num_classes: int, depth: int, patch: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = mae.VisionTransformer(
        small_config(depth=depth, patch_size=patch), num_classes=num_classes, global_pool=global_pool
    ).eval()
    theirs = timm_twin(model).eval()
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_bit_equal(model.forward_features(imgs), theirs.forward_features(imgs), "features")
        assert_bit_equal(model(imgs), theirs(imgs), "logits")
        pre = model.forward_head(model.forward_features(imgs), pre_logits=True)
        assert_bit_equal(pre, theirs.forward_head(theirs.forward_features(imgs), pre_logits=True), "pre-logits")


@pytest.mark.xdist_group("base")
@pytest.mark.parametrize("global_pool", [True, False])
def test_vit_base_equals_timm(global_pool: bool) -> None:
    torch.manual_seed(0)
    model = mae.vit_base_patch16(global_pool=global_pool).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_()  # a head that matters for the comparison
    theirs = timm_twin(model).eval()
    imgs = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_bit_equal(model.forward_features(imgs), theirs.forward_features(imgs), "features")
        assert_bit_equal(model(imgs), theirs(imgs), "logits")


def test_stochastic_depth_matches_timm_in_training() -> None:
    torch.manual_seed(0)
    model = mae.VisionTransformer(small_config(depth=3, drop_path_rate=0.5), num_classes=5)
    theirs = timm_twin(model)
    rates = [b.drop_path1.drop_prob for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.25, 0.5])
    assert rates == [getattr(b.drop_path1, "drop_prob", 0.0) for b in theirs.blocks]
    imgs = torch.randn(8, 3, 32, 32)
    torch.manual_seed(3)
    ours = model.train()(imgs)
    torch.manual_seed(3)
    assert torch.equal(ours, theirs.train()(imgs))
    with torch.no_grad():
        assert torch.equal(model.eval()(imgs), model(imgs))  # no randomness in eval mode


def test_keys_and_initialisation() -> None:
    pooled = mae.VisionTransformer(small_config(), num_classes=10)
    keys = list(pooled.state_dict())
    assert keys[-4:] == ["fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"]
    assert not any(k.startswith("norm.") for k in keys)
    token = mae.VisionTransformer(small_config(), num_classes=10, global_pool=False)
    assert list(token.state_dict())[-4:] == ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    assert pooled.pos_embed.requires_grad  # trained when fine-tuning
    assert abs(pooled.head.weight.std().item() - 2e-5) < 5e-6 and torch.all(pooled.head.bias == 0)
    assert torch.all(pooled.fc_norm.weight == 1)
    with torch.device("meta"):
        assert mae.vit_large_patch16().config.embed_dim == 1024 and mae.vit_huge_patch14().config.patch_size == 14
    with pytest.raises(ValueError, match="num_classes must be an int >= 0"):
        mae.VisionTransformer(small_config(), num_classes=-1)
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\)"):
        mae.VisionTransformer(small_config(), drop_path_rate=1.0)


def test_full_size_key_counts() -> None:
    with torch.device("meta"):
        counts = [len(f().state_dict()) for f in (mae.vit_base_patch16, mae.vit_large_patch16, mae.vit_huge_patch14)]
    assert counts == [152, 296, 392]  # the encoder keys without norm, plus fc_norm and head


def test_every_parameter_gets_a_finite_gradient() -> None:
    model = mae.VisionTransformer(small_config(drop_path_rate=0.1), num_classes=4).train()
    nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ------------------------------------------------------------------------------------------- loading

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "tiny_rgb.pth"


def test_pretrain_file_loads_with_the_official_expectations(tmp_path: Path) -> None:
    weights = torch.load(FIXTURE, weights_only=True)["model"]
    encoder_only = {k: v for k, v in weights.items() if not (k.startswith("decoder_") or k == "mask_token")}
    torch.save({"model": encoder_only}, tmp_path / "pretrain.pth")
    torch.save({"model": weights}, tmp_path / "full.pth")
    for name in ("pretrain.pth", "full.pth"):
        model = mae.VisionTransformer(small_config(), num_classes=10)
        report = model.load_pretrained(tmp_path / name)
        assert set(report.missing) == {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
        unexpected = set(report.unexpected) - {k for k in weights if k.startswith("decoder_") or k == "mask_token"}
        assert unexpected == {"norm.weight", "norm.bias"}
        assert all(
            torch.equal(model.state_dict()[k], encoder_only[k]) for k in encoder_only if not k.startswith("norm")
        )
    token = mae.VisionTransformer(small_config(), num_classes=10, global_pool=False)
    report = token.load_pretrained(tmp_path / "pretrain.pth")
    assert set(report.missing) == {"head.weight", "head.bias"} and not report.unexpected


def test_fine_tuned_file_loads_strictly_and_gives_timms_logits(tmp_path: Path) -> None:
    torch.manual_seed(1)
    theirs = vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10, global_pool="avg",
        qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    ).eval()  # fmt: skip
    path = tmp_path / "mae_finetuned_tiny.pth"
    torch.save({"model": theirs.state_dict(), "epoch": 99}, path)
    model = mae.VisionTransformer(small_config(), num_classes=10).eval()
    report = model.load_pretrained(path)
    assert report.kind == "classifier" and not report.missing and not report.unexpected
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_bit_equal(model(imgs), theirs(imgs), "logits")
    with pytest.raises(mae.CheckpointError, match=r"head for 10 classes; this model has 5.*num_classes=10"):
        mae.VisionTransformer(small_config(), num_classes=5).load_pretrained(path)
    with pytest.raises(mae.CheckpointError, match=r"global average pooling.*global_pool=True"):
        mae.VisionTransformer(small_config(), num_classes=10, global_pool=False).load_pretrained(path)
    with pytest.raises(mae.CheckpointError, match=r"fine-tuned classifier.*load_pretrained"):
        mae.MAEEncoder(small_config()).load_pretrained(path)


def test_other_resolution_by_interpolation(tmp_path: Path) -> None:
    torch.save(torch.load(FIXTURE, weights_only=True), tmp_path / "w.pth")
    model = mae.VisionTransformer(small_config(img_size=64), num_classes=3)
    with pytest.raises(mae.CheckpointError, match="interpolate_pos_embed=True"):
        model.load_pretrained(tmp_path / "w.pth")
    report = model.load_pretrained(tmp_path / "w.pth", interpolate_pos_embed=True)
    assert model.pos_embed.shape == (1, 65, 32) and any("resized from 32x32 to 64x64" in n for n in report.notes)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


# --------------------------------------------------------------------------------- lr decay groups


def test_layer_wise_lr_decay_groups() -> None:
    model = mae.VisionTransformer(small_config(depth=3), num_classes=4)
    groups = mae.param_groups_lrd(model, weight_decay=0.05, layer_decay=0.5)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == sum(1 for p in model.parameters() if p.requires_grad)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    scale = {n: by_param[id(p)]["lr_scale"] for n, p in named.items()}
    decay = {n: by_param[id(p)]["weight_decay"] for n, p in named.items()}
    num_layers = 4  # 3 blocks + 1
    assert scale["cls_token"] == scale["pos_embed"] == scale["patch_embed.proj.weight"] == 0.5**num_layers
    assert scale["blocks.0.attn.qkv.weight"] == 0.5**3 and scale["blocks.2.mlp.fc2.bias"] == 0.5**1
    assert scale["head.weight"] == scale["fc_norm.weight"] == 1.0
    assert decay["blocks.0.attn.qkv.weight"] == 0.05 and decay["head.weight"] == 0.05
    assert decay["blocks.0.attn.qkv.bias"] == decay["fc_norm.weight"] == decay["cls_token"] == decay["pos_embed"] == 0.0
    optimizer = torch.optim.AdamW(groups, lr=1e-3)  # the groups are a valid optimizer input
    assert len(optimizer.param_groups) == len(groups)


@pytest.mark.skipif(official.skip_reason() is not None, reason=str(official.skip_reason()))
def test_lr_decay_groups_equal_the_official_ones() -> None:
    lr_decay = official.official_module("util.lr_decay")
    model = mae.VisionTransformer(small_config(depth=3), num_classes=4)
    ours = mae.param_groups_lrd(model, weight_decay=0.05, layer_decay=0.65)
    theirs = lr_decay.param_groups_lrd(model, 0.05, no_weight_decay_list=model.no_weight_decay(), layer_decay=0.65)
    assert [(g["lr_scale"], g["weight_decay"], [id(p) for p in g["params"]]) for g in ours] == [
        (g["lr_scale"], g["weight_decay"], [id(p) for p in g["params"]]) for g in theirs
    ]
    assert all(math.isfinite(g["lr_scale"]) for g in ours)
