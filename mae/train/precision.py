"""Training precision (``--dtype``): autocast and the gradient scaler.

- ``float32``: no autocast, no scaling;
- ``bfloat16``: autocast on the CPU or CUDA; bf16 has float32's exponent range, so no loss scaling;
- ``float16``: autocast on CUDA with a ``GradScaler`` (the official script's setting on GPUs), whose
  state is the checkpoint's ``scaler`` entry;
- ``auto`` (the default) is what the official script does: float16 on CUDA, float32 on the CPU.

A reduced precision on a CPU that emulates it is slower than float32 (`mae/cpu.py`): ``resolve_dtype``
measures it and warns before the run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from .. import cpu  # the CPU's capabilities live in the core: `mae reconstruct` and `mae verify` warn too
from ..onednn import WITHOUT_GAIN, timing_can_pay_off

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The training dtype for ``--dtype NAME`` on ``device``; ValueError where it cannot run. On a CPU where
    bf16 products are slower than float32 (measured here: no avx512_bf16 or AMX), warns before the run."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of auto, {', '.join(DTYPES)}; got {name!r}")
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("--dtype float16 needs CUDA (PyTorch's CPU autocast is bfloat16): use --dtype bfloat16")
    cpu.warn_if_reduced_precision_is_slow(dtype, device, training=True)
    return dtype


def warn_if_fast_path_gains_nothing() -> None:
    """Before a ``--fast`` run, say how the fast path will choose on this CPU (logged, INFO).

    The name is kept for its callers: the fast path no longer needs a warning, since it cannot be slower
    than the default path (`mae/onednn.py`): without AVX-512 it keeps MKL, elsewhere it times both."""
    if timing_can_pay_off():
        plan = (
            "each linear product shape is timed once at its first use, MKL against oneDNN, and oneDNN kept where "
            "it is clearly faster (choices logged as they are made)"
        )
    else:
        plan = f"every linear product stays with the default (MKL): {WITHOUT_GAIN}; expect the default path's speed"
    log.info("--fast: %s. Instruction sets: %s", plan, cpu.instruction_sets())


def autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], AbstractContextManager[object]]:
    """A factory of the context the forward runs in: autocast to ``dtype``, or nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """Loss scaling for float16 only (disabled otherwise: ``scale`` and ``step`` then pass through)."""
    # Chỉ float16 cần nhân loss trước backward: khoảng mũ hẹp làm gradient nhỏ bị làm tròn về 0.
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
