"""The faster routes of the training benchmarks: what each variant switches on in the shared model, and the
variants that take `--fast`'s choices one at a time and all together (`mae/train/fast_path.py`).

Our variants share one model; each switches its routes on for its own calls and back off after, so that every
variant starts from the default path. The fused-AdamW variants have their own optimizer over the same weights
(`--fast` fuses the optimizer itself); its state is not in the report's state figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

import mae
from mae.attention import Attention
from mae.patch_embed import set_patch_embed_linear
from mae.train.fast_path import FastPath, apply_fast_path


@dataclass(frozen=True)
class Route:
    """One variant's switches (all off: the default path)."""

    dtype: torch.dtype = torch.float32
    onednn: bool = False  # float32 CPU linear layers by MKL or oneDNN per shape (`mae.set_onednn_linear`)
    written_attention: tuple[bool, ...] | None = None  # per Attention, in module order: written out; None: SDPA
    patch_linear: bool = False  # the patch embedding as one product
    fused_adamw: bool = False


# Variant name -> (label, what it takes): `--fast`'s choices one at a time, then all of them.
FAST_VARIANTS = {
    "bf16_attn": "ours, bf16 + written-out attention",
    "bf16_adamw": "ours, bf16 + fused AdamW",
    "bf16_fast": "ours --fast --dtype bfloat16 (attention as timed here, patch embedding as a product, fused AdamW)",
    "fast_adamw": "ours --fast, float32 (oneDNN per shape, attention as timed here, fused AdamW)",
}
# The pre-training benchmark's float16 route (`--fast --dtype float16`: the GPU recipe's precision, fast).
FP16_VARIANTS = {
    "fp16_fast": "ours --fast --dtype float16 (attention as chosen here, fused AdamW; loss scaling)",
}
ROUTED = (*FAST_VARIANTS, *FP16_VARIANTS)  # the variants `route_of` knows


def attentions(model: nn.Module) -> list[Attention]:
    return [m for m in model.modules() if isinstance(m, Attention)]


def fast_route(
    model: nn.Module, device: torch.device, dtype: torch.dtype, batch: int, tokens: Mapping[str, int]
) -> tuple[Route, FastPath]:
    """`--fast`'s choices for `model` in `dtype` here (timed as `mae pretrain --fast` times them), as a Route;
    the model is left on the default path."""
    scratch = torch.optim.AdamW([nn.Parameter(torch.zeros(1, device=device))])
    plan = apply_fast_path(model, scratch, True, device, dtype, batch, tokens)
    route = Route(
        dtype=dtype,
        onednn=plan.onednn,
        written_attention=tuple(not m.fused for m in attentions(model)),
        patch_linear=plan.patch_embed_linear,
        fused_adamw=plan.fused_adamw,
    )
    reset(model)
    return route, plan


def route_of(
    name: str, model: nn.Module, device: torch.device, batch: int, tokens: Mapping[str, int]
) -> tuple[Route, FastPath | None]:
    """The Route of one of FAST_VARIANTS or FP16_VARIANTS (and `--fast`'s plan, where it takes it)."""
    written = tuple(True for _ in attentions(model))
    if name == "bf16_attn":
        return Route(torch.bfloat16, written_attention=written), None
    if name == "bf16_adamw":
        return Route(torch.bfloat16, fused_adamw=True), None
    if name == "bf16_fast":
        return fast_route(model, device, torch.bfloat16, batch, tokens)
    if name == "fast_adamw":
        return fast_route(model, device, torch.float32, batch, tokens)
    if name == "fp16_fast":
        return fast_route(model, device, torch.float16, batch, tokens)
    raise ValueError(f"not a fast-path variant: {name!r}")


def reset(model: nn.Module) -> None:
    """Back to the default path: MKL, SDPA, the convolution."""
    mae.set_onednn_linear(model, False)
    mae.set_fused_attn(model, True)
    set_patch_embed_linear(model, False)


@contextmanager
def taken(model: nn.Module, route: Route) -> Iterator[None]:
    """`route`'s switches on `model` inside the block (the optimizer is the caller's)."""
    mae.set_onednn_linear(model, route.onednn)
    if route.written_attention is not None:
        for m, written in zip(attentions(model), route.written_attention, strict=True):
            m.fused = not written
    set_patch_embed_linear(model, route.patch_linear)
    try:
        yield
    finally:
        reset(model)


def optimizer_for(route: Route, default: torch.optim.Optimizer, fused: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return fused if route.fused_adamw else default
