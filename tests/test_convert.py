"""Conversions official <-> safetensors <-> transformers, with round trips and the reference loading ours."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import mae
import mae.convert
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
    with pytest.raises(ValueError, match="unknown format"):
        convert(FIXTURE, tmp_path / "x.pth", to="onnx")
    classifier = {k: v for k, v in official().items() if not (k.startswith("decoder_") or k == "mask_token")}
    classifier |= {"head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}
    torch.save({"model": classifier}, tmp_path / "classifier.pth")
    with pytest.raises(mae.CheckpointError, match="holds a classifier checkpoint; only MAE encoders and full MAEs"):
        convert(tmp_path / "classifier.pth", tmp_path / "c.safetensors")
    # --force replaces a file by a file, a folder by a folder, never one kind by the other.
    (tmp_path / "folder.pth").mkdir()
    with pytest.raises(FileExistsError, match="is a folder, but a official checkpoint is a file"):
        convert(FIXTURE, tmp_path / "folder.pth", overwrite=True)
    with pytest.raises(FileExistsError, match="is a file, but a transformers checkpoint is a folder"):
        convert(FIXTURE, tmp_path / "exists.pth", to="transformers", num_heads=4, overwrite=True)
    assert (tmp_path / "exists.pth").read_bytes() == b"x" and not any((tmp_path / "folder.pth").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.pth", "exists.pth", "folder.pth"]


def test_to_overrides_the_destinations_suffix(tmp_path: Path) -> None:
    convert(FIXTURE, tmp_path / "weights.bin", to="safetensors")  # .bin alone would mean the official layout
    assert_same(load_file(tmp_path / "weights.bin"), official())
    convert(FIXTURE, tmp_path / "weights.safetensors", to="official")
    with open(tmp_path / "weights.safetensors", "rb") as f:  # a file object: torch.load goes by content, not name
        assert_same(torch.load(f, weights_only=True)["model"], official())
    folder = convert(FIXTURE, tmp_path / "hf.pth", to="transformers", num_heads=4, decoder_num_heads=2)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["ViTMAEForPreTraining"]


def test_overwrite_replaces_the_destination(tmp_path: Path) -> None:
    (tmp_path / "w.pth").write_bytes(b"an old file")
    convert(FIXTURE, tmp_path / "w.pth", overwrite=True)
    assert_same(torch.load(tmp_path / "w.pth", weights_only=True)["model"], official())
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("notes")
    convert(FIXTURE, folder, num_heads=4, decoder_num_heads=2, overwrite=True)
    assert json.loads((folder / "config.json").read_text())["num_attention_heads"] == 4
    assert (folder / "README.md").read_text() == "notes"  # only the two files are replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "w.pth"]


def _full_disk(written: int) -> Callable[..., None]:
    """A writer that puts `written` bytes at the path it is given, then fails as a full disk does."""

    def write(*args: object, **kwargs: object) -> None:
        path = next(a for a in args if isinstance(a, (str, Path)))
        Path(path).write_bytes(b"\0" * written)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


@pytest.mark.parametrize("to", ["official", "safetensors", "transformers"])
def test_a_failed_write_leaves_no_half_written_output(to: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh, existing = tmp_path / "fresh", tmp_path / "existing"
    if to == "transformers":
        existing.mkdir()
        (existing / "config.json").write_text("{}")
        (existing / "model.safetensors").write_bytes(b"old weights")
    else:
        existing.write_bytes(b"an old file")
    before = {p.name: p.read_bytes() for p in ([existing] if existing.is_file() else existing.iterdir())}
    if to == "official":
        monkeypatch.setattr(torch, "save", _full_disk(100))
    elif to == "safetensors":
        monkeypatch.setattr(mae.convert, "save_file", _full_disk(100))
    else:  # the weights are written, then the config fails: neither may appear
        monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: _full_disk(10)(self))
    for destination, overwrite in ((fresh, False), (existing, True)):
        with pytest.raises(OSError, match="No space left on device"):
            convert(FIXTURE, destination, to=to, num_heads=4, decoder_num_heads=2, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]  # nothing new, no .part
    after = {p.name: p.read_bytes() for p in ([existing] if existing.is_file() else existing.iterdir())}
    assert after == before  # the overwritten destination keeps its previous contents


def test_the_command_passes_to_and_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mae.cli import main

    out = tmp_path / "w.bin"
    assert main(["convert", str(FIXTURE), str(out), "--to", "safetensors"]) == 0
    assert_same(load_file(out), official())
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert main(["convert", str(FIXTURE), str(out)]) == 1
    assert f"mae convert: error: {out} exists; choose another name or pass overwrite=True (--force)" in (
        capsys.readouterr().err
    )
    assert main(["convert", str(FIXTURE), str(out), "--force"]) == 0  # .bin: the official layout
    assert_same(torch.load(out, weights_only=True)["model"], official())


def _tiny() -> dict[str, int]:
    return dict(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, decoder_embed_dim=16, decoder_depth=1,
        decoder_num_heads=2,
    )  # fmt: skip
