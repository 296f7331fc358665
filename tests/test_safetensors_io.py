"""The torch-only safetensors reader/writer against the reference `safetensors` library, both ways."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import safetensors.torch as safetensors_torch
import torch
from hypothesis import given
from hypothesis import strategies as st

from mae.safetensors_io import DTYPES, SafetensorsFormatError, load_file, read_header, save_file

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
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = Path(tmp) / "ours.safetensors", Path(tmp) / "theirs.safetensors"
        save_file(tensors, ours, {"format": "pt"})
        safetensors_torch.save_file(tensors, str(theirs), metadata={"format": "pt"})
        for loaded in (safetensors_torch.load_file(str(ours)), load_file(theirs), load_file(ours)):
            assert set(loaded) == set(tensors)
            for name, tensor in tensors.items():
                assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
        assert read_header(ours)[1] == {"format": "pt"}
        raw = ours.read_bytes()
        assert struct.unpack("<Q", raw[:8])[0] % 8 == 0 and read_header(ours)[2] % 8 == 0  # tensors 8-byte aligned


def test_views_are_written_alone_and_reads_are_copy_on_write(tmp_path: Path) -> None:
    base = torch.arange(10, dtype=torch.float32)
    path = tmp_path / "x.safetensors"
    save_file({"view": base[3:6], "other": base[::2]}, path)
    loaded = load_file(path)
    assert torch.equal(loaded["view"], base[3:6]) and torch.equal(loaded["other"], base[::2])
    loaded["view"] += 100  # memory-mapped copy-on-write: the file keeps its bytes
    assert torch.equal(load_file(path)["view"], base[3:6])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00", "too short"),
        (struct.pack("<Q", 10**9) + b"{}", "does not fit"),
        (struct.pack("<Q", 3) + b"{x}", "not JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (struct.pack("<Q", 48) + b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}'[:48], "not JSON"),
    ],
)
def test_malformed_headers(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(SafetensorsFormatError, match=message):
        load_file(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "4 bytes for shape"),
        ({"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}, "unsupported dtype"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "non-negative"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}, "outside the"),
        ({"dtype": "F32", "shape": [1]}, "exactly dtype, shape, data_offsets"),
    ],
)
def test_inconsistent_entries(tmp_path: Path, entry: dict[str, object], message: str) -> None:
    import json

    header = json.dumps({"a": entry}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(SafetensorsFormatError, match=message):
        read_header(path)


def test_unstorable_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be stored"):
        save_file({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "c.safetensors")
