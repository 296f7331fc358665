"""Properties of the pre-training recipe's pieces, over many random cases (hypothesis).

- `CosineSchedule`: linear warmup from 0, continuous at the end of warmup (the peak lr), non-increasing
  after it, ends at min_lr at t = epochs, equal to the half-cycle cosine written here, and `apply` honours
  a group's `lr_scale`; `base_learning_rate` is blr x effective batch / 256.
- `param_groups_weight_decay`: every trainable parameter in exactly one group, [no-decay, decay], each in
  `named_parameters` order; frozen tensors left out; the split equals one derived here from module types
  (Linear/Conv weights and the 3-D class and mask tokens decay; biases and LayerNorm parameters do not).
- Gradient accumulation: with accum_iter k and micro-batches of b, the gradient the optimizer sees and the
  update it makes equal one step on the concatenated batch of k x b (same masking noise) within 1e-6.
  This is why the engine divides the loss by accum_iter: the sum of the micro-batch gradients is then the
  gradient of the whole batch's mean loss (every sample removes the same number of patches). AdamW's step
  hardly depends on the gradient's scale, so the gradients are compared too, not only the weights.
  float64, for the reason given in `tests/test_train_parity.py` (AdamW amplifies rounding noise on the
  key bias, whose exact gradient is zero).
"""

from __future__ import annotations

import copy
import math
from itertools import pairwise
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from train_helpers import FixedNoise

import mae
from helpers import small_config
from mae.train.engine_pretrain import train_one_epoch
from mae.train.optim import build_adamw, param_groups_weight_decay
from mae.train.precision import grad_scaler
from mae.train.schedule import CosineSchedule, base_learning_rate


@st.composite
def schedules(draw: st.DrawFn) -> CosineSchedule:
    epochs = draw(st.integers(1, 1600))
    warmup = draw(st.integers(0, epochs - 1))
    lr = draw(st.floats(1e-7, 10.0))
    min_lr = lr * draw(st.sampled_from([0.0, 1e-3, 0.1, 0.5, 1.0]) | st.floats(0.0, 1.0))
    return CosineSchedule(lr, min_lr, warmup, epochs)


def cosine(s: CosineSchedule, t: float) -> float:
    """Half-cycle cosine from the peak at the end of warmup to min_lr at t = epochs, written here."""
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (
        1.0 + math.cos(math.pi * (t - s.warmup_epochs) / (s.epochs - s.warmup_epochs))
    )


@given(s=schedules(), fractions=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=20))
def test_schedule_warms_up_linearly_then_decays_by_half_cosine(s: CosineSchedule, fractions: list[float]) -> None:
    w, e = s.warmup_epochs, s.epochs
    if w > 0:
        assert s(0.0) == 0.0  # khởi động từ 0
        for u in fractions:
            t = u * w
            if t < w:
                assert s(t) == pytest.approx(s.lr * t / w, rel=1e-12, abs=0)
        # Liên tục tại cuối giai đoạn khởi động: sát biên bên trái gần bằng đỉnh lr.
        assert abs(s(w * (1 - 1e-10)) - s(w)) <= 1e-9 * s.lr
    assert s(w) == pytest.approx(s.lr, rel=1e-12)
    after = sorted(w + u * (e - w) for u in fractions)
    values = [s(t) for t in after]
    assert all(a >= b for a, b in pairwise(values)), "the lr rises after warmup"
    for t, v in zip(after, values, strict=True):
        assert v == pytest.approx(cosine(s, t), rel=1e-9, abs=1e-15 * s.lr)
        assert s.min_lr - 1e-15 * s.lr <= v <= s.lr * (1 + 1e-15)
    assert s(float(e)) == pytest.approx(s.min_lr, rel=1e-12, abs=1e-15 * s.lr)


@given(
    s=schedules(),
    u=st.floats(0.0, 1.0),
    scales=st.lists(st.none() | st.floats(0.0, 2.0), min_size=1, max_size=5),
)
def test_schedule_apply_sets_every_group_times_its_lr_scale(
    s: CosineSchedule, u: float, scales: list[float | None]
) -> None:
    groups: list[dict[str, Any]] = []
    for scale in scales:
        group: dict[str, Any] = {"params": [nn.Parameter(torch.zeros(1))]}
        if scale is not None:
            group["lr_scale"] = scale  # như layer-wise lr decay khi tinh chỉnh
        groups.append(group)
    optimizer = torch.optim.AdamW(groups, lr=123.0)
    t = u * s.epochs
    assert s.apply(optimizer, t) == s(t)
    for group, scale in zip(optimizer.param_groups, scales, strict=True):
        assert group["lr"] == (s(t) if scale is None else s(t) * scale)


@given(blr=st.floats(1e-6, 1.0), batch=st.integers(1, 4096), accum=st.integers(1, 64), world=st.integers(1, 64))
def test_base_learning_rate_is_linear_in_the_effective_batch(blr: float, batch: int, accum: int, world: int) -> None:
    assert base_learning_rate(blr, batch * accum * world) == pytest.approx(blr * (batch * accum * world) / 256)


def expected_decay(model: nn.Module) -> dict[str, bool]:
    """Whether each trainable parameter decays, derived from the module that owns it."""
    out: dict[str, bool] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if not param.requires_grad:
                continue
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                out[full] = name == "weight"  # ma trận trọng số thì phạt, bias thì không
            elif isinstance(module, nn.LayerNorm):
                out[full] = False
            else:
                assert name in ("cls_token", "mask_token"), full  # các token học được (3-D) thì có phạt
                out[full] = True
    return out


@settings(max_examples=25)
@given(
    depth=st.integers(1, 3),
    decoder_depth=st.integers(1, 2),
    heads=st.sampled_from([1, 2, 4]),
    weight_decay=st.floats(0.0, 1.0),
    data=st.data(),
)
def test_weight_decay_groups_cover_every_trainable_parameter_once(
    depth: int, decoder_depth: int, heads: int, weight_decay: float, data: st.DataObject
) -> None:
    model = mae.MaskedAutoencoderViT(small_config(depth=depth, decoder_depth=decoder_depth, num_heads=heads))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for name in data.draw(st.sets(st.sampled_from(names), max_size=6), label="frozen"):
        model.get_parameter(name).requires_grad_(False)
    groups = param_groups_weight_decay(model, weight_decay)

    assert [g["weight_decay"] for g in groups] == [0.0, weight_decay]
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decays = expected_decay(model)
    for group, decay in zip(groups, (False, True), strict=True):
        expected = [p for n, p in trainable if decays[n] == decay]  # đúng thứ tự named_parameters
        assert [id(p) for p in group["params"]] == [id(p) for p in expected]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for _, p in trainable)  # mỗi tham số đúng một lần, bảng cố định bị bỏ
    assert id(model.pos_embed) not in ids and id(model.decoder_pos_embed) not in ids


def one_step(model: mae.MaskedAutoencoderViT, images: list[Tensor], noises: list[Tensor], accum: int) -> dict[str, Any]:
    """One optimizer step of the engine over the given micro-batches: the gradients it saw, the weights after."""
    optimizer = build_adamw(model, 1e-3, 0.05)
    seen: dict[str, Any] = {}

    def grads(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        seen["grads"] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    optimizer.register_step_pre_hook(grads)
    loader = [(x, torch.zeros(len(x), dtype=torch.long)) for x in images]
    schedule = CosineSchedule(1e-3, 0.0, 0, 1)  # không khởi động: lr(0) là lr đỉnh
    scaler = grad_scaler(torch.device("cpu"), torch.float32)
    train_one_epoch(
        FixedNoise(model, noises), loader, optimizer, scaler, schedule, 0, steps=len(loader), accum_iter=accum
    )
    seen["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
    return seen


def assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6, msg=lambda message: f"{what}: {message}")


@settings(max_examples=12)
@given(accum=st.integers(1, 3), batch=st.integers(1, 3), norm_pix_loss=st.booleans(), seed=st.integers(0, 2**16))
def test_accumulated_step_equals_one_step_on_the_concatenated_batch(
    accum: int, batch: int, norm_pix_loss: bool, seed: int
) -> None:
    torch.manual_seed(seed)
    model = mae.MaskedAutoencoderViT(small_config(norm_pix_loss=norm_pix_loss)).double()
    images = torch.randn(accum * batch, 3, 32, 32, dtype=torch.float64)
    noise = torch.rand(accum * batch, model.config.num_patches)
    initial = copy.deepcopy(model)

    micro = one_step(model, list(torch.split(images, batch)), list(torch.split(noise, batch)), accum)
    whole = one_step(initial, [images], [noise], 1)

    assert list(micro["grads"]) == list(whole["grads"])
    for name, grad in whole["grads"].items():
        assert_close(micro["grads"][name], grad, f"gradient of {name}")
    for key, value in whole["weights"].items():
        assert_close(micro["weights"][key], value, f"{key} after the step")
