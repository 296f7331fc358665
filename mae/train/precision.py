"""Training precision (``--dtype``): autocast and the gradient scaler.

- ``float32``: no autocast, no scaling;
- ``bfloat16``: autocast on the CPU or CUDA; bf16 has float32's exponent range, so no loss scaling;
- ``float16``: autocast with a ``GradScaler`` on the device's type (the official script's setting on GPUs;
  torch runs both on the CPU too, so the recipe's precision path runs and is tested there), whose state is
  the checkpoint's ``scaler`` entry (a fresh enabled scaler's state for the other dtypes: ``scaler_state``);
- ``auto`` (the default) is what the official script does: float16 on CUDA, float32 on the CPU.

A reduced precision on a CPU that emulates it is slower than float32 (`mae/cpu.py`): ``resolve_dtype``
measures it and warns before the run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import torch

from .. import cpu  # the CPU's capabilities live in the core: `mae reconstruct` and `mae verify` warn too
from ..onednn import WITHOUT_GAIN, timing_can_pay_off

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The training dtype for ``--dtype NAME`` on ``device``; ValueError for an unknown name. On a CPU where
    bf16 or float16 products are slower than float32 (measured here: e.g. no avx512_bf16/AMX, no avx512_fp16/
    AMX-FP16), warns before the run."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of auto, {', '.join(DTYPES)}; got {name!r}")
    dtype = DTYPES[name]
    # float16 chạy cả trên CPU (autocast float16 + GradScaler("cpu")); nơi nó bị mô phỏng và chậm thì cảnh báo.
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


def scaler_state(scaler: torch.amp.GradScaler) -> dict[str, Any]:
    """The checkpoint's ``scaler`` entry: ``scaler.state_dict()``, or, for a disabled scaler (float32 and
    bfloat16 runs), the state of a fresh enabled one with torch's constructor defaults.

    Why: a disabled scaler's state is ``{}``, and the official ``util/misc.load_model`` loads the entry into
    its enabled CUDA scaler, which refuses an empty state ("The source state dict is empty"); the official
    script could then not resume our float32 or bfloat16 files on a GPU. A fresh state is what such a run
    would have had, had it scaled: a float16 resume of the file starts from the default scale, and a
    disabled scaler ignores ``load_state_dict``, so our own float32 and bfloat16 resumes are unchanged.
    """
    if scaler.is_enabled():
        return scaler.state_dict()
    # Đọc giá trị mặc định từ torch (scale 65536, growth 2, backoff 0.5, ...) thay vì chép số vào đây.
    return torch.amp.GradScaler("cpu", enabled=True).state_dict()


# Scale của float16 coi như sụp khi epoch kết thúc với scale dưới mức này, hoặc quá tỉ lệ này số bước tối ưu bị
# bỏ qua: gradient đã nhân scale vẫn tràn float16 liên tục, và mô hình gần như không còn học.
COLLAPSED_SCALE = 1.0
SKIPPED_FRACTION = 0.5


def scale_note(stats: Mapping[str, float]) -> str:
    """``, loss scale 32768 (1 step skipped)`` for the epoch's summary line of a float16 run; "" otherwise."""
    if "loss_scale" not in stats:
        return ""
    skipped = int(stats["skipped_steps"])
    return f", loss scale {stats['loss_scale']:g} ({skipped} step{'' if skipped == 1 else 's'} skipped)"


class LossScaleWatch:
    """float16's loss scale over a run, read from the figures each epoch of `engine.train_one_epoch` returns
    (``skipped_steps`` and ``loss_scale``, absent when the scaler is disabled: float32, bfloat16).

    Warns once per run (UserWarning, on the main process only) the first time an epoch ends with the scale
    below ``COLLAPSED_SCALE`` or with more than ``SKIPPED_FRACTION`` of its ``updates_per_epoch`` optimizer
    steps skipped, with what to try.
    """

    def __init__(self, updates_per_epoch: int, *, enabled: bool = True) -> None:
        self.updates_per_epoch = updates_per_epoch
        self.enabled = enabled
        self.warned = False

    def epoch_ended(self, epoch: int, stats: Mapping[str, float]) -> str | None:
        """Warn, and return the message, the first time an epoch's figures show a collapsed scale."""
        if not self.enabled or self.warned or "loss_scale" not in stats:
            return None
        scale, skipped = stats["loss_scale"], int(stats["skipped_steps"])
        if scale >= COLLAPSED_SCALE and skipped <= SKIPPED_FRACTION * self.updates_per_epoch:
            return None
        self.warned = True
        message = (
            f"float16's loss scale has collapsed: epoch {epoch} ends with the scale at {scale:g}, and {skipped} of "
            f"its {self.updates_per_epoch} optimizer steps were skipped (their gradients held inf or NaN, so the "
            "weights did not change). Try --dtype bfloat16 where the hardware has it (CUDA GPUs from Ampere on, "
            "CPUs with avx512_bf16 or AMX: float32's exponent range, no scaling), --clip_grad, or a lower --blr"
        )
        warnings.warn(message, stacklevel=2)
        return message
