"""LARS (`mae.train.lars`): the update rule against an independent float64 computation, and against the
official `util/lars.py` bit for bit (with $MAE_OFFICIAL_REPO), including each loading the other's state."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import assert_bit_equal
from mae.train.lars import LARS
from reference import official

Step = tuple[np.ndarray, np.ndarray]  # (param, mu)


def reference_step(p: np.ndarray, mu: np.ndarray, g: np.ndarray, lr: float, wd: float, m: float, tc: float) -> Step:
    """The LARS update written from the paper's formula (You et al., 2017; MoCo v3 form), in float64."""
    if p.ndim > 1:
        d = g + wd * p
        # math.hypot scales before squaring: a sum of squares underflows to 0 for norms below ~1e-154
        p_norm, d_norm = math.hypot(*p.ravel().tolist()), math.hypot(*d.ravel().tolist())
        if p_norm > 0 and d_norm > 0:
            d = d * (tc * p_norm / d_norm)
    else:
        d = g
    mu = m * mu + d
    return p - lr * mu, mu


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
values = st.floats(-4, 4, allow_nan=False, width=32)


@st.composite
def param_and_grads(draw: st.DrawFn) -> tuple[np.ndarray, list[np.ndarray]]:
    shape = draw(shapes)
    size = math.prod(shape)
    zero_param = draw(st.booleans()) and draw(st.booleans())  # about one case in four: ||p|| = 0
    p = np.zeros(size) if zero_param else np.array(draw(st.lists(values, min_size=size, max_size=size)))
    steps = draw(st.integers(1, 4))
    grads = [np.array(draw(st.lists(values, min_size=size, max_size=size))).reshape(shape) for _ in range(steps)]
    return p.reshape(shape), grads


@settings(max_examples=100)
@given(
    case=param_and_grads(),
    lr=st.floats(0, 2),
    wd=st.sampled_from([0.0, 0.05, 1.5]),
    momentum=st.sampled_from([0.0, 0.9, 0.5]),
    tc=st.sampled_from([0.001, 0.1, 1.0]),
)
# found by hypothesis: ||p|| = 2.5e-164 after one step, whose square underflows; LARS must still scale the update
@example(
    case=(np.zeros((1, 1)), [np.ones((1, 1)), np.ones((1, 1))]),
    lr=2.4640753640570864e-164,
    wd=0.0,
    momentum=0.0,
    tc=0.001,
)
def test_steps_follow_the_formula(
    case: tuple[np.ndarray, list[np.ndarray]], lr: float, wd: float, momentum: float, tc: float
) -> None:
    p0, grads = case
    param = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = LARS([param], lr=lr, weight_decay=wd, momentum=momentum, trust_coefficient=tc)
    p, mu = p0.copy(), np.zeros_like(p0)
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        p, mu = reference_step(p, mu, g, lr, wd, momentum, tc)
        torch.testing.assert_close(param.detach(), torch.tensor(p), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(opt.state[param]["mu"], torch.tensor(mu), rtol=1e-9, atol=1e-12)


def test_zero_norms_leave_the_update_unscaled() -> None:
    lr, tc = 0.5, 0.001
    # ||p|| = 0: d = g (weight decay of a zero weight is zero), no scaling.
    zero = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    g = torch.arange(6, dtype=torch.float64).reshape(2, 3) - 2.5
    zero.grad = g.clone()
    LARS([zero], lr=lr, weight_decay=0.1, trust_coefficient=tc).step()
    assert_bit_equal(zero.detach(), -lr * g, "zero weight")
    # ||d|| = 0 (zero gradient, no weight decay): the weight does not move, and nothing is NaN.
    w = torch.nn.Parameter(torch.ones(3, 2, dtype=torch.float64))
    w.grad = torch.zeros(3, 2, dtype=torch.float64)
    LARS([w], lr=lr, trust_coefficient=tc).step()
    assert_bit_equal(w.detach(), torch.ones(3, 2, dtype=torch.float64), "zero update")


def test_one_dimensional_parameters_get_no_decay_and_no_scaling() -> None:
    bias = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    scalar = torch.nn.Parameter(torch.tensor(4.0, dtype=torch.float64))
    bias.grad = torch.tensor([0.5, 0.25, -1.0], dtype=torch.float64)
    scalar.grad = torch.tensor(2.0, dtype=torch.float64)
    opt = LARS([bias, scalar], lr=0.1, weight_decay=10.0, momentum=0.9)
    opt.step()
    opt.step()  # mu = 0.9 * g + g = 1.9 g after two steps; total move 0.1 * (g + 1.9 g) = 0.29 g
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64) - 0.29 * bias.grad)
    torch.testing.assert_close(scalar.detach(), torch.tensor(4.0 - 0.29 * 2.0, dtype=torch.float64))


def test_update_norm_is_trust_times_weight_norm() -> None:
    # Ý chính của LARS: bước đầu tiên (mu = 0) có chuẩn đúng bằng lr * trust * ||p||, bất kể độ lớn gradient.
    torch.manual_seed(0)
    for scale in (1e-4, 1.0, 1e4):
        w = torch.nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
        before = w.detach().clone()
        w.grad = scale * torch.randn(5, 4, dtype=torch.float64)
        LARS([w], lr=0.5, weight_decay=0.05, trust_coefficient=0.01).step()
        moved = torch.linalg.vector_norm(w.detach() - before).item()
        assert moved == pytest.approx(0.5 * 0.01 * torch.linalg.vector_norm(before).item(), rel=1e-12)


def test_skips_parameters_without_gradient_and_returns_closure_loss() -> None:
    a, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    a.grad = torch.ones(2, 2)
    opt = LARS([a, b], lr=1.0)
    assert opt.step(lambda: 3.5) == 3.5
    assert_bit_equal(b.detach(), torch.ones(2), "no gradient")
    assert b not in opt.state and "mu" in opt.state[a]
    assert opt.step() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "lr must be >= 0"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ({"momentum": -0.5}, "momentum must be >= 0"),
        ({"trust_coefficient": 0.0}, "trust_coefficient must be > 0"),
        ({"lr": math.nan}, "lr must be a finite number"),
        ({"lr": "0.1"}, "lr must be a finite number"),
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LARS([torch.nn.Parameter(torch.ones(2))], **kwargs)  # type: ignore[arg-type]


def test_group_keys_and_state_key_are_the_official_names() -> None:
    w = torch.nn.Parameter(torch.ones(2, 2))
    w.grad = torch.ones(2, 2)
    opt = LARS([w], lr=0.1)
    opt.step()
    state = opt.state_dict()
    assert set(state["param_groups"][0]) == {"lr", "weight_decay", "momentum", "trust_coefficient", "params"}
    assert set(state["state"][0]) == {"mu"}


# ------------------------------------------------------------------ the official util/lars.py

needs_official = pytest.mark.skipif(official.skip_reason() is not None, reason=str(official.skip_reason()))


def make_params(seed: int) -> list[torch.nn.Parameter]:
    """Weights, a zero weight, biases and a scalar: every branch of the update."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (3, 4, 2), (5,), (), (2, 3)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    params.append(torch.nn.Parameter(torch.zeros(4, 3)))  # ||p|| = 0
    return params


def grads_for(params: list[torch.nn.Parameter], seed: int, steps: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = [[torch.randn(p.shape, generator=g) * 10.0 ** float(i % 3 - 1) for i, p in enumerate(params)]]
    for _ in range(steps - 1):
        out.append([torch.randn(p.shape, generator=g) for p in params])
    out[1][4] = torch.zeros(2, 3)  # ||d|| = 0 for a step where that weight has no decay (group 2)
    return out


def groups(params: list[torch.nn.Parameter]) -> list[dict[str, object]]:
    return [
        {"params": params[:4], "weight_decay": 0.05},
        {"params": params[4:], "lr": 0.3, "momentum": 0.5, "trust_coefficient": 0.02},
    ]


def run(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], grads: list[list[torch.Tensor]]) -> None:
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()


def official_lars() -> Callable[..., torch.optim.Optimizer]:
    return official.official_module("util.lars").LARS


@needs_official
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bit_equal_to_official(seed: int) -> None:
    ours_p, theirs_p = make_params(seed), make_params(seed)
    ours = LARS(groups(ours_p), lr=0.7, weight_decay=0.0)
    theirs = official_lars()(groups(theirs_p), lr=0.7, weight_decay=0.0)
    run(ours, ours_p, grads_for(ours_p, seed + 100, steps=5))
    run(theirs, theirs_p, grads_for(theirs_p, seed + 100, steps=5))
    for i, (a, b) in enumerate(zip(ours_p, theirs_p, strict=True)):
        assert_bit_equal(a.detach(), b.detach(), f"param {i}")
        assert_bit_equal(ours.state[a]["mu"], theirs.state[b]["mu"], f"mu {i}")
    assert not torch.equal(ours_p[0].detach(), make_params(seed)[0].detach())  # the weights did move
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]


@needs_official
@pytest.mark.parametrize("direction", ["ours->official", "official->ours"])
def test_state_dict_loads_across(direction: str) -> None:
    """Two steps in one optimizer, its state loaded into the other kind, three more steps: the same bits as an
    uninterrupted run of the second kind."""
    first_kind, second_kind = (LARS, official_lars()) if direction == "ours->official" else (official_lars(), LARS)
    grads = grads_for(make_params(0), 7, steps=5)

    params = make_params(0)
    first = first_kind(groups(params), lr=0.7)
    run(first, params, grads[:2])
    resumed = second_kind(groups(params), lr=0.7)
    resumed.load_state_dict(first.state_dict())
    run(resumed, params, grads[2:])

    straight_params = make_params(0)
    straight = second_kind(groups(straight_params), lr=0.7)
    run(straight, straight_params, grads)

    for i, (a, b) in enumerate(zip(params, straight_params, strict=True)):
        assert_bit_equal(a.detach(), b.detach(), f"param {i}")
        assert_bit_equal(resumed.state[a]["mu"], straight.state[b]["mu"], f"mu {i}")
    assert resumed.state_dict()["param_groups"] == straight.state_dict()["param_groups"]
