"""An opt-in CPU fast path: each `nn.Linear`'s float32 product by whichever of PyTorch's two CPU product
libraries, MKL (the default) or oneDNN, is faster for its shape on the machine it runs on.

Why it exists: 90 % of an MAE forward on a CPU is matrix products, and PyTorch sends float32 products to
MKL. Which library is faster depends on the CPU (`benchmarks/README.md`):
- on a 2-core AVX-512 AMD EPYC (Zen 5) a 4096x4096 product runs at about 200 GFLOP/s through MKL (which
  takes its 256-bit AVX2 code on AMD CPUs) and at about 440 through oneDNN (AVX-512): with every product
  by oneDNN the whole MAE forward becomes about 2x faster;
- on a 2-core AVX2-only AMD EPYC (Zen 3) both libraries run AVX2 code, and oneDNN's is no faster: its
  4096x4096 product ran at 0.78-0.92x MKL's rate, and ViT-B's shapes took 0.93-1.85x MKL's time (one
  thread); with every product by oneDNN a training step ran 0.84x as fast. Choosing per shape by timing
  did not help there either: the shapes where oneDNN timed faster won by 5-30 % on a busy machine, and
  those wins did not hold: in four runs the forward, forward + backward or training step with the timed
  choices ran at 0.80x to 1.18x the default path's speed, noise with losses in it.

How it chooses (`mode="fastest"`, the default):
- on an x86 CPU without AVX-512 (avx2 but no avx512f), every product stays with `F.linear` (MKL), untimed:
  the fast path is then the default path, bit for bit and at its speed (the same calls, no custom operator);
- elsewhere (AVX-512; or a CPU whose flags cannot be read), the first time a product of a new shape runs,
  both libraries compute it on the actual operands, alternating, one warm-up and REPEATS timed calls each;
  the least time counts (other processes can only add time), and oneDNN is kept only where it takes at
  most MARGIN (80 %) of MKL's time, a clear win; a closer call stays with the default. The choice holds for
  that shape for the rest of the process. A shape is (rows and inner size, each rounded down to a power of
  two; output width; the operands' layouts; bias or not; thread count), so a batch of a new size is timed
  again only when it crosses a power of two. The backward pass's two products are chosen the same way,
  each by its own shape. The timing costs a few products per shape, once.
Each choice is logged (logger "mae.onednn", INFO: the `mae` commands show it) and `fast_path_summary()`
sums them up. `mode="always"` sends every product to oneDNN, whatever it costs (the tolerance tests hold
that path).

Determinism. The arithmetic is float32 from end to end (no bf16/tf32 rounding), but oneDNN sums the
products in another order, so where it is chosen outputs differ from the default path by float32 rounding.
The default path stays bit-equal to transformers and the official code; this one is held within a stated
tolerance of it (`tests/test_onednn.py`, `mae verify`), so it is off unless asked for:

    model = mae.create_model("mae_vit_large_patch16", checkpoint_path=...)
    mae.set_onednn_linear(model, True)   # and False to switch back

Because the choice is made per machine, a run with the fast path can differ in its last bits from the same
run on another CPU, and, for a shape where the two libraries time close to the margin, from a rerun on the
same CPU. Within a process each shape keeps its first choice, so a run agrees with itself; under DDP each
process chooses for itself. Where bits must repeat across runs and hosts, leave it off.

What changes: only the class of each `nn.Linear` inside the model: the same module objects keep their
parameters, hooks and names, so `state_dict()`, optimizers and checkpoints are unaffected. Only float32
inputs on the CPU outside autocast take the route; any other input (CUDA, bf16, autocast, a 1-D vector, a
layer of width 0) runs `F.linear` exactly as an `nn.Linear` would. Both routes are registered custom
operators, so autograd (gradients of gradients too) and torch.compile see one opaque product each; the
choice happens at run time, inside the operator, never while compiling.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cpu
from .errors import UserError

log = logging.getLogger(__name__)

# oneDNN is kept only where it takes at most 80 % of MKL's time: a clear win. Closer calls stay with the default,
# since a few timed calls on a busy machine cannot tell them apart (measured: 10 % "wins" that did not hold).
MARGIN = 0.8
WITHOUT_GAIN = (
    "this x86 CPU has no AVX-512, where oneDNN's float32 products are no faster than MKL's (benchmarks/README.md)"
)
REPEATS = 3  # timed calls of each library per new shape, after one warm-up each
Mode = Literal["fastest", "always"]


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


def _by_onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


# --- the choice per shape -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """The timing of one product shape, [rows, inner] x [inner, out], and the library it chose."""

    rows: int
    inner: int
    out: int
    default_s: float  # least time of REPEATS calls by MKL (F.linear)
    onednn_s: float  # the same by oneDNN

    @property
    def onednn(self) -> bool:
        return self.onednn_s <= MARGIN * self.default_s

    def describe(self) -> str:
        chosen = "oneDNN" if self.onednn else "the default (MKL)"
        return (
            f"[{self.rows}, {self.inner}] x [{self.inner}, {self.out}]: MKL {self.default_s * 1e3:.2f} ms, "
            f"oneDNN {self.onednn_s * 1e3:.2f} ms -> {chosen}"
        )


_choices: dict[tuple[object, ...], Choice] = {}
# Whether the fast path times at all here: set by `set_onednn_linear` from the CPU (a plain value, read by
# `FastestLinear.forward`, so that torch.compile guards on it instead of tracing the CPU's flags).
_timing_on = [True]
_said_untimed = [False]
_timing_seconds = [0.0]  # time spent choosing, this process
_recorders: list[set[tuple[object, ...]]] = []


def timing_can_pay_off() -> bool:
    """False on an x86 CPU without AVX-512 (avx2, no avx512f), where oneDNN's float32 products were measured no
    faster than MKL's: the fast path then keeps MKL untimed. True elsewhere, and where the flags are unknown."""
    flags = cpu.cpu_flags()
    return flags is None or "avx2" not in flags or "avx512f" in flags


def _bucket(n: int) -> int:
    """n rounded down to a power of two (n >= 1)."""
    return 1 << (n.bit_length() - 1)


def _shape_key(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[object, ...]:
    inner = x.shape[-1]
    rows = x.numel() // inner
    return (
        _bucket(rows), _bucket(inner), weight.shape[0], x.is_contiguous(), weight.is_contiguous(),
        bias is not None, torch.get_num_threads(),
    )  # fmt: skip


def _time_both(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Choice, Tensor, Tensor]:
    """Both libraries on the actual operands, alternating; the outputs of their last calls."""
    paths: dict[str, Callable[[], Tensor]] = {
        "default": lambda: F.linear(x, weight, bias),
        "oneDNN": lambda: _by_onednn(x, weight, bias),
    }
    outputs = {name: f() for name, f in paths.items()}  # warm-up: oneDNN builds its kernel for the shape here
    best = dict.fromkeys(paths, math.inf)
    for _ in range(REPEATS):
        for name, f in paths.items():
            start = time.perf_counter()
            outputs[name] = f()
            best[name] = min(best[name], time.perf_counter() - start)
    inner = x.shape[-1]
    choice = Choice(x.numel() // inner, inner, weight.shape[0], best["default"], best["oneDNN"])
    return choice, outputs["default"], outputs["oneDNN"]


def _fastest(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if x.numel() == 0:
        return F.linear(x, weight, bias)  # nothing to time
    key = _shape_key(x, weight, bias)
    for recorder in _recorders:
        recorder.add(key)
    choice = _choices.get(key)
    if choice is not None:
        return _by_onednn(x, weight, bias) if choice.onednn else F.linear(x, weight, bias)
    start = time.perf_counter()
    choice, by_default, by_onednn = _time_both(x, weight, bias)
    _timing_seconds[0] += time.perf_counter() - start
    _choices[key] = choice
    log.info("oneDNN fast path: %s", choice.describe())
    return by_onednn if choice.onednn else by_default


def fast_path_choices() -> list[Choice]:
    """Every shape timed so far in this process, in the order met."""
    return list(_choices.values())


def forget_fast_path_choices() -> None:
    """Drop the choices made so far: the next product of each shape is timed again."""
    _choices.clear()
    _timing_seconds[0] = 0.0


@contextmanager
def recording_choices() -> Iterator[list[Choice]]:
    """The choices used by the products run inside the block (timed there or earlier), filled in on exit."""
    keys: set[tuple[object, ...]] = set()
    used: list[Choice] = []
    _recorders.append(keys)
    try:
        yield used
    finally:
        _recorders.remove(keys)
        used += [c for k, c in _choices.items() if k in keys]


def fast_path_summary(choices: list[Choice] | None = None) -> str:
    """One line: how many product shapes went to oneDNN and to MKL, and what that saves where timed."""
    if not timing_can_pay_off():
        return f"oneDNN fast path: every product by the default (MKL), untimed: {WITHOUT_GAIN}"
    choices = fast_path_choices() if choices is None else choices
    if not choices:
        return "oneDNN fast path: no product timed yet (each shape is timed at its first use)"
    fast = sum(c.onednn for c in choices)
    default = sum(c.default_s for c in choices)
    chosen = sum(c.onednn_s if c.onednn else c.default_s for c in choices)
    return (
        f"oneDNN fast path: oneDNN for {fast} of {len(choices)} product shapes, the default (MKL) for "
        f"{len(choices) - fast}, as timed on this CPU; the chosen products take {chosen / default:.2f}x the "
        f"default's time (one of each shape; {_timing_seconds[0]:.1f} s spent timing in this process)"
    )


# --- the two operators ------------------------------------------------------------------------------------


@torch.library.custom_op("mae::onednn_linear", mutates_args=())
def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x @ weight.T + bias by oneDNN: x [..., in], weight [out, in], bias [out] -> [..., out].

    A custom operator, so that autograd and torch.compile treat it as one opaque product (inductor's own
    lowering of the oneDNN call insists on frozen weights).
    """
    return _by_onednn(x, weight, bias)


@torch.library.custom_op("mae::fastest_linear", mutates_args=())
def fastest_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x @ weight.T + bias by MKL or oneDNN, whichever was faster for this shape when first timed here
    (see the module docstring). Opaque to torch.compile, so the timing runs with real tensors."""
    return _fastest(x, weight, bias)


@onednn_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@fastest_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


Product = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def _backward_by(op: Product) -> Callable[[Any, Tensor], tuple[Tensor | None, Tensor | None, Tensor | None]]:
    """The textbook formulas, their products by `op` too (oneDNN takes the transposed views as they are), so
    that gradients of gradients flow through the same registered formulas."""

    def product(a: Tensor, b_transposed: Tensor) -> Tensor:
        """a @ b_transposed.T, differentiable: by `op` where the route applies (not, e.g., for an empty batch)."""
        if _takes_onednn_route(a, b_transposed):
            return op(a, b_transposed, None)
        return a @ b_transposed.t()

    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = product(grad, weight.t())  # [..., out] @ [out, in] -> [..., in]
        grad_2d = grad.reshape(-1, grad.shape[-1])  # [rows, out]
        if ctx.needs_input_grad[1]:
            grad_w = product(grad_2d.t(), x.reshape(-1, x.shape[-1]).t())  # [out, rows] @ [rows, in] -> [out, in]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_2d.sum(0)
        return grad_x, grad_w, grad_b

    return backward


onednn_linear.register_autograd(_backward_by(onednn_linear), setup_context=_setup_context)
fastest_linear.register_autograd(_backward_by(fastest_linear), setup_context=_setup_context)


# --- the layers and the switch ----------------------------------------------------------------------------


class OneDNNLinear(nn.Linear):
    """An `nn.Linear` whose float32 CPU products all run through oneDNN (`mode="always"`)."""

    def forward(self, x: Tensor) -> Tensor:
        if _takes_onednn_route(x, self.weight):
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class FastestLinear(nn.Linear):
    """An `nn.Linear` whose float32 CPU products run by MKL or oneDNN, whichever is faster here for each
    shape (`mode="fastest"`, see the module docstring); plain `F.linear` where timing cannot pay off."""

    def forward(self, x: Tensor) -> Tensor:
        if _timing_on[0] and _takes_onednn_route(x, self.weight):
            return fastest_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


MODES: dict[str, type[nn.Linear]] = {"fastest": FastestLinear, "always": OneDNNLinear}
_SWITCHED = (nn.Linear, *MODES.values())


class NoOneDNNError(UserError, RuntimeError):
    """This PyTorch build has no oneDNN: the fast path cannot be switched on (the message says what to do)."""


def set_onednn_linear(module: nn.Module, enabled: bool, *, mode: Mode = "fastest") -> nn.Module:
    """Route every `nn.Linear` inside `module` through the fast path (True) or back to `F.linear` (False).

    mode: "fastest" (default) times MKL against oneDNN for each product shape at its first use on this CPU
    and keeps oneDNN where it is clearly faster (never slower than the default path, beyond timing noise; on
    an x86 CPU without AVX-512 it keeps MKL untimed); "always" sends every float32 CPU product to oneDNN.
    Works in place and returns `module`. Only plain `nn.Linear` layers are switched (subclasses such as those
    inside `nn.MultiheadAttention` are left alone). Raises `RuntimeError` when this PyTorch build has no
    oneDNN, rather than silently keeping the default path.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if enabled and not onednn_available():
        raise NoOneDNNError(
            "this PyTorch build has no oneDNN (torch.backends.mkldnn.is_available() is False), so the "
            "oneDNN fast path cannot run; leave it off to use PyTorch's default products"
        )
    target = MODES[mode] if enabled else nn.Linear
    if enabled and mode == "fastest":
        _timing_on[0] = timing_can_pay_off()
        if not _timing_on[0] and not _said_untimed[0]:
            _said_untimed[0] = True
            log.info("oneDNN fast path: every product by the default (MKL), untimed: %s", WITHOUT_GAIN)
    for m in module.modules():
        if type(m) in _SWITCHED:
            m.__class__ = target
    return module


def uses_onednn_linear(module: nn.Module) -> bool:
    """True when at least one linear layer inside `module` is switched to the fast path (either mode)."""
    return any(type(m) in (OneDNNLinear, FastestLinear) for m in module.modules())
