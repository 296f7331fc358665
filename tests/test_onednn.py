"""The oneDNN fast path: within 1e-5 of the default path and of transformers; a switch that changes nothing else."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import mae
from helpers import VARIANTS, full_model, small_config
from mae.onednn import OneDNNLinear, onednn_available, onednn_linear, set_onednn_linear, uses_onednn_linear

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this PyTorch build has no oneDNN")
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}  # the stated tolerance of the fast path (README, mae/onednn.py)


class _CountOps(TorchDispatchMode):
    """Counts the operators that reach the kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def onednn(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    set_onednn_linear(model, True)
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
def test_backward_formulas_equal_autograd_of_f_linear(shape: tuple[int, ...], bias: bool) -> None:
    layer = torch.nn.Linear(8, 6, bias=bias)
    x = torch.randn(shape, requires_grad=True)
    grad_out = torch.randn(*shape[:-1], 6)
    expected = torch.autograd.grad(layer(x), [x, *layer.parameters()], grad_out)
    set_onednn_linear(layer, True)
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
        assert set_onednn_linear(model, True) is model
        set_onednn_linear(model, True)  # twice is the same as once
        assert uses_onednn_linear(model)
        switched = [n for n, m in model.named_modules() if type(m) is OneDNNLinear]
        assert len(switched) == _linear_count(model) - 1 and "extra.out_proj" not in switched
        assert dict(model.named_modules()) == modules  # the same objects under the same names
        assert all(p is params[n] for n, p in model.named_parameters())
        after_state = model.state_dict()
        assert list(after_state) == list(state)
        assert all(after_state[k].data_ptr() == state[k].data_ptr() for k in state)
        set_onednn_linear(model, False)
        assert not uses_onednn_linear(model)
        assert all(type(m) is not OneDNNLinear for m in model.modules())
        again = model(imgs, noise=noise)
    assert all(torch.equal(a, b) for a, b in zip(before, again, strict=True))


@needs_onednn
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
@pytest.mark.parametrize(
    "case",
    ["bfloat16 weights", "bfloat16 autocast", "float64", "vector input", "meta device", "no input features"],
)
def test_other_inputs_run_f_linear_unchanged(case: str) -> None:
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
        set_onednn_linear(layer, True)
        with _CountOps() as ops:
            got = layer(x)
    assert ops.counts["mae.onednn_linear"] == 0
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
def test_gradients_of_gradients_equal_those_of_f_linear() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 5)
    x = torch.randn(4, 6, requires_grad=True)

    def hessian_vector_product() -> list[torch.Tensor]:
        y = torch.tanh(layer(x)).pow(2).sum()
        (gx,) = torch.autograd.grad(y, x, create_graph=True)
        return list(torch.autograd.grad(gx.pow(2).sum(), [x, *layer.parameters()]))

    expected = hessian_vector_product()
    set_onednn_linear(layer, True)
    got = hessian_vector_product()
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)
