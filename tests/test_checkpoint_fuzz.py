"""Fuzz: corrupted checkpoints either load correctly or raise `mae.CheckpointError`, never anything else,
and a refused file leaves the model untouched. At least 500 examples per run (MAE_FUZZ_EXAMPLES).

"Correctly" is checked for every file that loads: an intact one gives the tensors that were saved; a
truncated one must never load; one with 16 flipped bytes may load only when the flip shows through as
itself (a `.pth` archive has no checksum that torch reads, so flipped tensor bytes cannot be detected):
the loaded tensors are the ones `torch.load` reads from that file, and those differ from the saved ones
in at most the 16 flipped bytes, each the complement of the original, nothing moved.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

import mae
from helpers import small_config

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "tiny_rgb.pth"
WEIGHTS: dict[str, torch.Tensor] = torch.load(FIXTURE, weights_only=True)["model"]
KEYS = list(WEIGHTS)

TENSOR_OPS = ["drop", "rename", "reshape", "retype", "extra", "nan", "encoder_only"]
FILE_OPS = ["none", "truncate", "flip_bytes", "random_bytes", "non_dict", "wrong_variant"]
DTYPES = [torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.bool]


def _mutate(draw: st.DrawFn, sd: dict[str, torch.Tensor], op: str) -> dict[str, torch.Tensor]:
    key = draw(st.sampled_from(sorted(sd))) if sd else None
    if op == "drop" and key:
        sd.pop(key)
    elif op == "rename" and key:
        sd[draw(st.sampled_from([key + "_x", "x." + key, key.replace("blocks", "block"), key.upper()]))] = sd.pop(key)
    elif op == "reshape" and key:
        t = sd[key]
        sd[key] = draw(st.sampled_from([t.flatten(), t.unsqueeze(0), t.flatten()[: max(t.numel() - 1, 0)]]))
    elif op == "retype" and key:
        sd[key] = sd[key].to(draw(st.sampled_from(DTYPES)))
    elif op == "extra":
        sd[draw(st.sampled_from(["extra", "blocks.0.extra", "head.weight", "decoder_extra", "fc_norm.bias"]))] = (
            torch.zeros(draw(st.integers(0, 4)))
        )
    elif op == "nan" and key and sd[key].numel() and sd[key].is_floating_point():
        t = sd[key].clone()
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(
            st.sampled_from([float("nan"), float("inf"), float("-inf")])
        )
        sd[key] = t
    elif op == "encoder_only":
        sd = {k: v for k, v in sd.items() if not (k.startswith("decoder_") or k == "mask_token")}
    return sd


class Case:
    """One corrupted checkpoint; its repr names the corruptions (not the tensors)."""

    def __init__(
        self, ops: list[str], sd: dict[str, torch.Tensor], file_op: str, payload: object, extra: object, where: str
    ) -> None:
        self.ops, self.sd, self.file_op, self.payload, self.extra = ops, sd, file_op, payload, extra
        self.where = where  # the container key ("" for a bare state dict), then "/", then the key prefix

    def __repr__(self) -> str:
        return f"Case({self.ops}, extra={self.extra!r:.60})"


@st.composite
def corrupted(draw: st.DrawFn) -> Case:
    ops = draw(st.lists(st.sampled_from(TENSOR_OPS), max_size=3))
    sd = dict(WEIGHTS)
    for op in ops:
        sd = _mutate(draw, sd, op)
    prefix = draw(st.sampled_from(["", "module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."]))
    container = draw(st.sampled_from(["model", "state_dict", "bare"]))
    file_op = draw(st.sampled_from(FILE_OPS))
    extra: object = None
    if file_op in ("truncate", "flip_bytes"):
        extra = draw(st.floats(0.0, 1.0))
    elif file_op == "random_bytes":
        extra = draw(st.binary(max_size=256))
    elif file_op == "non_dict":
        extra = draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3), st.none()))
    elif file_op == "wrong_variant":
        extra = draw(st.sampled_from([dict(depth=3), dict(embed_dim=48), dict(patch_size=4), dict(in_chans=1)]))
    payload_sd = {prefix + k: v for k, v in sd.items()}
    payload: object = payload_sd if container == "bare" else {container: payload_sd}
    where = ("" if container == "bare" else container) + "/" + prefix
    return Case([*ops, f"{container}{'+' + prefix if prefix else ''}", file_op], sd, file_op, payload, extra, where)


def _write(path: Path, file_op: str, payload: object, extra: object) -> None:
    if file_op == "random_bytes":
        assert isinstance(extra, bytes)
        path.write_bytes(extra)
        return
    if file_op == "non_dict":
        torch.save(extra, path)
        return
    if file_op == "wrong_variant":
        assert isinstance(extra, dict)
        torch.manual_seed(1)
        payload = {"model": mae.MaskedAutoencoderViT(small_config(**extra)).state_dict()}
    torch.save(payload, path)
    if file_op in ("truncate", "flip_bytes"):
        assert isinstance(extra, float)
        raw = bytearray(path.read_bytes())
        at = int(extra * (len(raw) - 1))
        if file_op == "truncate":
            del raw[at:]
        else:
            raw[at : at + 16] = bytes(255 - b for b in raw[at : at + 16])
        path.write_bytes(bytes(raw))


def _held(path: Path, where: str) -> dict[str, torch.Tensor]:
    """The state dict `torch.load` reads from `path`, unwrapped as it was saved (container, key prefix)."""
    container, prefix = where.split("/")
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    held = obj[container] if container else obj
    return {k.removeprefix(prefix): v for k, v in held.items()}


def _assert_only_the_flip_shows(saved: dict[str, torch.Tensor], held: dict[str, torch.Tensor], keys: list[str]) -> None:
    """The tensors read back differ from the saved ones in at most 16 bytes, each the complement of the original."""
    changed = 0
    for key in keys:
        a, b = saved[key], held[key]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), (
            f"{key}: {a.dtype} {tuple(a.shape)} read back as {b.dtype} {tuple(b.shape)}"
        )
        x, y = (t.contiguous().flatten().view(torch.uint8) for t in (a, b))
        differ = x != y
        assert torch.equal(y[differ], 255 - x[differ]), f"{key}: bytes changed that the flip did not touch"
        changed += int(differ.sum())
    assert changed <= 16, f"{changed} bytes of tensor data changed; 16 were flipped: the data moved"


@settings(max_examples=int(os.environ.get("MAE_FUZZ_EXAMPLES", "500")), deadline=None)
@given(case=corrupted())
def test_corrupted_checkpoints_load_correctly_or_raise_checkpoint_error(case: Case) -> None:
    ops, sd, file_op, payload, extra = case.ops, case.sd, case.file_op, case.payload, case.extra
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pth"
        _write(path, file_op, payload, extra)
        try:
            report = model.load_pretrained(path)
        except mae.CheckpointError as e:
            assert str(path) in str(e)
            after = model.state_dict()
            assert all(torch.equal(after[k], before[k]) for k in before), "a refused load changed the model"
            if file_op == "truncate":
                assert "truncated or corrupt" in str(e), f"{ops}: a truncated file refused without saying so: {e}"
            event("refused: " + e.problem.split(":")[0].split("(")[0].strip()[:40])
            return
        assert file_op != "truncate", f"{ops}: a file truncated at {extra:.3f} of its length loaded"
        assert file_op in ("none", "flip_bytes"), f"{ops}: a {file_op} file loaded"
        held = _held(path, case.where) if file_op == "flip_bytes" else sd
    event(f"loaded ({report.kind}{', flipped' if file_op == 'flip_bytes' else ''})")
    if file_op == "flip_bytes":
        _assert_only_the_flip_shows(sd, held, report.loaded)
    after = model.state_dict()
    for key in report.loaded:
        expected = held[key].to(after[key].dtype)
        assert torch.equal(after[key], expected), f"{ops}: {key} loaded wrongly"
    for key in report.missing:
        assert torch.equal(after[key], before[key])


def test_a_damaged_zip_header_that_moves_a_tensor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"model": WEIGHTS}, path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        record = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    at = record.header_offset + 14  # crc, sizes, then the name and extra-field lengths (bytes 26 to 29)
    raw[at : at + 16] = bytes(255 - b for b in raw[at : at + 16])
    path.write_bytes(bytes(raw))
    # The premise: torch.load reads this file without complaint, one tensor taken from the wrong bytes.
    held = torch.load(path, map_location="cpu", weights_only=True)["model"]
    with pytest.raises(AssertionError, match=r"the flip did not touch|the data moved"):
        _assert_only_the_flip_shows(WEIGHTS, held, KEYS)
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(mae.CheckpointError) as refused:
        model.load_pretrained(path)
    assert str(path) in str(refused.value) and "corrupt" in str(refused.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
