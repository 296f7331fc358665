"""`--dtype` and `--fast`: the official default per device, refusals, and the warnings a CPU's instruction
sets call for (bf16 without avx512_bf16/AMX is emulated and slow; oneDNN gains nothing without AVX-512)."""

from __future__ import annotations

import warnings

import pytest
import torch

from mae.train import precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def with_flags(monkeypatch: pytest.MonkeyPatch, flags: set[str] | None) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: None if flags is None else frozenset(flags))


def test_auto_is_the_official_precision_per_device() -> None:
    assert precision.resolve_dtype("auto", CPU) == torch.float32  # the official autocast is off on the CPU
    assert precision.resolve_dtype("auto", CUDA) == torch.float16  # torch.cuda.amp.autocast(): float16
    with pytest.raises(ValueError, match=r"float16 needs CUDA.*bfloat16"):
        precision.resolve_dtype("float16", CPU)
    with pytest.raises(ValueError, match="one of auto"):
        precision.resolve_dtype("float8", CPU)


@pytest.mark.parametrize(
    ("flags", "warned"),
    [({"avx2", "fma"}, True), ({"avx2", "avx512f", "avx512_bf16"}, False), ({"amx_bf16"}, False), (None, False)],
)
def test_bf16_on_a_cpu_without_native_bf16_warns(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], warned: bool
) -> None:
    with_flags(monkeypatch, flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.resolve_dtype("bfloat16", CPU) == torch.bfloat16
        assert precision.resolve_dtype("bfloat16", CUDA) == torch.bfloat16  # GPUs: never this warning
    assert [str(w.message).startswith("--dtype bfloat16 on a CPU without native bf16") for w in caught] == (
        [True] if warned else []
    )


@pytest.mark.parametrize(("flags", "warned"), [({"avx2", "fma"}, True), ({"avx2", "avx512f"}, False), (None, False)])
def test_fast_path_on_a_cpu_without_avx512_warns(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], warned: bool
) -> None:
    with_flags(monkeypatch, flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision.warn_if_fast_path_gains_nothing()
    assert [str(w.message).startswith("--fast on a CPU without AVX-512") for w in caught] == ([True] if warned else [])


def test_scaler_only_for_float16_and_autocast_only_below_float32() -> None:
    assert precision.grad_scaler(CPU, torch.bfloat16).is_enabled() is False
    assert precision.grad_scaler(CPU, torch.float32).is_enabled() is False
    with precision.autocast(CPU, torch.float32)():
        assert not torch.is_autocast_enabled("cpu")
    with precision.autocast(CPU, torch.bfloat16)():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
