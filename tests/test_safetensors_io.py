"""`.safetensors` files: our torch-only writer against the reference `safetensors` library (which reads
them), and the library's header validation as `mae` reports it, including the cases the former
hand-written reader let through (overlapping tensors, bytes left over, truncated data)."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
import safetensors.torch as safetensors_torch
import torch
from hypothesis import given
from hypothesis import strategies as st

import mae
from mae.safetensors_io import DTYPES, SafetensorsFormatError, is_safetensors, load_file, read_metadata, save_file

dtypes = st.sampled_from(list(DTYPES.values()))
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3)


def make(dtype: torch.dtype, shape: list[int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, generator=g).to(dtype)


@given(entries=st.lists(st.tuples(dtypes, shapes), min_size=0, max_size=5), seed=st.integers(0, 100))
def test_round_trips_with_the_reference_library(entries: list[tuple[torch.dtype, list[int]]], seed: int) -> None:
    tensors = {f"t{i}": make(dtype, shape, seed + i) for i, (dtype, shape) in enumerate(entries)}
    tensors = dict(reversed(tensors.items()))  # an order that is not the names' sorted order
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = Path(tmp) / "ours.safetensors", Path(tmp) / "theirs.safetensors"
        save_file(tensors, ours, {"format": "pt"})
        safetensors_torch.save_file(tensors, str(theirs), metadata={"format": "pt"})
        for loaded in (safetensors_torch.load_file(str(ours)), load_file(theirs), load_file(ours)):
            assert set(loaded) == set(tensors)
            for name, tensor in tensors.items():
                assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
        stored = [name for name, t in tensors.items() if t.numel()]  # empty tensors share an offset: no order
        assert [name for name in load_file(ours) if tensors[name].numel()] == stored  # our files keep the order
        assert read_metadata(ours) == {"format": "pt"} and is_safetensors(ours)
        raw = ours.read_bytes()
        assert struct.unpack("<Q", raw[:8])[0] % 8 == 0  # the tensors start 8-byte aligned


def test_views_are_written_alone_and_reads_are_copy_on_write(tmp_path: Path) -> None:
    base = torch.arange(10, dtype=torch.float32)
    path = tmp_path / "x.safetensors"
    save_file({"view": base[3:6], "other": base[::2]}, path)
    loaded = load_file(path)
    assert torch.equal(loaded["view"], base[3:6]) and torch.equal(loaded["other"], base[::2])
    assert path.stat().st_size == 8 + struct.unpack("<Q", path.read_bytes()[:8])[0] + 4 * (3 + 5)
    loaded["view"] += 100  # memory-mapped copy-on-write: the file keeps its bytes
    assert torch.equal(load_file(path)["view"], base[3:6])


def _file(header: dict[str, object], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00", "header too small"),
        (struct.pack("<Q", 10**9) + b"{}", "header too large"),
        (struct.pack("<Q", 3) + b"{x}", "invalid JSON"),
        (struct.pack("<Q", 2) + b"[]", "invalid JSON"),
        (struct.pack("<Q", 48) + b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'[:48], "invalid JSON"),
        (_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), "invalid shape"),
        (_file({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "unknown variant `X9`"),
        (_file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "invalid value"),
        (_file({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "missing field `data_offsets`"),
        (_file({"a": F32_2, "__metadata__": {"n": 1}}, b"\0" * 8), "expected a string"),
        # Let through by the former hand-written reader, refused by the library:
        (_file({"a": F32_2, "b": F32_2}, b"\0" * 8), "invalid offset for tensor"),  # overlapping (either named)
        (_file({"a": F32_2}, b"\0" * 12), "not fully covered"),  # bytes left over
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": F32_2}, b"\0" * 12), "offset"),
        (_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 12), "not fully covered"),
    ],
    ids=[
        "short", "huge header length", "not JSON", "not an object", "cut JSON", "size mismatch", "bad dtype",
        "negative shape", "no offsets", "non-string metadata", "overlap", "left over", "gap", "truncated data",
    ],
)  # fmt: skip
def test_malformed_files_are_refused(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(SafetensorsFormatError, match=message):
        load_file(path)
    assert not is_safetensors(path)
    with pytest.raises(mae.CheckpointError, match=r"is not a valid safetensors file.*Re-download or re-convert"):
        mae.inspect_checkpoint(path)


def test_every_truncation_of_a_checkpoint_is_refused(tmp_path: Path) -> None:
    weights = torch.load(Path(__file__).parent.parent / "fixtures" / "tiny_rgb.pth", weights_only=True)["model"]
    path = tmp_path / "w.safetensors"
    save_file(weights, path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    for end in [*range(0, 64), *range(64, len(raw), 997), len(raw) - 1]:
        cut.write_bytes(raw[:end])
        with pytest.raises(SafetensorsFormatError):
            load_file(cut)


def test_unstorable_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be stored"):
        save_file({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "c.safetensors")
