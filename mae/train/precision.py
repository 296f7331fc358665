"""Training precision (``--dtype``): autocast and the gradient scaler.

- ``float32``: no autocast, no scaling;
- ``bfloat16``: autocast on the CPU or CUDA; bf16 has float32's exponent range, so no loss scaling;
- ``float16``: autocast on CUDA with a ``GradScaler`` (the official script's setting on GPUs), whose
  state is the checkpoint's ``scaler`` entry;
- ``auto`` (the default) is what the official script does: float16 on CUDA, float32 on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The training dtype for ``--dtype NAME`` on ``device``; ValueError where it cannot run."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of auto, {', '.join(DTYPES)}; got {name!r}")
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("--dtype float16 needs CUDA (PyTorch's CPU autocast is bfloat16): use --dtype bfloat16")
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "--dtype bfloat16 on a CPU without native bf16 instructions (no avx512_bf16 or AMX): each bf16 "
            "product is emulated and can be several times slower than float32 (measured 6.8x slower for a "
            "ViT-B forward on an AVX2-only EPYC). Use --dtype float32 (and --fast) on this machine.",
            stacklevel=2,
        )
    return dtype


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's instruction-set flags from /proc/cpuinfo; None where they cannot be read (not Linux)."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises avx512_bf16 or AMX (True where it cannot tell: no false alarm)."""
    flags = cpu_flags()
    return flags is None or bool(flags & {"avx512_bf16", "amx_bf16"})


def warn_if_fast_path_gains_nothing() -> None:
    """`--fast` (oneDNN float32 products) pays off through AVX-512; without it, say so before the run."""
    flags = cpu_flags()
    if flags is not None and "avx512f" not in flags:
        warnings.warn(
            "--fast on a CPU without AVX-512: oneDNN's float32 products are no faster than the default ones "
            "here (ViT-B pre-training steps measured 0.88x the official engine's speed on an AVX2-only EPYC, "
            "against 1.04x without --fast; benchmarks/README.md). Drop --fast on this machine.",
            stacklevel=2,
        )


def autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], AbstractContextManager[object]]:
    """A factory of the context the forward runs in: autocast to ``dtype``, or nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """Loss scaling for float16 only (disabled otherwise: ``scale`` and ``step`` then pass through)."""
    # Chỉ float16 cần nhân loss trước backward: khoảng mũ hẹp làm gradient nhỏ bị làm tròn về 0.
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
