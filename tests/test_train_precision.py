"""`--dtype` and `--fast`: the official default per device, refusals, and what a CPU calls for: a warning, with
the measured figures, where bf16/float16 products are slower than float32 (emulated: no avx512_bf16/AMX);
a note of how `--fast` will choose."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from mae import cpu
from mae.train import precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def with_flags(monkeypatch: pytest.MonkeyPatch, flags: set[str] | None) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: None if flags is None else frozenset(flags))


def with_cost(monkeypatch: pytest.MonkeyPatch, forward: float, backward: float) -> list[torch.dtype]:
    """Made-up timings: the reduced precision takes `forward` and `backward` times float32's 10 ms.
    Returns the dtypes measured, call by call."""
    measured: list[torch.dtype] = []

    def measure(dtype: torch.dtype, **options: object) -> cpu.ProductCost:
        measured.append(dtype)
        return cpu.ProductCost(dtype, 0.010, 0.010 * forward, 0.010, 0.010 * backward)

    monkeypatch.setattr(cpu, "measure_product_cost", measure)
    return measured


def test_auto_is_the_official_precision_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert precision.resolve_dtype("auto", CPU) == torch.float32  # the official autocast is off on the CPU
    assert precision.resolve_dtype("auto", CUDA) == torch.float16  # torch.cuda.amp.autocast(): float16
    with_cost(monkeypatch, 1.0, 1.0)  # float16 as fast as float32 here: no warning (tests/test_float16.py)
    assert precision.resolve_dtype("float16", CPU) == torch.float16  # CPU autocast float16 + GradScaler("cpu")
    with pytest.raises(ValueError, match="one of auto"):
        precision.resolve_dtype("float8", CPU)


@pytest.mark.parametrize(
    ("flags", "forward", "backward", "warned"),
    [
        ({"avx2", "fma"}, 6.8, 47.0, True),  # the AVX2-only EPYC's figures
        ({"avx2", "fma"}, 1.0, 9.0, True),  # a fast forward product, a slow backward one: training suffers
        ({"avx2", "avx512f", "avx512_bf16"}, 0.35, 0.4, False),  # native bf16: faster
        ({"amx_bf16"}, 1.1, 1.1, False),  # within the 1.2x noise allowance
        (None, 3.0, 3.0, True),  # no /proc/cpuinfo: the measurement still tells
    ],
)
def test_bf16_slower_than_float32_on_this_cpu_warns_with_the_measured_figures(
    monkeypatch: pytest.MonkeyPatch, flags: set[str] | None, forward: float, backward: float, warned: bool
) -> None:
    with_flags(monkeypatch, flags)
    measured = with_cost(monkeypatch, forward, backward)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.resolve_dtype("bfloat16", CPU) == torch.bfloat16
        assert precision.resolve_dtype("bfloat16", CUDA) == torch.bfloat16  # GPUs: never measured nor warned
        assert precision.resolve_dtype("float32", CPU) == torch.float32
    assert measured == [torch.bfloat16]
    messages = [str(w.message) for w in caught]
    assert len(messages) == (1 if warned else 0)
    if warned:
        (message,) = messages
        assert message.startswith("--dtype bfloat16 on this CPU will be slower than float32, not faster")
        assert (
            f"took {forward:.1f}x float32's time" in message and f"a backward pass's product {backward:.1f}x" in message
        )
        assert f"({forward * 10:.1f} ms vs 10.0 ms)" in message
        emulated = "this CPU has no avx512_bf16 or amx_bf16, so PyTorch emulates bfloat16 products"
        assert (emulated in message) == (flags is not None)


def test_the_real_measurement_runs_and_gives_positive_figures() -> None:
    """On this machine, for real, but only its shape: which side of SLOWER a timing falls on a busy machine is
    not a test's to decide (the decisions are tested above, on made-up timings on both sides)."""
    cost = cpu.measure_product_cost(torch.bfloat16)
    assert cost.dtype == torch.bfloat16 and cost.float32_s > 0 and cost.reduced_s > 0
    assert cost.backward_float32_s is not None and cost.backward_float32_s > 0
    assert cost.backward_ratio is not None and cost.backward_ratio > 0 and cost.forward_ratio > 0
    assert cost.slower == (max(cost.forward_ratio, cost.backward_ratio) >= cpu.SLOWER)
    assert "float32's time in bfloat16 autocast" in cost.describe()


def test_instruction_sets_name_what_is_there_and_what_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    with_flags(monkeypatch, {"avx2", "fma", "sse4_2"})
    assert cpu.instruction_sets() == "avx2 fma (no avx512f, avx512_bf16, avx512_fp16, amx_bf16, amx_fp16)"
    with_flags(monkeypatch, set(cpu.SHOWN_FLAGS))
    assert cpu.instruction_sets() == " ".join(cpu.SHOWN_FLAGS)
    with_flags(monkeypatch, None)
    assert cpu.instruction_sets().startswith("unknown")
    assert cpu.cpu_has_native(torch.bfloat16) is None and cpu.cpu_has_native_bf16()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [({"avx2", "fma"}, "every linear product stays with the default (MKL)"), ({"avx2", "avx512f"}, "timed once")],
)
def test_fast_path_says_how_it_will_choose(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, flags: set[str], expected: str
) -> None:
    with_flags(monkeypatch, flags)
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="mae.train.precision"):
        warnings.simplefilter("error")  # no longer a warning: the fast path cannot be slower than the default
        precision.warn_if_fast_path_gains_nothing()
    (record,) = caplog.records
    assert record.getMessage().startswith("--fast: ") and expected in record.getMessage()


def test_scaler_only_for_float16_and_autocast_only_below_float32() -> None:
    assert precision.grad_scaler(CPU, torch.bfloat16).is_enabled() is False
    assert precision.grad_scaler(CPU, torch.float32).is_enabled() is False
    with precision.autocast(CPU, torch.float32)():
        assert not torch.is_autocast_enabled("cpu")
    with precision.autocast(CPU, torch.bfloat16)():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
