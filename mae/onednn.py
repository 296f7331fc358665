"""An opt-in CPU fast path: every `nn.Linear` computed by oneDNN instead of the default BLAS.

Why it exists: 90 % of an MAE forward on a CPU is matrix products, and PyTorch sends float32 products
to MKL. On the project's 2-core AMD EPYC (Zen 5) a 4096x4096 float32 product runs at about 200 GFLOP/s
through MKL, about what 256-bit (AVX2) instructions allow on these cores, and at about 440 GFLOP/s
through oneDNN (also part of every x86 PyTorch build), which reports using AVX-512 here; the whole MAE
forward becomes about 2x faster (`benchmarks/README.md`). Other CPUs were not measured: the benchmark
(`python -m benchmarks forward`) times both paths on yours.

What changes: the arithmetic is still float32 from end to end (no bf16/tf32 rounding), but oneDNN sums
the products in another order, so outputs differ from the default path by float32 rounding. The
default path stays bit-equal to transformers and the official code; this one is held within a stated
tolerance of it (`tests/test_onednn.py`, `mae verify`), so it is off unless asked for:

    model = mae.create_model("mae_vit_large_patch16", checkpoint_path=...)
    mae.set_onednn_linear(model, True)   # and False to switch back

The switch changes only the class of each `nn.Linear` inside the model: the same module objects keep
their parameters, hooks and names, so `state_dict()`, optimizers and checkpoints are unaffected. Only
float32 inputs on the CPU outside autocast take the oneDNN route; any other input (CUDA, bf16, autocast,
a 1-D vector, a layer of width 0) runs `F.linear` exactly as an `nn.Linear` would. Gradients flow, and
the backward pass's products run through oneDNN as well (gradients of gradients too).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def onednn_available() -> bool:
    """True when this PyTorch build can run float32 linear layers through oneDNN."""
    built_with_onednn = bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]
    return built_with_onednn and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _takes_onednn_route(x: Tensor, weight: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() >= 2
        and weight.numel() > 0  # oneDNN refuses a layer with no inputs or no outputs
        and not torch.is_autocast_enabled("cpu")
    )


@torch.library.custom_op("mae::onednn_linear", mutates_args=())
def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x @ weight.T + bias by oneDNN: x [..., in], weight [out, in], bias [out] -> [..., out].

    A custom operator, so that autograd and torch.compile treat it as one opaque product (inductor's own
    lowering of the oneDNN call insists on frozen weights).
    """
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@onednn_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The textbook formulas, their products by this operator too (oneDNN takes the transposed views as they
    are), so that gradients of gradients flow through the same registered formulas."""
    x, weight = ctx.saved_tensors
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = _product(grad, weight.t())  # [..., out] @ [out, in] -> [..., in]
    grad_2d = grad.reshape(-1, grad.shape[-1])  # [rows, out]
    if ctx.needs_input_grad[1]:
        grad_w = _product(grad_2d.t(), x.reshape(-1, x.shape[-1]).t())  # [out, rows] @ [rows, in] -> [out, in]
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = grad_2d.sum(0)
    return grad_x, grad_w, grad_b


def _product(a: Tensor, b_transposed: Tensor) -> Tensor:
    """a @ b_transposed.T, differentiable: by oneDNN where it applies (not, e.g., for an empty batch)."""
    if _takes_onednn_route(a, b_transposed):
        return onednn_linear(a, b_transposed, None)
    return a @ b_transposed.t()


onednn_linear.register_autograd(_backward, setup_context=_setup_context)


class OneDNNLinear(nn.Linear):
    """An `nn.Linear` whose float32 CPU forward runs through oneDNN (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if _takes_onednn_route(x, self.weight):
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def set_onednn_linear(module: nn.Module, enabled: bool) -> nn.Module:
    """Route every `nn.Linear` inside `module` through oneDNN (True) or back to `F.linear` (False).

    Works in place and returns `module`. Only plain `nn.Linear` layers are switched (subclasses such as
    those inside `nn.MultiheadAttention` are left alone). Raises `RuntimeError` when this PyTorch build
    has no oneDNN, rather than silently keeping the default path.
    """
    if enabled and not onednn_available():
        raise RuntimeError(
            "this PyTorch build has no oneDNN (torch.backends.mkldnn.is_available() is False), so the "
            "oneDNN fast path cannot run; leave it off to use PyTorch's default products"
        )
    before, after = (nn.Linear, OneDNNLinear) if enabled else (OneDNNLinear, nn.Linear)
    for m in module.modules():
        if type(m) is before:
            m.__class__ = after
    return module


def uses_onednn_linear(module: nn.Module) -> bool:
    """True when at least one linear layer inside `module` is switched to oneDNN."""
    return any(type(m) is OneDNNLinear for m in module.modules())
