"""`--fast`'s choices (`mae/train/fast_path.py`): each opt-in route is really taken when chosen, and held to a
bound derived from the rounding of its precision against the default path (or float64).

Unit roundoffs: float32 u = 2^-24, bf16 2^-8, float16 2^-11 (round to nearest).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from train_helpers import TINY_CONFIG, make_image_folder, one_thread, pretrain

import mae
from mae import attention_kernel
from mae.attention import Attention
from mae.attention_kernel import AttentionTiming, choose_attention
from mae.patch_embed import PatchEmbed, set_patch_embed_linear
from mae.train.distributed import Dist
from mae.train.engine_pretrain import train_one_epoch
from mae.train.fast_path import apply_fast_path, mae_tokens
from mae.train.optim import BETAS, build_adamw, param_groups_weight_decay, set_fused_adamw
from mae.train.precision import autocast, grad_scaler
from mae.train.schedule import CosineSchedule

U = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def tiny_mae() -> mae.MaskedAutoencoderViT:
    torch.manual_seed(0)
    return mae.create_model("mae_vit_base_patch16", **TINY_CONFIG)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """On a busy 2-core machine two threads waiting on each other made a tiny fused AdamW step 100 times slower."""
    with one_thread():
        yield


@pytest.fixture
def fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of PyTorch's fused AdamW kernel (AdamW's fused route calls `torch._fused_adamw_`)."""
    calls: list[int] = []
    kernel = torch._fused_adamw_

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adamw_", counted)
    return calls


@pytest.fixture
def sdpa_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of PyTorch's SDPA from `mae.attention`."""
    calls: list[int] = []
    sdpa = F.scaled_dot_product_attention

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(mae.attention.F, "scaled_dot_product_attention", counted)
    return calls


# --- fused AdamW ---------------------------------------------------------------------------------------


def adam_ratio_bound(t: int, beta1: float, beta2: float) -> float:
    """An upper bound of |m_hat / sqrt(v_hat)| after t steps of Adam, whatever the gradients.

    Cauchy-Schwarz on m_t = (1-b1) sum_i b1^(t-i) g_i, written as sum_i [b1^(t-i) / b2^((t-i)/2)] [b2^((t-i)/2) g_i]:
    m_t^2 <= (1-b1)^2 S_t sum_i b2^(t-i) g_i^2 = (1-b1)^2 S_t v_t / (1-b2), S_t = sum_{j<t} (b1^2/b2)^j; with the
    bias corrections m_hat = m_t / (1-b1^t), v_hat = v_t / (1-b2^t)."""
    s = sum((beta1**2 / beta2) ** j for j in range(t))
    return (1 - beta1) / (1 - beta1**t) * math.sqrt((1 - beta2**t) / (1 - beta2) * s)


def test_fused_adamw_stays_within_float32_rounding_of_the_default(fused_calls: list[int]) -> None:
    """k steps with the same gradients (so that only the optimizer differs). Bound per tensor, to first order in
    u: each step both implementations round the decayed weight and the subtraction (2 roundings each: 4u|theta|),
    and the update lr * m_hat / (sqrt(v_hat) + eps) (at most 10 roundings of one step's arithmetic, plus the
    moments' own carried error, m 2t and v 3t roundings, sqrt halving v's: 10 + 3.5t each, twice that between
    the two); |update| <= lr * R_t (`adam_ratio_bound`). Earlier differences are carried on multiplied by
    (1 - lr wd) <= 1, so they add up:
        |theta_fused - theta_default| <= sum_t [4u max|theta| + 2(10 + 3.5t) u lr R_t]."""
    k, lr, wd = 5, 1e-2, 0.05
    models = [tiny_mae(), tiny_mae()]
    optimizers = [torch.optim.AdamW(param_groups_weight_decay(m, wd), lr=lr, betas=BETAS) for m in models]
    assert set_fused_adamw(optimizers[1], True) and not set_fused_adamw(optimizers[0], False)
    g = torch.Generator().manual_seed(3)
    params = [[p for p in m.parameters() if p.requires_grad] for m in models]
    largest = [p.detach().abs().max().item() for p in params[0]]
    for _ in range(k):
        for p0, p1 in zip(*params, strict=True):
            p0.grad = torch.randn(p0.shape, generator=g)
            p1.grad = p0.grad.clone()
        for opt in optimizers:
            opt.step()
        largest = [max(a, p.detach().abs().max().item()) for a, p in zip(largest, params[0], strict=True)]
    # The fused kernel ran every step, once per group (decay, no decay), for the fused optimizer only.
    assert len(fused_calls) == k * len(optimizers[1].param_groups)
    u = U[torch.float32]
    ratios = sum(2 * (10 + 3.5 * t) * u * lr * adam_ratio_bound(t, *BETAS) for t in range(1, k + 1))
    for p0, p1, big in zip(*params, largest, strict=True):
        bound = k * 4 * u * big + ratios
        gap = (p1 - p0).abs().max().item()
        assert gap <= bound, (tuple(p0.shape), gap, bound)


def test_default_optimizer_never_takes_the_fused_route_and_a_resume_keeps_each_choice(
    fused_calls: list[int],
) -> None:
    """A checkpoint's param groups carry the `fused` flag of the run that wrote them: each run keeps its own."""
    model = tiny_mae()
    fused = build_adamw(model, 1e-3, 0.05)
    set_fused_adamw(fused, True)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    fused.step()
    groups = len(fused.param_groups)  # the kernel runs once per group (decay, no decay)
    assert len(fused_calls) == groups
    default = build_adamw(model, 1e-3, 0.05)
    set_fused_adamw(default, False)
    default.load_state_dict(fused.state_dict())  # a --fast checkpoint resumed without --fast
    assert all(group["fused"] is None for group in default.param_groups)
    default.step()
    assert len(fused_calls) == groups  # the default implementation ran
    again = build_adamw(model, 1e-3, 0.05)
    set_fused_adamw(again, True)
    again.load_state_dict(default.state_dict())  # and a default checkpoint resumed with --fast
    again.step()
    assert len(fused_calls) == 2 * groups


def test_float16_step_with_an_inf_gradient_leaves_fused_adamw_weights_and_moments_unchanged(
    fused_calls: list[int],
) -> None:
    """The GradScaler hands the fused kernel its inf flag: the step is skipped inside it, the scale halves."""
    model = tiny_mae()
    optimizer = build_adamw(model, 1e-3, 0.05)
    set_fused_adamw(optimizer, True)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(()))  # the scale exists from the first scaled loss on
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    scaler.step(optimizer)  # a clean first step: moments exist
    scaler.update()
    before = [p.detach().clone() for p in model.parameters()]
    moments = [s["exp_avg"].clone() for s in optimizer.state.values()]
    scale = scaler.get_scale()
    next(model.parameters()).grad[0] = math.inf
    scaler.step(optimizer)
    scaler.update()
    # The fused kernel took both steps, once per group (and skipped the second itself).
    assert len(fused_calls) == 2 * len(optimizer.param_groups)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(moments, optimizer.state.values(), strict=True))
    assert scaler.get_scale() == scale * 0.5


# --- the attention kernel ------------------------------------------------------------------------------


def _attention_grads(attn: Attention, x: torch.Tensor, dtype: torch.dtype, fused: bool) -> list[torch.Tensor]:
    attn.fused = fused
    attn.zero_grad()
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float64):
        out = attn(x)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype))
    assert x.grad is not None
    return [x.grad.double()] + [p.grad.double() for p in attn.parameters() if p.grad is not None]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_written_out_attention_gradients_within_the_precisions_bound(dtype: torch.dtype) -> None:
    """Both kernels, under autocast, against float64: each gradient's relative (Frobenius) error is at most
    16 u: a chain of at most 8 roundings to `dtype` forward (x and the qkv weight, the qkv output, the scores,
    the probabilities, the output of attn @ v, the proj weight and output) and as many backward. Peaked
    attention (inputs of std 3), where the 1/sqrt(hd) scale matters."""
    torch.manual_seed(0)
    attn = Attention(64, 4)
    reference = Attention(64, 4).double()
    reference.load_state_dict(attn.state_dict())
    x = 3 * torch.randn(2, 50, 64)
    exact = _attention_grads(reference, x.double(), torch.float64, False)
    bound = 16 * U[dtype]
    for fused in (True, False):
        for got, want in zip(_attention_grads(attn, x, dtype, fused), exact, strict=True):
            assert (got - want).norm() <= bound * want.norm(), (fused, ((got - want).norm() / want.norm()).item())


def _fake_timing(written_faster: bool) -> Callable[..., AttentionTiming]:
    def timing(batch: int, heads: int, tokens: int, head_dim: int, dtype: torch.dtype) -> AttentionTiming:
        written = 0.5 if written_faster else 0.9  # 0.9 of SDPA's time: too close a call, SDPA stays
        return AttentionTiming(batch, heads, tokens, head_dim, dtype, 1.0, written)

    return timing


@pytest.mark.parametrize("written_faster", [True, False])
def test_chosen_attention_kernel_is_the_one_that_runs(
    written_faster: bool, sdpa_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attention_kernel, "time_attention", _fake_timing(written_faster))
    model = tiny_mae()
    timings = choose_attention(model, torch.device("cpu"), torch.bfloat16, 4, mae_tokens(16, 0.75))
    assert [(t.heads, t.tokens, t.written_out) for t in timings] == [(4, 5, written_faster), (2, 17, written_faster)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(4, 3, 32, 32))
    attentions = sum(isinstance(m, Attention) for m in model.modules())
    assert len(sdpa_calls) == (0 if written_faster else attentions)


def test_the_timing_measures_both_kernels_once_per_shape() -> None:
    first = attention_kernel.time_attention(2, 2, 5, 8, torch.bfloat16)
    assert first.fused_s is not None and first.written_s is not None and first.fused_s > 0 and first.written_s > 0
    assert attention_kernel.time_attention(2, 2, 5, 8, torch.bfloat16) is first  # cached: measured once
    with pytest.raises(ValueError, match=r"no token count for the attention 'decoder_blocks\.0\.attn'"):
        choose_attention(tiny_mae(), torch.device("cpu"), torch.bfloat16, 2, {"blocks": 5})
    gpu = choose_attention(tiny_mae(), torch.device("meta"), torch.bfloat16, 2, mae_tokens(16, 0.75))
    assert [t.written_out for t in gpu] == [False, False]  # not a CPU: SDPA by rule, untimed


# --- the patch embedding as a product ------------------------------------------------------------------


def test_patch_embedding_as_a_product_within_the_float32_dot_product_bound() -> None:
    """Each output is a dot product of K = C p^2 terms plus the bias; any order of summation is within
    gamma_(K+1) = (K+1)u / (1 - (K+1)u) of the exact sum, relative to sum |w||x| + |b| (Higham, Thm 3.1): the
    convolution and the product within twice that of each other. The weight gradient: sums over N L rows."""
    torch.manual_seed(0)
    embed = PatchEmbed(32, 8, 3, 16)
    calls: list[int] = []
    embed.proj.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    by_conv = embed(x)
    g = torch.randn(by_conv.shape)
    by_conv.backward(g)
    conv_grad = embed.proj.weight.grad.clone()  # type: ignore[union-attr]
    embed.proj.weight.grad = None
    set_patch_embed_linear(embed, True)
    by_linear = embed(x)
    by_linear.backward(g)
    assert len(calls) == 1  # the product did not call the convolution
    u, k = U[torch.float32], 3 * 8 * 8 + 1
    gamma = lambda n: n * u / (1 - n * u)  # noqa: E731
    with torch.no_grad():
        w, b = embed.proj.weight, embed.proj.bias
        assert b is not None
        size = F.conv2d(x.abs(), w.abs(), b.abs(), stride=8).flatten(2).transpose(1, 2)
        assert ((by_linear - by_conv).abs() <= 2 * gamma(k) * size).all()
        rows = 2 * 16
        size_grad = F.conv2d(x.abs().transpose(0, 1), g.abs().transpose(1, 2).reshape(2, 16, 4, 4).transpose(0, 1),
                             dilation=8).transpose(0, 1)  # fmt: skip
        assert size_grad.shape == w.shape
        assert ((embed.proj.weight.grad - conv_grad).abs() <= 2 * gamma(rows) * size_grad).all()


# --- through the engine and the command ----------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data", classes=2, per_class=4)


def test_fast_bf16_pretraining_says_and_takes_its_choices(
    capsys: pytest.CaptureFixture[str],
    data: Path,
    tmp_path: Path,
    fused_calls: list[int],
    sdpa_calls: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(attention_kernel, "time_attention", _fake_timing(True))  # the written-out path timed faster
    by_product: list[int] = []
    product = PatchEmbed._by_linear

    def counted(self: PatchEmbed, imgs: torch.Tensor) -> torch.Tensor:
        by_product.append(1)
        return product(self, imgs)

    monkeypatch.setattr(PatchEmbed, "_by_linear", counted)
    code, out, err = pretrain(capsys, data, tmp_path / "out", "--fast", "--dtype", "bfloat16", epochs=1)
    assert code == 0, err
    device = next(line for line in out.splitlines() if line.startswith("device: "))
    assert device.startswith("device: cpu, bfloat16; --fast: attention written out (timed: the written-out path ")
    assert "patch embedding as one linear product, fused AdamW; output: " in device
    assert len(fused_calls) == 2 * 2  # 8 images, batches of 4: two optimizer steps by the fused kernel, 2 groups each
    assert sdpa_calls == []  # every attention ran written out, as the device line says
    assert len(by_product) == 2  # and the patch embedding as a product, at both steps


def test_without_fast_the_engine_runs_the_default_routes(fused_calls: list[int], sdpa_calls: list[int]) -> None:
    model = tiny_mae()
    optimizer = build_adamw(model, 1e-3, 0.05)
    plan = apply_fast_path(model, optimizer, False, torch.device("cpu"), torch.bfloat16, 4, mae_tokens(16, 0.75))
    assert plan.describe() == ""
    written_with_fast = build_adamw(model, 1e-3, 0.05)
    set_fused_adamw(written_with_fast, True)
    optimizer.load_state_dict(written_with_fast.state_dict())  # resuming a checkpoint written with --fast
    loader = [(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))]
    train_one_epoch(
        model, loader, optimizer, grad_scaler(torch.device("cpu"), torch.bfloat16), CosineSchedule(1e-3, 0, 0, 1),
        0, steps=1, mask_ratio=0.75, autocast=autocast(torch.device("cpu"), torch.bfloat16),
        dist=Dist(device=torch.device("cpu")),
    )  # fmt: skip
    assert fused_calls == [] and len(sdpa_calls) == 3  # three attentions (2 encoder, 1 decoder blocks), SDPA each


# --- the benchmarks' report of the choices -----------------------------------------------------------


def test_benchmark_reports_what_each_choice_contributed_and_the_best_steps_goals() -> None:
    from benchmarks import host, train

    def row(images_per_s: float) -> dict[str, Any]:
        return {"images_per_s": images_per_s, "warmup_only": False}

    rows = {"ours": row(2.0), "fast": row(2.2), "fast_adamw": row(2.5), "bf16": row(3.0), "bf16_attn": row(4.0),
            "bf16_adamw": row(3.3), "bf16_fast": row(5.4), "official": row(1.8)}  # fmt: skip
    said = train.contributions(rows)
    assert said is not None
    parts = [
        "written-out attention in bf16 1.33x (bf16_attn / bf16)",
        "fused AdamW in bf16 1.10x",
        "--fast in bf16 (all its choices) 1.80x",
        "--fast in float32 (all its choices) 1.25x (fast_adamw / ours)",
        "fused AdamW and the attention choice over oneDNN alone 1.14x (fast_adamw / fast)",
    ]
    assert [p for p in parts if p not in said] == []
    # bf16 products 3.3x float32's here: the stated 3x stands; oneDNN's product gain 2.2x: the float32 1.2x stands.
    lines = train.best_step_goals(rows, 1.8, {"speedup": 3.3, "warned": False, "slower": False}, 2.2, host.NOISE)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0][0].startswith("best bf16 step (bf16_fast)") and cells[0][1:] == [">= 3x", "3.00x", "met"]
    assert cells[1][0].startswith("best float32 step (fast_adamw)") and cells[1][1:] == [">= 1.2x", "1.39x", "met"]
    # Without a product gain (oneDNN no faster), the float32 goal becomes "not slower" than the official engine.
    lines = train.best_step_goals(rows, 2.6, None, 1.0, host.NOISE)
    assert [c.strip() for c in lines[1].strip("|").split("|")][1:] == [f">= {1 / host.NOISE:.3g}x", "0.96x", "met"]
