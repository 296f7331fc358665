"""The host a benchmark runs on, and the goals its own measured ceilings allow.

The same code is 2x faster on one CPU and no faster on another: on an AVX-512 AMD EPYC (Zen 5) oneDNN's
float32 product ran at twice MKL's and bf16 autocast at about 3x float32; on an AVX2-only EPYC (Zen 3)
oneDNN's products are no faster than MKL's and bf16 products are emulated, several times *slower*. A goal
stated as a fixed ratio from one host is then met or missed by the hardware, not by the code. So each
benchmark measures this host's ceilings in the same run (a large float32 product by both libraries; a
product in bf16 against float32) and holds each speed goal to what they allow:

- the fast path: where oneDNN's product is at least GAIN times the default's (R), the fast path must reach
  SHARE of that gain over the default path; where it is not, the fast path must not be slower than the
  default path (beyond NOISE);
- the goals against the references (e.g. the issue's "ours / official <= 0.90"): as stated where the host's
  products allow a gain, else relaxed to "not slower" (NOISE / expected gain, at most the goal's looseness);
- bf16: where its products are at least GAIN times float32's here, the stated speed-up (at most SHARE of the
  product gain); where they are slower, the goal becomes "the commands warn before a bf16 run".

"Not slower" allows for noise: NOISE (5 %), or more where the run itself shows more, i.e. where two
implementations that run the same kernels (transformers and the official code in the forward benchmark;
our default path and the official engine in the training one) differed by more in the same run, as they
do on a busy shared machine.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from mae import cpu

NOISE = 1.05  # ratios within 5 % of each other are noise on a shared 2-core machine
GAIN = 1.2  # a product ratio from this up is a real gain, worth a goal
SHARE = 0.75  # the share of a product's gain a whole forward or training step is held to


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads"


def describe(device: torch.device) -> str:
    """The machine, with the CPU's vector instruction sets (what oneDNN's and bf16's speed depends on)."""
    native = cpu.cpu_has_native(torch.bfloat16)
    text = (
        f"{machine()}; CPU instruction sets: {cpu.instruction_sets()}; torch CPU kernels: "
        f"{torch.backends.cpu.get_cpu_capability()}; native bf16 on the CPU: "
        + {True: "yes", False: "no (bf16 products are emulated)", None: "unknown"}[native]
    )
    if device.type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)}"
    return text


def noise_floor(same_kernel_ratios: list[float]) -> float:
    """The noise allowance of a run: NOISE, or the largest ratio (either way) between two implementations that
    run the same kernels in that run, if larger."""
    return max([NOISE, *(max(r, 1 / r) for r in same_kernel_ratios if r > 0)])


def fast_gain(product_ratio: float | None) -> float:
    """The speed-up the fast path can bring on this host: oneDNN's product rate over the default's where that
    is a real gain (>= GAIN), else 1 (the fast path then keeps the default's products)."""
    return product_ratio if product_ratio is not None and product_ratio >= GAIN else 1.0


def fast_over_default_bound(product_ratio: float | None, noise: float = NOISE) -> float:
    """The least speed-up of the fast path over the default path (default time / fast time) to ask for."""
    gain = fast_gain(product_ratio)
    return SHARE * gain if gain > 1.0 else 1 / noise


def time_ratio_bound(goal: float, gain: float, noise: float = NOISE) -> float:
    """A time-ratio goal (ours / reference <= goal) held to this host: as stated where the host allows a gain,
    else noise / gain (not slower, within noise)."""
    return max(goal, noise / gain)


def speed_ratio_bound(goal: float, gain: float, noise: float = NOISE) -> float:
    """A speed-ratio goal (ours / reference >= goal) held to this host: at most the host's gain, within noise."""
    return min(goal, gain / noise)


def precision_ceiling(dtype: torch.dtype, device: torch.device, *, training: bool) -> dict[str, Any]:
    """bf16 (or float16) products against float32 on this host: their speed-ratio (float32 time / reduced time,
    the slower of the forward's and, with `training`, the backward's product) and whether `mae` warns.

    Both come from one measurement, the one `mae`'s commands make before a run (`cpu.measure_product_cost`, made
    once per process): two measurements of the same products on a busy machine can fall on either side of a
    threshold, and the goal chosen from one would then be judged by the other."""
    if device.type != "cpu":
        return {"speedup": None, "warned": False, "detail": "GPU: native reduced precision assumed"}
    cost = cpu.measure_product_cost(dtype, backward=training)
    warning = cpu.reduced_precision_warning(dtype, device, training=training)
    return {
        "speedup": 1 / cost.slowest_ratio,
        "warned": warning is not None,
        "slower": cost.slower,
        "detail": cost.describe(),
    }


def warning_is_the_goal(ceiling: dict[str, Any] | None) -> bool:
    """Whether a reduced precision's goal on this host is the warning before a run rather than a speed-up: where
    the commands find its products slower (`cpu.ProductCost.slower`, from the same measurement as `warned`)."""
    if not ceiling or ceiling.get("speedup") is None:
        return False  # not measured, or a GPU
    if "slower" in ceiling:
        return bool(ceiling["slower"])
    return 1 / float(ceiling["speedup"]) >= cpu.SLOWER  # results written before "slower" was recorded
