"""The oneDNN fast path: within 1e-5 of the default path and of transformers; a switch that changes nothing else;
in its default mode, each product shape by the library that timed faster here (MKL or oneDNN), chosen once."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import mae
import mae.cpu
from helpers import VARIANTS, full_model, small_config
from mae import onednn as onednn_module
from mae.onednn import (
    Choice,
    FastestLinear,
    Mode,
    OneDNNLinear,
    fast_path_choices,
    fast_path_summary,
    fastest_linear,
    forget_fast_path_choices,
    onednn_available,
    onednn_linear,
    recording_choices,
    set_onednn_linear,
    uses_onednn_linear,
)

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this PyTorch build has no oneDNN")
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}  # the stated tolerance of the fast path (README, mae/onednn.py)
MODES: tuple[Mode, ...] = ("always", "fastest")


class _CountOps(TorchDispatchMode):
    """Counts the operators that reach the kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


CAN_PAY_OFF = onednn_module.timing_can_pay_off  # the CPU's own answer (x86 without AVX-512: no timing)


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no product shape timed (the choices are per process), and with the timing on
    whatever the CPU: the tests hold the timed route on every host (the CPU's gate has its own test)."""
    monkeypatch.setattr(onednn_module, "timing_can_pay_off", lambda: True)
    monkeypatch.setattr(onednn_module, "_timing_on", [True])
    monkeypatch.setattr(onednn_module, "_said_untimed", [False])
    forget_fast_path_choices()
    yield
    forget_fast_path_choices()


@contextmanager
def onednn(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Every float32 product by oneDNN: the path whose tolerance these tests hold."""
    set_onednn_linear(model, True, mode="always")
    try:
        yield model
    finally:
        set_onednn_linear(model, False)


def _linear_count(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in model.modules())


@needs_onednn
@pytest.mark.parametrize("variant", [pytest.param(v, marks=pytest.mark.xdist_group(v)) for v in VARIANTS])
def test_full_models_within_tolerance_of_transformers(variant: str) -> None:
    from reference.hf import build_hf, hf_forward

    model = full_model(variant)
    hf = build_hf(model.config, model.state_dict())
    imgs = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), onednn(model):
        for ratio in (0.75, 0.9):
            torch.manual_seed(5)
            h_loss, h_pred, h_mask, _ = hf_forward(hf, imgs, ratio)
            torch.manual_seed(5)
            with _CountOps() as ops:
                loss, pred, mask = model(imgs, mask_ratio=ratio)
            assert ops.counts["mae.onednn_linear"] == _linear_count(model)  # every linear layer took the route
            assert torch.equal(mask, h_mask)
            torch.testing.assert_close(pred, h_pred, **TOLERANCE)
            torch.testing.assert_close(loss, h_loss, **TOLERANCE)


@needs_onednn
@settings(max_examples=15)
@given(
    embed_heads=st.sampled_from([(32, 4), (48, 3), (64, 8)]),
    depth=st.integers(1, 3),
    batch=st.integers(1, 3),
    norm_pix=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_small_models_forward_and_gradients_within_tolerance(
    embed_heads: tuple[int, int], depth: int, batch: int, norm_pix: bool, seed: int
) -> None:
    embed_dim, heads = embed_heads
    torch.manual_seed(seed)
    model = mae.MaskedAutoencoderViT(
        small_config(embed_dim=embed_dim, num_heads=heads, depth=depth, norm_pix_loss=norm_pix)
    )
    imgs = torch.randn(batch, 3, 32, 32)
    noise = torch.rand(batch, model.config.num_patches)

    def run() -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        model.zero_grad()
        outputs = model(imgs, mask_ratio=0.75, noise=noise)
        outputs[0].backward()
        return list(outputs), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    default_out, default_grads = run()
    with onednn(model):
        fast_out, fast_grads = run()
    assert torch.equal(fast_out[2], default_out[2])
    for a, b in zip(fast_out[:2], default_out[:2], strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)
    assert fast_grads.keys() == default_grads.keys() and len(fast_grads) > 0
    for name, grad in fast_grads.items():
        assert grad.isfinite().all(), name
        torch.testing.assert_close(grad, default_grads[name], **TOLERANCE)


@needs_onednn
def test_classifier_logits_within_tolerance() -> None:
    torch.manual_seed(0)
    classifier = mae.VisionTransformer(small_config(), num_classes=7).eval()
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        default = classifier(imgs)
        with onednn(classifier), _CountOps() as ops:
            fast = classifier(imgs)
    assert ops.counts["mae.onednn_linear"] == _linear_count(classifier)
    torch.testing.assert_close(fast, default, **TOLERANCE)


@needs_onednn
def test_the_operator_passes_opcheck() -> None:
    """Schema, fake tensor (torch.compile), and autograd registration of the custom operator."""
    for x, w, b in [
        (torch.randn(5, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True), torch.randn(4)),
        (torch.randn(2, 3, 8), torch.randn(6, 8, requires_grad=True), None),
        (torch.randn(2, 3, 8, requires_grad=True), torch.randn(6, 8), torch.randn(6, requires_grad=True)),
    ]:
        torch.library.opcheck(onednn_linear, (x, w, b))


@needs_onednn
@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 8), (2, 2, 3, 8), (0, 8)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_backward_formulas_equal_autograd_of_f_linear(shape: tuple[int, ...], bias: bool, mode: Mode) -> None:
    layer = torch.nn.Linear(8, 6, bias=bias)
    x = torch.randn(shape, requires_grad=True)
    grad_out = torch.randn(*shape[:-1], 6)
    expected = torch.autograd.grad(layer(x), [x, *layer.parameters()], grad_out)
    set_onednn_linear(layer, True, mode=mode)
    got = torch.autograd.grad(layer(x), [x, *layer.parameters()], grad_out)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)


@needs_onednn
@pytest.mark.xdist_group("compile")
def test_compiled_fast_path_matches_eager() -> None:
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config()).eval()
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad(), onednn(model):
        eager = model(imgs, mask_ratio=0.75, noise=noise)
        compiled = torch.compile(model)(imgs, mask_ratio=0.75, noise=noise)
    assert torch.equal(compiled[2], eager[2])
    torch.testing.assert_close(compiled[1], eager[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(compiled[0], eager[0], atol=1e-5, rtol=0)


@needs_onednn
def test_switch_keeps_modules_parameters_and_state_dict() -> None:
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config()).eval()
    model.extra = torch.nn.MultiheadAttention(8, 2)  # its out_proj is a Linear subclass: left alone
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    state = model.state_dict()
    imgs, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        before = model(imgs, noise=noise)
        assert set_onednn_linear(model, True, mode="always") is model
        assert {type(m) for m in model.modules() if isinstance(m, torch.nn.Linear)} == {
            OneDNNLinear,
            torch.nn.modules.linear.NonDynamicallyQuantizableLinear,
        }
        assert set_onednn_linear(model, True) is model  # the default mode; from one mode to the other
        set_onednn_linear(model, True)  # twice is the same as once
        assert uses_onednn_linear(model)
        switched = [n for n, m in model.named_modules() if type(m) is FastestLinear]
        assert len(switched) == _linear_count(model) - 1 and "extra.out_proj" not in switched
        assert dict(model.named_modules()) == modules  # the same objects under the same names
        assert all(p is params[n] for n, p in model.named_parameters())
        after_state = model.state_dict()
        assert list(after_state) == list(state)
        assert all(after_state[k].data_ptr() == state[k].data_ptr() for k in state)
        set_onednn_linear(model, False)
        assert not uses_onednn_linear(model)
        assert all(type(m) not in (OneDNNLinear, FastestLinear) for m in model.modules())
        again = model(imgs, noise=noise)
    assert all(torch.equal(a, b) for a, b in zip(before, again, strict=True))


@needs_onednn
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
@pytest.mark.parametrize(
    "case",
    ["bfloat16 weights", "bfloat16 autocast", "float64", "vector input", "meta device", "no input features"],
)
@pytest.mark.parametrize("mode", MODES)
def test_other_inputs_run_f_linear_unchanged(case: str, mode: Mode) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "bfloat16 autocast")
    if case == "bfloat16 weights":
        layer, x = layer.to(torch.bfloat16), x.to(torch.bfloat16)
    elif case == "float64":
        layer, x = layer.double(), x.double()
    elif case == "vector input":
        x = x[0]
    elif case == "meta device":
        layer, x = layer.to("meta"), x.to("meta")
    elif case == "no input features":
        layer, x = torch.nn.Linear(0, 4), torch.randn(3, 0)  # y = bias for every row
    with torch.no_grad(), autocast:
        expected = layer(x)
        set_onednn_linear(layer, True, mode=mode)
        with _CountOps() as ops:
            got = layer(x)
    assert ops.counts["mae.onednn_linear"] == ops.counts["mae.fastest_linear"] == 0
    assert fast_path_choices() == []  # nothing timed either
    assert got.dtype == expected.dtype and got.shape == expected.shape and got.device == expected.device
    if case != "meta device":
        assert torch.equal(got, expected)


def test_without_onednn_enabling_raises_and_disabling_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    layer = torch.nn.Linear(4, 4)
    with pytest.raises(RuntimeError, match="no oneDNN"):
        set_onednn_linear(layer, True)
    assert type(layer) is torch.nn.Linear
    assert set_onednn_linear(layer, False) is layer


@needs_onednn
@pytest.mark.parametrize("mode", MODES)
def test_gradients_of_gradients_equal_those_of_f_linear(mode: Mode) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 5)
    x = torch.randn(4, 6, requires_grad=True)

    def hessian_vector_product() -> list[torch.Tensor]:
        y = torch.tanh(layer(x)).pow(2).sum()
        (gx,) = torch.autograd.grad(y, x, create_graph=True)
        return list(torch.autograd.grad(gx.pow(2).sum(), [x, *layer.parameters()]))

    expected = hessian_vector_product()
    set_onednn_linear(layer, True, mode=mode)
    got = hessian_vector_product()
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)


# --- the default mode: the faster library per shape ----------------------------------------------------------


def _by_mkl(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return torch.nn.functional.linear(x, layer.weight, layer.bias)


def _by_onednn(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")


class _Calls:
    """Which library computed each product: the two entry points the fast path calls, wrapped. Observing the call
    holds on every CPU, where the two libraries' bits may or may not differ for a shape (on an AMX Xeon MKL and
    oneDNN gave the same bits for [10, 200] x [200, 48])."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[str] = []
        by_mkl, by_onednn = torch.nn.functional.linear, onednn_module._by_onednn

        def mkl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
            self.made.append("MKL")
            return by_mkl(x, weight, bias)

        def onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            self.made.append("oneDNN")
            return by_onednn(x, weight, bias)

        monkeypatch.setattr(onednn_module, "F", SimpleNamespace(linear=mkl))
        monkeypatch.setattr(onednn_module, "_by_onednn", onednn)

    def take(self) -> list[str]:
        made, self.made = self.made, []
        return made


# What a timed call returns: each library's output marked, so the caller's result names the library it kept.
TIMED_BY = {"MKL": 1.0, "oneDNN": 2.0}


@pytest.fixture
def fake_timings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Timings made up per shape: oneDNN takes half MKL's time for 48 outputs, 0.85x for 40 (a close call, within
    the margin), twice for any other width. The outputs of a timing are marked tensors (`TIMED_BY`). Returns the
    shapes timed, [rows, in] x [in, out], as they are timed."""
    timed: list[tuple[int, int, int]] = []

    def time_both(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[Choice, torch.Tensor, torch.Tensor]:
        rows, inner, out = x.numel() // x.shape[-1], x.shape[-1], weight.shape[0]
        timed.append((rows, inner, out))
        onednn_s = {48: 0.5, 40: 0.85}.get(out, 2.0)
        shape = (*x.shape[:-1], out)
        return (
            Choice(rows, inner, out, 1.0, onednn_s),
            torch.full(shape, TIMED_BY["MKL"]),
            torch.full(shape, TIMED_BY["oneDNN"]),
        )

    monkeypatch.setattr(onednn_module, "_time_both", time_both)
    return timed


def _timed_output_of(y: torch.Tensor) -> str:
    (library,) = [name for name, mark in TIMED_BY.items() if torch.equal(y, torch.full_like(y, mark))]
    return library


@needs_onednn
def test_fastest_mode_runs_each_shape_by_the_library_that_timed_faster(
    fake_timings: list[tuple[int, int, int]], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    wins, loses, ties = torch.nn.Linear(200, 48), torch.nn.Linear(200, 56), torch.nn.Linear(200, 40)
    x = torch.randn(2, 5, 200)  # 10 rows
    for layer in (wins, loses, ties):
        set_onednn_linear(layer, True)
    calls = _Calls(monkeypatch)
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="mae.onednn"):
        # The first call of a shape is timed: it returns the output of the library that timed faster.
        assert _timed_output_of(wins(x)) == "oneDNN"
        assert _timed_output_of(loses(x)) == "MKL"
        assert _timed_output_of(ties(x)) == "MKL"  # 0.85x: within the margin, the default keeps it
        assert calls.take() == []  # the timing computed them, nothing else
        assert fake_timings == [(10, 200, 48), (10, 200, 56), (10, 200, 40)]
        x_more = torch.randn(3, 5, 200)  # 15 rows: the same power-of-two bucket (8-15), not timed again
        for layer, library in ((wins, "oneDNN"), (loses, "MKL"), (ties, "MKL")):
            y = layer(x_more)
            assert calls.take() == [library]
            assert torch.equal(y, _by_onednn(x_more, layer) if library == "oneDNN" else _by_mkl(x_more, layer))
        assert len(fake_timings) == 3
        x_many = torch.randn(4, 5, 200)  # 20 rows: a new bucket, timed once
        wins(x_many), wins(x_many)
        assert fake_timings[3:] == [(20, 200, 48)] and calls.take() == ["oneDNN"]
    assert [c.onednn for c in fast_path_choices()] == [True, False, False, True]
    logged = [r.getMessage() for r in caplog.records if r.name == "mae.onednn"]
    assert len(logged) == 4 and logged[0].endswith("[10, 200] x [200, 48]: MKL 1000.00 ms, oneDNN 500.00 ms -> oneDNN")
    assert logged[1].endswith("-> the default (MKL)")


@needs_onednn
def test_summary_counts_the_choices_and_their_time() -> None:
    choices = [Choice(8, 16, 32, 1.0, 0.5), Choice(8, 32, 16, 3.0, 6.0), Choice(8, 32, 32, 1.0, 0.99)]
    text = fast_path_summary(choices)
    # oneDNN only for the first; chosen time 0.5 + 3.0 + 1.0 against the default's 1 + 3 + 1
    assert text.startswith("oneDNN fast path: oneDNN for 1 of 3 product shapes, the default (MKL) for 2")
    assert f"take {4.5 / 5.0:.2f}x the default's time" in text
    assert "no product timed yet" in fast_path_summary([])


@needs_onednn
@pytest.mark.parametrize("faster", ["MKL", "oneDNN"])
def test_fastest_mode_equals_the_chosen_path_bit_for_bit_forward_and_backward(
    faster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every shape won by MKL, the fast path is the default path; by oneDNN, the `always` path: the
    same outputs and gradients, bit for bit, forward and backward (whose products are chosen by their own
    shapes: more shapes than the forward's)."""
    onednn_s = 0.5 if faster == "oneDNN" else 2.0

    def time_both(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[Choice, torch.Tensor, torch.Tensor]:
        by_default = torch.nn.functional.linear(x, weight, bias)
        by_onednn = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        return Choice(x.numel() // x.shape[-1], x.shape[-1], weight.shape[0], 1.0, onednn_s), by_default, by_onednn

    monkeypatch.setattr(onednn_module, "_time_both", time_both)
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config(embed_dim=48, num_heads=4))
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        model.zero_grad()
        outputs = model(imgs, mask_ratio=0.75, noise=noise)
        outputs[0].backward()
        return list(outputs), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    if faster == "oneDNN":
        set_onednn_linear(model, True, mode="always")
    expected = run()
    set_onednn_linear(model, True)
    with recording_choices() as used:
        got = run()
    forward_shapes = {(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert len(used) > len(forward_shapes)  # the backward's products were timed and chosen too
    assert all(c.onednn == (faster == "oneDNN") for c in used)
    for a, b in zip(got[0] + got[1], expected[0] + expected[1], strict=True):
        assert torch.equal(a, b)


@needs_onednn
@pytest.mark.xdist_group("compile")
def test_compiled_fastest_path_times_at_run_time_and_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first use of each shape happens inside the compiled graphs (forward and backward), timed for real
    with real tensors; compiled outputs and gradients stay within the tolerance of eager ones."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    x = torch.randn(2, 5, 16, requires_grad=True)
    set_onednn_linear(model, True)

    def step(forward: torch.nn.Module) -> list[torch.Tensor]:
        model.zero_grad()
        x.grad = None
        y = forward(x)
        y.pow(2).sum().backward()
        return [y.detach(), x.grad.clone(), *(p.grad.clone() for p in model.parameters())]

    compiled = step(torch.compile(model))
    timed_in_compiled = fast_path_choices()
    assert len(timed_in_compiled) == 2 + 4  # the two forward products, two more per layer in the backward
    assert all(c.default_s > 0 and c.onednn_s > 0 for c in timed_in_compiled)
    eager = step(model)
    assert fast_path_choices() == timed_in_compiled  # eager met no shape that was not chosen already
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)


@needs_onednn
def test_fastest_operator_passes_opcheck() -> None:
    for x, w, b in [
        (torch.randn(5, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True), torch.randn(4)),
        (torch.randn(2, 3, 8), torch.randn(6, 8, requires_grad=True), None),
    ]:
        torch.library.opcheck(fastest_linear, (x, w, b))


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of fastest, always"):
        set_onednn_linear(torch.nn.Linear(2, 2), True, mode="sometimes")  # type: ignore[arg-type]


@needs_onednn
def test_verify_says_what_the_fast_path_chose(fake_timings: list[tuple[int, int, int]]) -> None:
    from mae import verify

    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config(embed_dim=48, num_heads=4)).eval()  # qkv 144, mlp 192 wide...
    shapes = {(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    wins = sum(out == 48 for _, out in shapes)  # the made-up timings: oneDNN wins for 48 outputs only
    row = verify._fast_path_choice("base", model, torch.randn(1, 3, 32, 32))
    assert (row.check, row.status) == ("fast path: its choice on this CPU", "info")
    # Encoder and decoder rows differ, so every layer shape is timed once: as many choices as shapes.
    assert row.detail.startswith(f"oneDNN fast path: oneDNN for {wins} of {len(shapes)} product shapes")
    assert not uses_onednn_linear(model)  # switched back


@needs_onednn
@pytest.mark.parametrize(
    ("flags", "timed"),
    [({"avx2", "fma"}, False), ({"avx2", "fma", "avx512f"}, True), ({"asimd", "fp"}, True), (None, True)],
)
def test_an_x86_cpu_without_avx512_keeps_every_product_with_f_linear_untimed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, flags: set[str] | None, timed: bool
) -> None:
    """Where oneDNN was measured no faster (x86, AVX2 without AVX-512), the fast path is the default path: the
    same `F.linear` calls, nothing timed, bit for bit; elsewhere (AVX-512, ARM, unknown) it times."""
    monkeypatch.setattr(onednn_module, "timing_can_pay_off", CAN_PAY_OFF)
    monkeypatch.setattr(mae.cpu, "cpu_flags", lambda: None if flags is None else frozenset(flags))
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config())
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    expected = model(imgs, mask_ratio=0.75, noise=noise)
    expected[0].backward()
    expected_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    with caplog.at_level(logging.INFO, logger="mae.onednn"):
        set_onednn_linear(model, True)
        set_onednn_linear(model, True)
        with _CountOps() as ops:
            got = model(imgs, mask_ratio=0.75, noise=noise)
            got[0].backward()
    assert (ops.counts["mae.fastest_linear"] > 0) == timed
    assert (len(fast_path_choices()) > 0) == timed
    logged = [r.getMessage() for r in caplog.records if r.name == "mae.onednn"]
    if not timed:
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads, strict=True))
        assert fast_path_summary().startswith("oneDNN fast path: every product by the default (MKL), untimed")
        assert len(logged) == 1 and "no AVX-512" in logged[0]  # said once, not per switch or shape
    else:
        assert not any("untimed" in line for line in logged)
