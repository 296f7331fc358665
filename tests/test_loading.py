"""Loading checkpoints: every family and spelling, the fast path, the report, and typed errors that leave
the model unchanged. Checkpoints are made from the references (transformers, timm) in the official
layout, as the real files cannot be downloaded here."""

from __future__ import annotations

import argparse
import ast
import logging
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mae
from helpers import small_config
from mae.checkpoint import describe_state_dict

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PACKAGE = Path(mae.__file__).resolve().parent


def reference_weights() -> dict[str, torch.Tensor]:
    """The tiny_rgb fixture: made by transformers, official keys and order (see fixtures/)."""
    return torch.load(FIXTURES / "tiny_rgb.pth", weights_only=True)["model"]


def tiny_config() -> mae.MAEConfig:
    return small_config()  # the tiny_rgb fixture's architecture


def encoder_part(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if not (k.startswith("decoder_") or k == "mask_token")}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def assert_holds(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    sd = model.state_dict()
    for key, value in weights.items():
        assert torch.equal(sd[key], value.to(sd[key].dtype)), key


# ---------------------------------------------------------------------------------------- families


def test_full_checkpoint_loads_strictly_and_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    weights = reference_weights()
    path = tmp_path / "mae_visualize_vit_large.pth"  # an official name: the report can tell the target
    torch.save({"model": weights}, path)
    model = mae.MaskedAutoencoderViT(tiny_config())
    with caplog.at_level(logging.INFO, logger="mae"):
        report = model.load_pretrained(path)
    assert_holds(model, weights)
    assert report.kind == "full" and report.loaded == list(weights) and not report.missing and not report.unexpected
    assert report.norm_pix_loss is False and not report.warnings
    assert model.load_report is report
    assert "loaded mae_visualize_vit_large.pth, a full checkpoint (encoder + decoder)" in caplog.text


def test_encoder_only_checkpoint_warns_that_the_decoder_is_random(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights = encoder_part(reference_weights())
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": weights}, path)
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(tiny_config())
    decoder_before = {k: v.clone() for k, v in model.state_dict().items() if k not in weights}
    with caplog.at_level(logging.INFO, logger="mae"):
        report = model.load_pretrained(path)
    assert report.kind == "encoder" and sorted(report.missing) == sorted(decoder_before)
    assert_holds(model, weights)
    assert_holds(model, decoder_before)  # the decoder keeps its initialisation
    assert any("meaningless (about 1.87 on noise)" in w and "visualize" in w for w in report.warnings)
    assert any(r.levelno == logging.WARNING and "encoder-only" in r.message for r in caplog.records)


def test_full_checkpoint_into_an_encoder_leaves_the_decoder_out(tmp_path: Path) -> None:
    weights = reference_weights()
    path = tmp_path / "full.pth"
    torch.save({"model": weights}, path)
    encoder = mae.MAEEncoder(tiny_config())
    report = encoder.load_pretrained(path)
    assert_holds(encoder, encoder_part(weights))
    assert sorted(report.unexpected) == sorted(set(weights) - set(encoder_part(weights)))
    assert any("this model has no decoder" in n for n in report.notes)


def test_official_key_counts_are_recognised_for_every_variant() -> None:
    for name, counts in [
        ("mae_vit_base_patch16", (254, 150)),
        ("mae_vit_large_patch16", (398, 294)),
        ("mae_vit_huge_patch14", (494, 390)),
    ]:
        with torch.device("meta"):
            sd = mae.create_model(name).state_dict()
        full = describe_state_dict(sd, f"{name}.pth")
        encoder = describe_state_dict(encoder_part(sd), "x.pth")
        assert (full.kind, full.num_tensors, full.model_name) == ("full", counts[0], name)
        assert (encoder.kind, encoder.num_tensors, encoder.model_name) == ("encoder", counts[1], name)


@pytest.mark.xdist_group("base")
def test_full_size_checkpoint_made_by_transformers_gives_transformers_outputs(tmp_path: Path) -> None:
    """ViT-B/16 end to end: transformers' own random model, saved in the official format, loaded by the
    fast path, gives transformers' outputs bit for bit."""
    from transformers import ViTMAEForPreTraining

    from reference.hf import hf_config, hf_forward, hf_to_official

    config = mae.MAEViTBase.default_config
    torch.manual_seed(0)
    with torch.device("meta"):
        hf = ViTMAEForPreTraining(hf_config(config))
    hf = hf.to_empty(device="cpu")
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.02)
    hf.eval()
    path = tmp_path / "mae_visualize_vit_base.pth"
    official = hf_to_official(hf.state_dict())
    assert len(official) == 254
    torch.save({"model": official}, path)
    model = mae.create_model("mae_vit_base_patch16", checkpoint_path=path).eval()
    imgs = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.manual_seed(1)
        loss, pred, mask = model(imgs)
        torch.manual_seed(1)
        h_loss, h_pred, h_mask, _ = hf_forward(hf, imgs, 0.75)
    assert torch.equal(mask, h_mask) and torch.equal(pred, h_pred) and torch.equal(loss, h_loss)


# ------------------------------------------------------------------------------------- fast path


def test_fast_path_equals_the_slow_path_and_keeps_the_file_intact(tmp_path: Path) -> None:
    weights = reference_weights()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": weights}, path)
    before = path.read_bytes()
    slow = mae.MaskedAutoencoderViT(tiny_config())
    slow.load_pretrained(path)
    fast = mae.create_model("mae_vit_base_patch16", checkpoint_path=path, **_tiny_overrides())
    assert list(fast.state_dict()) == list(slow.state_dict())
    assert_holds(fast, slow.state_dict())
    assert not any(p.is_meta for p in fast.parameters())
    assert {n for n, p in fast.named_parameters() if not p.requires_grad} == {"pos_embed", "decoder_pos_embed"}
    assert fast.load_report is not None and fast.load_report.kind == "full"
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(1.0)  # the file is mapped copy-on-write: training never writes to it
    assert path.read_bytes() == before


def _tiny_overrides() -> dict[str, object]:
    c = tiny_config()
    return dict(
        img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
        decoder_embed_dim=c.decoder_embed_dim, decoder_depth=c.decoder_depth, decoder_num_heads=c.decoder_num_heads,
    )  # fmt: skip


def test_fast_path_with_an_encoder_file_initialises_the_decoder(tmp_path: Path) -> None:
    path = tmp_path / "enc.pth"
    torch.save({"model": encoder_part(reference_weights())}, path)
    model = mae.create_model("mae_vit_base_patch16", checkpoint_path=path, **_tiny_overrides())
    assert not any(p.is_meta for p in model.parameters())
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {"pos_embed", "decoder_pos_embed"}
    assert torch.all(model.decoder_blocks[0].attn.qkv.bias == 0) and torch.all(model.decoder_norm.weight == 1)
    assert torch.isfinite(model.mask_token).all() and model.mask_token.abs().sum() > 0
    c = model.config
    from mae.pos_embed import get_2d_sincos_pos_embed

    assert torch.equal(model.decoder_pos_embed[0], get_2d_sincos_pos_embed(c.decoder_embed_dim, c.grid_size, True))
    loss, _, _ = model(torch.randn(1, 3, 32, 32))
    assert torch.isfinite(loss)


def _file_mappings(path: Path) -> list[tuple[int, int]]:
    """The address ranges where this process has `path` memory-mapped (Linux: /proc/self/maps)."""
    target = os.path.realpath(path)
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and os.path.realpath(fields[5].strip()) == target:
                low, high = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((low, high))
    return ranges


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_fast_path_maps_the_file_instead_of_copying_it(tmp_path: Path, suffix: str) -> None:
    """Every weight of the fast path lies inside the kernel's mapping of the checkpoint file (its pages are
    the file's, shared with the page cache); the slow path, which copies into a built model, has none there."""
    weights = reference_weights()
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".pth":
        torch.save({"model": weights}, path)
    else:
        from mae.safetensors_io import save_file

        save_file(weights, path)
    fast = mae.create_model("mae_vit_base_patch16", checkpoint_path=path, **_tiny_overrides())
    slow = mae.MaskedAutoencoderViT(tiny_config())
    slow.load_pretrained(path)
    regions = _file_mappings(path)
    assert regions, f"{path} is not mapped at all: the fast path copied its tensors"

    def mapped(t: torch.Tensor) -> bool:
        start = t.data_ptr()
        return any(low <= start and start + t.numel() * t.element_size() <= high for low, high in regions)

    assert [k for k, t in fast.state_dict().items() if not mapped(t)] == []
    assert [k for k, t in slow.state_dict().items() if mapped(t)] == []  # the check tells a copy apart


def test_create_model_interpolates_a_checkpoint_of_another_size(tmp_path: Path) -> None:
    """transformers' own ViTMAE at 64 px, saved in the official layout, through the fast path into a 96 px
    model: both position tables equal timm's bicubic resampling of the file's, every other tensor the file's."""
    from timm.layers import resample_abs_pos_embed
    from transformers import ViTMAEForPreTraining

    from reference.hf import hf_config, hf_to_official

    torch.manual_seed(0)
    hf = ViTMAEForPreTraining(hf_config(small_config(img_size=64)))
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.02)  # not the sin-cos tables: a resize of smooth tables would hide a wrong grid order
    official = hf_to_official(hf.state_dict())
    path = tmp_path / "mae_at_64px.pth"
    torch.save({"model": official}, path)
    overrides = {**_tiny_overrides(), "img_size": 96}
    with pytest.raises(mae.CheckpointError, match=r"is for 64x64 images \(64 patches\); this model is for 96x96"):
        mae.create_model("mae_vit_base_patch16", checkpoint_path=path, **overrides)
    model = mae.create_model("mae_vit_base_patch16", checkpoint_path=path, interpolate_pos_embed=True, **overrides)
    loaded = model.state_dict()
    for key in ("pos_embed", "decoder_pos_embed"):
        expected = resample_abs_pos_embed(official[key], new_size=[12, 12], num_prefix_tokens=1, antialias=False)
        assert loaded[key].shape == (1, 145, official[key].shape[-1])
        assert torch.equal(loaded[key], expected), key
    assert all(torch.equal(loaded[k], official[k]) for k in official if not k.endswith("pos_embed"))
    assert model.load_report is not None
    assert any("resized from 64x64 to 96x96" in n for n in model.load_report.notes)
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    assert torch.isfinite(model(torch.randn(1, 3, 96, 96))[0])


# --------------------------------------------------------------------------------- dependency direction

MODEL_MODULES = ("mae.encoder", "mae.decoder", "mae.mae", "mae.classifier", "mae.models")


def _mae_imports(module: str) -> set[str]:
    """The mae modules that `module`'s source imports anywhere: top level, inside functions, under TYPE_CHECKING."""
    parts = module.split(".")
    path = PACKAGE.parent.joinpath(*parts)
    is_package = path.is_dir()
    tree = ast.parse((path / "__init__.py" if is_package else path.with_suffix(".py")).read_text())
    package = parts if is_package else parts[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            stem = ".".join(x for x in (base, node.module or "") if x)
            names = [stem] + [f"{stem}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = PACKAGE.parent.joinpath(*name.split("."))
            if name.startswith("mae.") and (target.is_dir() or target.with_suffix(".py").is_file()):
                found.add(name)
    return found


def test_each_model_states_what_it_expects() -> None:
    """The expectations the loader plans from, against the official counts: 254 tensors in a full ViT-B, 150 in
    its encoder (so 104 in the decoder); the fine-tuning classifier's new head and fc_norm, its unused norm."""
    from mae.loading import ClassifierHead

    with torch.device("meta"):
        full = mae.create_model("mae_vit_base_patch16").checkpoint_expectation()
        encoder = mae.MAEEncoder(mae.MAEViTBase.default_config).checkpoint_expectation()
        pooled = mae.vit_base_patch16(num_classes=7).checkpoint_expectation()
        token = mae.vit_base_patch16(global_pool=False).checkpoint_expectation()
    assert (len(full.tensors), len(full.decoder), full.classifier) == (254, 104, None)
    assert set(full.tensors) - set(full.decoder) == set(encoder.tensors)
    assert (len(encoder.tensors), encoder.decoder, encoder.classifier) == (150, (), None)
    head = ("head.weight", "head.bias")
    assert pooled.classifier is not None and token.classifier is not None
    assert pooled.classifier == ClassifierHead(True, 7, new=pooled.classifier.new, unused=("norm.weight", "norm.bias"))
    assert set(pooled.classifier.new) == {*head, "fc_norm.weight", "fc_norm.bias"}
    assert token.classifier == ClassifierHead(False, 1000, new=head, unused=())
    assert full.config == mae.MAEViTBase.default_config


def test_loading_imports_no_model_class() -> None:
    """The dependency runs one way: models use the loader, and the loader (with everything it imports, in any
    scope) knows no model class; a model states what it expects (`checkpoint_expectation`)."""
    seen, todo = set(), ["mae.loading"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_mae_imports(module))
    assert {"mae.checkpoint", "mae.safetensors_io", "mae.config"} <= seen  # the walk follows imports
    assert sorted(m for m in seen if m.startswith(MODEL_MODULES)) == []
    # And at run time: mae.loading imported alone (the package's __init__, which imports every model, bypassed).
    code = (
        "import sys, types; package = types.ModuleType('mae'); "
        f"package.__path__ = [{str(PACKAGE)!r}]; sys.modules['mae'] = package; import mae.loading; "
        "print(sorted(m for m in sys.modules if m.startswith('mae.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = ast.literal_eval(out.strip())
    assert "mae.loading" in loaded and [m for m in loaded if m.startswith(MODEL_MODULES)] == []


# ------------------------------------------------------------------------------- containers, names


def _legacy_transformers_key(key: str) -> str:
    """transformers 5.x ViTMAE name -> the 4.x name."""
    key = re.sub(r"^vit\.layers\.", "vit.encoder.layer.", key)
    for new, old in [
        ("attention.q_proj", "attention.attention.query"),
        ("attention.k_proj", "attention.attention.key"),
        ("attention.v_proj", "attention.attention.value"),
        ("attention.o_proj", "attention.output.dense"),
        ("mlp.fc1", "intermediate.dense"),
        ("mlp.fc2", "output.dense"),
    ]:
        key = key.replace(new, old)
    return key


def spellings() -> dict[str, object]:
    weights = reference_weights()
    args = argparse.Namespace(model="mae_vit_large_patch16", norm_pix_loss=False, lr=1.5e-4)
    out: dict[str, object] = {
        "official with training state": {"model": weights, "optimizer": {"state": {}}, "epoch": 799, "args": args},
        "bare": weights,
        "state_dict": {"state_dict": weights},
        "DDP": {"model": {f"module.{k}": v for k, v in weights.items()}},
        "compiled": {f"_orig_mod.{k}": v for k, v in weights.items()},
        "DDP of compiled": {f"module._orig_mod.{k}": v for k, v in weights.items()},
        "compiled DDP": {f"_orig_mod.module.{k}": v for k, v in weights.items()},
        "fp16": {"model": {k: v.half() for k, v in weights.items()}},
        "bf16": {"model": {k: v.bfloat16() for k, v in weights.items()}},
        "float64": {k: v.double() for k, v in weights.items()},
    }
    return out


@pytest.mark.parametrize("fast", [False, True], ids=["load_pretrained", "create_model"])
@pytest.mark.parametrize("spelling", list(spellings()))
def test_every_spelling_loads(tmp_path: Path, spelling: str, fast: bool) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save(spellings()[spelling], path)
    if fast:
        model = mae.create_model("mae_vit_base_patch16", checkpoint_path=path, **_tiny_overrides())
        report = model.load_report
        assert report is not None
    else:
        model = mae.MaskedAutoencoderViT(tiny_config())
        report = model.load_pretrained(path)
    expected = reference_weights()
    if spelling in ("fp16", "bf16"):
        dtype = torch.float16 if spelling == "fp16" else torch.bfloat16
        expected = {k: v.to(dtype).float() for k, v in expected.items()}
        assert any("to float32" in n for n in report.notes)
    assert_holds(model, expected)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.isfinite(model(torch.randn(1, 3, 32, 32))[0])


def test_transformers_keys_5x_and_legacy_4x(tmp_path: Path) -> None:
    import transformers

    from reference.hf import build_hf

    weights = reference_weights()
    hf = build_hf(tiny_config(), weights)
    new = {k: v.contiguous() for k, v in hf.state_dict().items()}
    legacy = {_legacy_transformers_key(k): v for k, v in new.items()}
    # The legacy names are real: transformers itself still reads them.
    folder = tmp_path / "legacy"
    hf.config.save_pretrained(folder)
    from mae.safetensors_io import save_file

    save_file(legacy, folder / "model.safetensors", {"format": "pt"})
    reread = transformers.ViTMAEForPreTraining.from_pretrained(folder)
    assert all(torch.equal(reread.state_dict()[k], new[k]) for k in new)
    for name, sd in [("v5.pth", new), ("v4.pth", legacy), ("encoder_only_model.pth", _vitmae_model(new))]:
        torch.save(sd, tmp_path / name)
        model = mae.MaskedAutoencoderViT(tiny_config())
        report = model.load_pretrained(tmp_path / name)
        assert_holds(model, weights if report.kind == "full" else encoder_part(weights))
    assert "transformers-4" in mae.inspect_checkpoint(tmp_path / "v4.pth").layout
    assert "transformers-5" in mae.inspect_checkpoint(tmp_path / "v5.pth").layout


def _vitmae_model(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `ViTMAEModel` state dict (the encoder alone, no `vit.` prefix)."""
    return {k.removeprefix("vit."): v for k, v in sd.items() if k.startswith("vit.")}


def test_timm_mae_encoder_keys(tmp_path: Path) -> None:
    from functools import partial

    import timm

    c = tiny_config()
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
        qkv_bias=True, num_classes=0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    )  # fmt: skip
    torch.save(vit.state_dict(), tmp_path / "timm.pth")
    encoder = mae.MAEEncoder(c)
    encoder.load_pretrained(tmp_path / "timm.pth")
    assert_holds(encoder, vit.state_dict())


def test_safetensors_file(tmp_path: Path) -> None:
    from mae.safetensors_io import save_file

    weights = reference_weights()
    save_file(weights, tmp_path / "w.safetensors")
    model = mae.MaskedAutoencoderViT(tiny_config())
    report = model.load_pretrained(tmp_path / "w.safetensors")
    assert_holds(model, weights)
    assert report.layout.startswith("safetensors")
    fast = mae.create_model("mae_vit_base_patch16", checkpoint_path=tmp_path / "w.safetensors", **_tiny_overrides())
    assert_holds(fast, weights)


# ----------------------------------------------------------------------------------------- errors


def _check_refused(tmp_path: Path, payload: object, message: str, name: str = "bad.pth") -> None:
    path = tmp_path / name
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(tiny_config())
    before = snapshot(model)
    with pytest.raises(mae.CheckpointError, match=message) as info:
        model.load_pretrained(path)
    assert str(path) in str(info.value)
    assert_unchanged(model, before)


def test_classifier_is_refused_with_a_pointer(tmp_path: Path) -> None:
    weights = encoder_part(reference_weights())
    weights.pop("norm.weight"), weights.pop("norm.bias")
    weights.update({"fc_norm.weight": torch.ones(32), "fc_norm.bias": torch.zeros(32)})
    weights.update({"head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)})
    message = r"fine-tuned classifier \(head.weight \[10, 32\]\).*load_pretrained.*visualize file"
    _check_refused(tmp_path, {"model": weights}, message)


def test_other_variant_is_named(tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = mae.MaskedAutoencoderViT(small_config(depth=3))
    _check_refused(
        tmp_path, {"model": other.state_dict()}, r"is a custom ViT/8, 3 blocks, dim 32, 32x32.*this model has 2 blocks"
    )


def test_another_decoder_is_named(tmp_path: Path) -> None:
    for overrides, message in [
        (dict(decoder_depth=2), r"has a decoder of 2 blocks, dim 16; this model's has 1 blocks, dim 16"),
        (dict(decoder_embed_dim=24, decoder_num_heads=2), r"has a decoder of 1 blocks, dim 24"),
    ]:
        torch.manual_seed(0)
        other = mae.MaskedAutoencoderViT(small_config(**overrides))
        _check_refused(tmp_path, {"model": other.state_dict()}, message + r".*decoder_depth and decoder_embed_dim")


def test_a_real_variant_is_named_with_its_factory(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base_encoder = mae.MAEEncoder(mae.MAEViTBase.default_config)
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": base_encoder.state_dict()}, path)
    with torch.device("meta"):
        large = mae.create_model("mae_vit_large_patch16")
    with pytest.raises(mae.CheckpointError, match=r"is ViT-Base/16, 12 blocks, dim 768.*mae_vit_base_patch16"):
        large.load_pretrained(path)


def test_other_image_size_needs_interpolation(tmp_path: Path) -> None:
    weights = reference_weights()
    path = tmp_path / "w.pth"
    torch.save(weights, path)
    model = mae.MaskedAutoencoderViT(small_config(img_size=48))
    before = snapshot(model)
    with pytest.raises(mae.CheckpointError, match=r"is for 32x32 images \(16 patches\).*interpolate_pos_embed=True"):
        model.load_pretrained(path)
    assert_unchanged(model, before)
    report = model.load_pretrained(path, interpolate_pos_embed=True)
    assert model.pos_embed.shape == (1, 37, 32) and any("resized from 32x32 to 48x48" in n for n in report.notes)
    from mae.pos_embed import interpolate_pos_embed

    assert torch.equal(model.pos_embed, interpolate_pos_embed(weights["pos_embed"], 6))
    assert torch.equal(model.decoder_pos_embed, interpolate_pos_embed(weights["decoder_pos_embed"], 6))


def test_missing_extra_reshaped_retyped_and_nan_tensors(tmp_path: Path) -> None:
    weights = reference_weights()
    dropped = dict(weights)
    dropped.pop("blocks.1.mlp.fc2.bias")
    _check_refused(tmp_path, dropped, r"lacks 1 tensor\(s\) this model needs: blocks.1.mlp.fc2.bias")
    _check_refused(tmp_path, {**weights, "extra.weight": torch.zeros(1)}, r"has 1 tensor\(s\) this model does not")
    _check_refused(tmp_path, {**weights, "blocks.9.extra": torch.zeros(1)}, r"this model does not: blocks.9.extra")
    _check_refused(tmp_path, {**weights, "norm.bias": torch.zeros(31)}, r"tensor norm.bias has shape \[31\]")
    _check_refused(tmp_path, {**weights, "norm.bias": torch.zeros(32, dtype=torch.long)}, "not floating point")
    float8 = {**weights, "norm.bias": torch.zeros(32, dtype=torch.float8_e4m3fn)}  # a float type with no aminmax
    _check_refused(tmp_path, float8, r"tensor norm.bias is float8_e4m3fn, which this loader does not convert")
    for bad in (float("nan"), float("inf"), float("-inf")):
        corrupt = weights["blocks.0.attn.qkv.weight"].clone()
        corrupt[0, 0] = bad
        _check_refused(
            tmp_path, {**weights, "blocks.0.attn.qkv.weight": corrupt}, r"NaN or infinite values in 1 tensor"
        )


def test_unreadable_files(tmp_path: Path) -> None:
    torch.save({"model": reference_weights()}, tmp_path / "good.pth")
    raw = (tmp_path / "good.pth").read_bytes()
    _check_refused(tmp_path, raw[: len(raw) // 3], "truncated or corrupt")
    _check_refused(tmp_path, os.urandom(5000), "truncated or corrupt|not a readable PyTorch checkpoint")
    _check_refused(tmp_path, b"", "truncated or corrupt")
    _check_refused(tmp_path, [1, 2, 3], "holds a list, not a state dict")
    _check_refused(tmp_path, {"model": {}}, "holds an empty mapping")
    _check_refused(tmp_path, {"model": {"a": {"b": torch.zeros(1)}}}, "not a flat mapping of names to tensors")
    with pytest.raises(mae.CheckpointError, match=r"no such file.*mae download"):
        mae.MaskedAutoencoderViT(tiny_config()).load_pretrained(tmp_path / "absent.pth")


class _Payload:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, container: str) -> None:
    target = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    if container == "torch.save":
        torch.save({"model": reference_weights(), "args": _Payload(target)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"epoch": 1, "args": _Payload(target)}, f, protocol=2)
    model = mae.MaskedAutoencoderViT(tiny_config())
    before = snapshot(model)
    with pytest.raises(mae.CheckpointError, match=r"refused to load: its pickle asks to import `(posix|os)\.system`"):
        model.load_pretrained(path)
    assert not target.exists()
    assert_unchanged(model, before)
    # The payload is real: an unrestricted unpickling would have run it.
    with open(tmp_path / "check.pkl", "wb") as f:
        pickle.dump(_Payload(target), f)
    with open(tmp_path / "check.pkl", "rb") as f:
        pickle.load(f)  # deliberately, on our own file, to prove the payload works
    assert target.exists()


# ------------------------------------------------------------------------------------ norm-pix hint


@pytest.mark.parametrize(
    ("name", "model_target", "warned"),
    [
        ("mae_pretrain_vit_large_full.pth", False, True),
        ("mae_pretrain_vit_large_full.pth", True, False),
        ("mae_visualize_vit_large.pth", True, True),
        ("my_run.pth", False, False),
    ],
)
def test_training_target_from_the_file_name(tmp_path: Path, name: str, model_target: bool, warned: bool) -> None:
    path = tmp_path / name
    torch.save({"model": reference_weights()}, path)
    model = mae.MaskedAutoencoderViT(small_config(norm_pix_loss=model_target))
    report = model.load_pretrained(path)
    assert model.config.norm_pix_loss is model_target  # never changed behind the user's back
    assert bool(report.warnings) is warned
    if name == "my_run.pth":
        assert any("nor its arguments tell which target" in n for n in report.notes)
