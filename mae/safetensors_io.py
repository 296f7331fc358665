"""`.safetensors` files: read with the format's own library, written with torch alone in the given order.

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian header length N, N bytes
of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then the
raw little-endian tensor bytes, offsets relative to the end of the header. Nothing in it can run code.

Reading is `safetensors.safe_open`, the reference implementation: it validates the header (its length,
the JSON, every dtype, each shape against its byte range, tensors that neither overlap nor leave a byte
of the data unaccounted for, so a truncated or padded file is refused) and memory-maps the file
copy-on-write: nothing is read until a tensor is used, and writing to a tensor never changes the file.

Writing stays here because the library's writer sorts the tensors by dtype and name: a file written by
it would not keep the official key order, which `mae convert` keeps. `save_file` writes each tensor's
bytes straight from its memory (no copy), and its files are read back by the library in the tests.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

# The dtypes `save_file` writes, by their names in the header.
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


class SafetensorsFormatError(ValueError):
    """The bytes are not a valid safetensors file; the message is the library's, saying where it breaks."""


def load_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, memory-mapped (copy-on-write), in the file's order (that of their
    bytes; empty tensors, which have none, come in the library's order)."""
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.offset_keys()}
    except SafetensorError as e:
        raise SafetensorsFormatError(str(e)) from None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (empty if none), after the library has validated its header."""
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except SafetensorError as e:
        raise SafetensorsFormatError(str(e)) from None


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """Whether the file has a valid safetensors header (whatever its name); reads the header only."""
    try:
        read_metadata(path)
        return True
    except (SafetensorsFormatError, OSError):
        return False


def save_file(tensors: dict[str, Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (any dtype in DTYPES, any device) as a safetensors file, in their order, 8-byte aligned."""
    if sys.byteorder != "little":
        raise ValueError("safetensors data is little-endian; writing it from this big-endian host is not supported")
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
