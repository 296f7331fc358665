"""Read and write `.safetensors` files with torch alone (the library's only runtime dependency).

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian header length N, N bytes
of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then the
raw little-endian tensor bytes, offsets relative to the end of the header. Reading memory-maps the file
copy-on-write: nothing is read until a tensor is used, and writing to a tensor never changes the file.
Nothing in a safetensors file can run code.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import struct
import sys
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's own limit


class SafetensorsFormatError(ValueError):
    """The bytes are not a valid safetensors file; the message says where it breaks."""


class Entry(NamedTuple):
    """One tensor of the header: dtype, shape, and its byte range inside the data section."""

    dtype: torch.dtype
    shape: list[int]
    begin: int
    end: int


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Entry], dict[str, str], int]:
    """(tensor entries, metadata, offset of the data section) of a safetensors file, validated."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsFormatError(f"{size} bytes: too short for a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER, size - 8):
            raise SafetensorsFormatError(f"header length {length} does not fit in a {size}-byte file")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsFormatError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsFormatError("__metadata__ must map strings to strings")
    data_start, data_size = 8 + length, size - 8 - length
    return {name: _check_entry(name, entry, data_size) for name, entry in header.items()}, metadata, data_start


def _check_entry(name: str, entry: object, data_size: int) -> Entry:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsFormatError(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise SafetensorsFormatError(f"tensor {name!r}: unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SafetensorsFormatError(f"tensor {name!r}: shape must be a list of non-negative ints")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_size
    ):
        raise SafetensorsFormatError(f"tensor {name!r}: data_offsets {offsets!r} outside the {data_size}-byte data")
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise SafetensorsFormatError(
            f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for shape {shape} of {dtype} ({nbytes} bytes)"
        )
    return Entry(DTYPES[dtype], shape, offsets[0], offsets[1])


def load_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, memory-mapped (copy-on-write), in the file's order."""
    if sys.byteorder != "little":
        raise SafetensorsFormatError("safetensors data is little-endian; this host is big-endian")
    header, _, data_start = read_header(path)
    size = os.path.getsize(path)
    storage = torch.UntypedStorage.from_file(os.fspath(path), shared=False, nbytes=size)
    buffer = torch.empty(0, dtype=torch.uint8)
    buffer.set_(storage)  # type: ignore[arg-type]
    out: dict[str, Tensor] = {}
    for name, e in sorted(header.items(), key=lambda item: item[1].begin):
        raw = buffer[data_start + e.begin : data_start + e.end]
        if (data_start + e.begin) % e.dtype.itemsize:
            raw = raw.clone()  # unaligned in the file: a copy, so it can be viewed as `dtype`
        out[name] = raw.view(e.dtype).reshape(e.shape)
    return out


def save_file(tensors: dict[str, Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (any dtype in DTYPES, any device) as a safetensors file, 8-byte aligned."""
    header: dict[str, object] = {}
    offset = 0
    ordered = []
    for name, tensor in tensors.items():
        if tensor.dtype not in NAMES:
            raise ValueError(f"tensor {name!r}: dtype {tensor.dtype} cannot be stored in safetensors")
        data = tensor.detach().to("cpu").contiguous()
        nbytes = data.numel() * data.element_size()
        entry = {"dtype": NAMES[data.dtype], "shape": list(data.shape), "data_offsets": [offset, offset + nbytes]}
        header[name] = entry
        ordered.append(data)
        offset += nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # tensors start 8-byte aligned
    with open(Path(path), "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for data in ordered:
            if data.numel():
                # The tensor's own bytes, written straight from its memory (no copy, no numpy).
                f.write((ctypes.c_ubyte * (data.numel() * data.element_size())).from_address(data.data_ptr()))
