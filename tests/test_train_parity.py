"""Step parity of the pre-training engine with an independent loop around transformers' MAE.

`mae.train.engine_pretrain.train_one_epoch` (with `build_adamw` and `CosineSchedule`) trains our model;
a loop written here from torch primitives trains transformers' `ViTMAEForPreTraining` holding the same
initial weights (q/k/v split from our fused qkv), on the same batches with the same masking noise. The
loop computes everything itself: lr = blr x effective batch / 256, linear warmup then half-cycle cosine
at the fractional epoch (set at accumulation boundaries), AdamW betas (0.9, 0.95) with its own
weight-decay groups, loss / accum_iter before backward, a step every accum_iter batches, the gradients of
an unfinished accumulation dropped at the next epoch's start. At EVERY optimizer step the gradients it
used and, after it, every weight of the two models (transformers' q/k/v fused back) agree within 1e-6
(measured: 1.5e-12), and so do the learning rates, for accum_iter 1, 2 and 3 (5 batches per epoch: 2
and 3 leave a partial accumulation), over 2 epochs (warmup and cosine, an epoch boundary), for both
targets (pixels, per-patch normalised pixels).

Why float64: the gradient of the key bias is zero in exact arithmetic (adding the same vector to every
key adds one constant to a query's scores, which the softmax ignores). In float32 it is rounding noise
of about 1e-10, different in each implementation, and AdamW divides it by sqrt(v) + 1e-8: its update is
a sizeable fraction of the lr whichever way the noise fell (measured: up to 1e-6 at lr 8e-6, 2e-4 at
lr 8e-4, always on an attention qkv bias, everything else within 3e-8). In float64 that noise is some
5e8 times smaller, so the comparison measures the algorithm, not the rounding. The float32 path is
proven bit-equal to the official engine in `tests/test_official_train.py`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor, nn

import mae
from helpers import small_config
from mae.train.engine_pretrain import train_one_epoch
from mae.train.optim import build_adamw
from mae.train.precision import grad_scaler
from mae.train.schedule import CosineSchedule, base_learning_rate
from reference.hf import hf_config, hf_to_official, official_to_hf

STEPS = 5  # batches per epoch: accum_iter 2 and 3 leave a partial accumulation at the end of each epoch
BATCH = 2
EPOCHS = 2
WARMUP = 1
BLR = 0.5  # lr = 4e-3 x accum_iter; large lr and weight decay make any error in them show far above 1e-6
MIN_LR = 1e-3
WEIGHT_DECAY = 0.5
SEED = 7  # the masking noise of both runs
DTYPE = torch.float64
TOL = 1e-6


def make_batches(images_seed: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(images_seed)
    return [
        (torch.randn(BATCH, 3, 32, 32, generator=g, dtype=DTYPE), torch.zeros(BATCH, dtype=torch.long))
        for _ in range(STEPS)
    ]


def lr_at(t: float, peak: float) -> float:
    """Warmup then half-cycle cosine, written here from the paper's recipe (Goyal et al.; Loshchilov & Hutter)."""
    if t < WARMUP:
        return peak * t / WARMUP
    return MIN_LR + 0.5 * (peak - MIN_LR) * (1.0 + math.cos(math.pi * (t - WARMUP) / (EPOCHS - WARMUP)))


class Step(NamedTuple):
    """One optimizer step: the gradients it used, the weights after it (official names), the lr it used."""

    grads: dict[str, Tensor]
    weights: dict[str, Tensor]
    lrs: list[float]


def engine_run(model: mae.MaskedAutoencoderViT, batches: list[tuple[Tensor, Tensor]], accum: int) -> list[Step]:
    """Our engine for EPOCHS epochs, observed at every optimizer step (step pre- and post-hooks)."""
    lr = base_learning_rate(BLR, BATCH * accum)
    optimizer = build_adamw(model, lr, WEIGHT_DECAY)
    schedule = CosineSchedule(lr, MIN_LR, WARMUP, EPOCHS)
    steps: list[Step] = []
    grads: dict[str, Tensor] = {}

    def before(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads.clear()
        grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    def after(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        steps.append(Step(dict(grads), weights, [group["lr"] for group in opt.param_groups]))

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
    scaler = grad_scaler(torch.device("cpu"), torch.float32)
    torch.manual_seed(SEED)  # mô hình tự rút một torch.rand(N, L) cho mỗi batch
    for epoch in range(EPOCHS):
        train_one_epoch(model, batches, optimizer, scaler, schedule, epoch, steps=len(batches), accum_iter=accum)
    return steps


def reference_run(
    config: mae.MAEConfig, initial: dict[str, Tensor], batches: list[tuple[Tensor, Tensor]], accum: int
) -> list[Step]:
    """The same training written from torch primitives around transformers' ViTMAEForPreTraining."""
    from transformers import ViTMAEForPreTraining

    with torch.device("meta"):
        model = ViTMAEForPreTraining(hf_config(config))
    # Sao chép từng tensor: q/k/v là các khung nhìn của qkv gộp, không được dùng chung bộ nhớ với mô hình của ta.
    model.load_state_dict({k: v.clone() for k, v in official_to_hf(initial).items()}, strict=True, assign=True)
    model.train()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # bảng vị trí sin-cos cố định
        # Không phạt trọng số cho bias và tham số 1-D (LayerNorm); cls_token, mask_token (3-D) thì có.
        (no_decay if param.ndim == 1 or name.endswith(".bias") else decay).append(param)
    peak = BLR * (BATCH * accum) / 256
    optimizer = torch.optim.AdamW(
        [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": WEIGHT_DECAY}],
        lr=peak,
        betas=(0.9, 0.95),
    )
    steps: list[Step] = []
    torch.manual_seed(SEED)
    lr = 0.0
    for epoch in range(EPOCHS):
        optimizer.zero_grad()  # gradient của lần cộng dồn dang dở ở cuối epoch trước bị bỏ
        for step, (images, _) in enumerate(batches):
            if step % accum == 0:
                lr = lr_at(epoch + step / len(batches), peak)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            noise = torch.rand(images.shape[0], config.num_patches)
            loss = model(pixel_values=images, noise=noise).loss
            (loss / accum).backward()  # tổng gradient qua accum micro-batch = gradient của loss trung bình
            if (step + 1) % accum == 0:
                grads = hf_to_official({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
                optimizer.step()
                optimizer.zero_grad()
                weights = {k: v.detach().clone() for k, v in hf_to_official(model.state_dict()).items()}
                steps.append(Step(grads, weights, [lr, lr]))
    return steps


def assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOL, msg=lambda message: f"{what}: {message}")


@pytest.mark.parametrize("norm_pix_loss", [False, True])
@pytest.mark.parametrize("accum", [1, 2, 3])
def test_every_step_matches_transformers_reference_loop(accum: int, norm_pix_loss: bool) -> None:
    config = small_config(norm_pix_loss=norm_pix_loss)
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(config).to(DTYPE)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batches = make_batches(images_seed=1)

    ours = engine_run(model, batches, accum)
    theirs = reference_run(config, initial, batches, accum)

    assert len(ours) == len(theirs) == EPOCHS * (STEPS // accum)
    for i, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        assert mine.lrs == pytest.approx(ref.lrs, rel=1e-12, abs=0), f"lr at optimizer step {i}"
        assert list(mine.grads) == list(ref.grads)  # mọi tham số học được, theo thứ tự của bản gốc
        for key in ref.grads:
            assert_close(mine.grads[key], ref.grads[key], f"optimizer step {i}, gradient of {key}")
        assert list(mine.weights) == list(ref.weights)
        for key in ref.weights:
            assert_close(mine.weights[key], ref.weights[key], f"{key} after optimizer step {i}")
    # Phép so sánh có nghĩa: mỗi bước có lr > 0 làm trọng số đổi hơn 10 lần dung sai.
    before = [initial, *(step.weights for step in ours[:-1])]
    moved = [
        max((b.weights[k] - a[k]).abs().max().item() for k in a)
        for a, b, ref in zip(before, ours, theirs, strict=True)
        if ref.lrs[0] > 0
    ]
    assert moved and min(moved) > 10 * TOL
