"""What this CPU computes fast: its instruction sets, and the measured cost of bf16/float16 products on it.

The speed of a product depends on the CPU more than on the code. bf16 products are fast on CPUs with
native bf16 instructions (avx512_bf16, AMX) and float16 products on those with avx512_fp16 or AMX-FP16;
elsewhere PyTorch emulates them: on an AVX2-only AMD EPYC (Zen 3) bf16 autocast made a ViT-B forward 6.8x
*slower* than float32 and a pre-training step about 47x slower (`benchmarks/README.md`). So every command
that takes `--dtype bfloat16` or `float16` (`mae reconstruct`, `mae verify`, the training commands, the
benchmarks) times one product both ways on the CPU it runs on, before any work, and warns with the
measured figures when the reduced precision is the slower one. The measurement takes a fraction of a
second and is made once per process.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

# The instruction sets that decide the speed of float32 (AVX2/FMA, AVX-512) and bf16/float16 products.
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16")
NATIVE = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}
SLOWER = 1.2  # a reduced-precision product taking this many times float32's time, or more, is warned about
REPEATS = 3


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's instruction-set flags (/proc/cpuinfo's `flags`, or `Features` on ARM); None where they
    cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def instruction_sets() -> str:
    """The vector instruction sets that matter for products, present and absent: e.g.
    'avx2 fma (no avx512f, avx512_bf16, avx512_fp16, amx_bf16, amx_fp16)'."""
    flags = cpu_flags()
    if flags is None:
        return "unknown (no /proc/cpuinfo)"
    present = [f for f in SHOWN_FLAGS if f in flags]
    absent = [f for f in SHOWN_FLAGS if f not in flags]
    text = " ".join(present) or "none of " + ", ".join(SHOWN_FLAGS)
    return f"{text} (no {', '.join(absent)})" if present and absent else text


def cpu_has_native(dtype: torch.dtype) -> bool | None:
    """Whether the CPU advertises native instructions for `dtype` products (bf16 or float16); None where
    it cannot tell (no /proc/cpuinfo)."""
    flags = cpu_flags()
    return None if flags is None else bool(flags & set(NATIVE[dtype]))


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises avx512_bf16 or AMX (True where it cannot tell: no false alarm)."""
    return cpu_has_native(torch.bfloat16) is not False


@dataclass(frozen=True)
class ProductCost:
    """Seconds of the same products in float32 and in a reduced precision, measured on this CPU (the least of
    a few alternating repetitions: other processes can only add time)."""

    dtype: torch.dtype
    float32_s: float  # a linear layer's forward product, float32
    reduced_s: float  # the same under autocast to `dtype`
    backward_float32_s: float | None = None  # a @ b, the layout of a backward pass's products
    backward_reduced_s: float | None = None

    @property
    def forward_ratio(self) -> float:
        return self.reduced_s / self.float32_s

    @property
    def backward_ratio(self) -> float | None:
        if self.backward_reduced_s is None or self.backward_float32_s is None:
            return None
        return self.backward_reduced_s / self.backward_float32_s

    @property
    def slowest_ratio(self) -> float:
        """The larger of the forward's and (where timed) the backward's time ratio, reduced over float32."""
        return max(self.forward_ratio, self.backward_ratio or 0.0)

    @property
    def slower(self) -> bool:
        """The reduced precision is the slower one here (by SLOWER or more, in either product)."""
        return self.slowest_ratio >= SLOWER

    def describe(self) -> str:
        name = dtype_name(self.dtype)
        text = (
            f"a linear layer's product took {self.forward_ratio:.1f}x float32's time in {name} autocast "
            f"({self.reduced_s * 1e3:.1f} ms vs {self.float32_s * 1e3:.1f} ms)"
        )
        if self.backward_ratio is not None:
            text += f", a backward pass's product {self.backward_ratio:.1f}x"
        return text


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def least_seconds(functions: dict[str, Callable[[], object]], repeats: int = REPEATS) -> dict[str, float]:
    """The least time of each function over `repeats` calls, after one warm-up call each; the functions
    alternate, so that they see the same machine state."""
    for f in functions.values():
        f()
    best = dict.fromkeys(functions, math.inf)
    for _ in range(repeats):
        for name, f in functions.items():
            start = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@functools.cache
def measure_product_cost(
    dtype: torch.dtype, *, backward: bool = True, rows: int = 128, width: int = 1024
) -> ProductCost:
    """Time a [rows, width] x [width, width] linear product in float32 and under CPU autocast to `dtype`, and,
    with `backward`, a [rows, width/2] @ [width/2, width/2] product (the layout of a backward pass's input
    gradient, where emulated bf16 is slowest) in both. Made once per process and arguments."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(rows, width, generator=g), torch.randn(width, width, generator=g)
    half = width // 2
    a, b = torch.randn(rows, half, generator=g), torch.randn(half, half, generator=g)
    a_low, b_low = a.to(dtype), b.to(dtype)

    def linear(enabled: bool) -> Callable[[], object]:
        def go() -> object:
            with torch.autocast("cpu", dtype=dtype, enabled=enabled):
                return F.linear(x, w)

        return go

    functions: dict[str, Callable[[], object]] = {"float32": linear(False), "reduced": linear(True)}
    if backward:
        functions |= {"backward float32": lambda: a @ b, "backward reduced": lambda: a_low @ b_low}
    with torch.inference_mode():
        s = least_seconds(functions)
    return ProductCost(dtype, s["float32"], s["reduced"], s.get("backward float32"), s.get("backward reduced"))


def reduced_precision_warning(
    dtype: torch.dtype, device: torch.device, option: str = "--dtype", *, training: bool = True
) -> str | None:
    """The warning for a run in `dtype` on `device` when that precision is slower than float32 on this CPU
    (measured here and now), else None. `training`: a backward pass will run too (timed as well)."""
    if device.type != "cpu" or dtype not in NATIVE:
        return None
    cost = measure_product_cost(dtype, backward=training)
    if not cost.slower:
        return None
    name, native = dtype_name(dtype), " or ".join(NATIVE[dtype])
    if cpu_has_native(dtype) is False:
        why = f"this CPU has no {native}, so PyTorch emulates {name} products"
        advice = f"Use {option} float32 here; {name} pays off on CPUs with {native}, or on a GPU."
    else:  # the instructions are there, yet PyTorch's products in this precision ran slower here
        has = " and ".join(sorted((cpu_flags() or frozenset()) & set(NATIVE[dtype]))) or native
        why = f"{name} products are slow on this CPU, although it has {has}"
        advice = f"Use {option} float32 here" + _instead(dtype, option) + "."
    return (
        f"{option} {name} on this CPU will be slower than float32, not faster: {why}. Measured just now: "
        f"{cost.describe()}. Instruction sets: {instruction_sets()}. {advice}"
    )


def _instead(dtype: torch.dtype, option: str) -> str:
    """The other reduced precision, where its products run faster than float32's here (measured), as advice."""
    other = torch.bfloat16 if dtype == torch.float16 else torch.float16
    if not cpu_has_native(other):
        return ""
    ratio = measure_product_cost(other).slowest_ratio
    if ratio >= 1.0:
        return ""
    return f", or {option} {dtype_name(other)}: its products ran at {1 / ratio:.1f}x float32's speed here"


def warn_if_reduced_precision_is_slow(
    dtype: torch.dtype, device: torch.device, option: str = "--dtype", *, training: bool = True
) -> str | None:
    """Warn (UserWarning) before a run whose reduced precision is slower than float32 on this CPU; returns the
    message, or None when there is nothing to warn about (float32, a GPU, a CPU with native support)."""
    message = reduced_precision_warning(dtype, device, option, training=training)
    if message is not None:
        warnings.warn(message, stacklevel=2)
    return message
