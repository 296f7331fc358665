"""float16 training on the CPU: the official GPU recipe's precision path (autocast float16 + GradScaler), run here.

Through the engine (`engine.train_one_epoch` with an MAE under ``torch.autocast("cpu", float16)`` and an
enabled ``GradScaler("cpu")`` built here with a small scale and ``growth_interval``, an inf put into one
parameter's gradient at chosen optimizer steps, with and without accumulation):

- a step whose gradients hold an inf leaves every weight and AdamW moment (and AdamW's step count)
  unchanged and halves the scale; every other step moves the weights; the scale doubles after
  ``growth_interval`` clean steps (the scale after every step is computed here from GradScaler's rule);
- the lr schedule goes on at every iteration as in the official engine (computed here from the recipe);
- the epoch's figures hold ``skipped_steps`` and ``loss_scale``, the progress bar and the log lines the
  scale; none of them in float32; a NaN *loss* still stops the epoch, before it changes a weight.

Through ``mae pretrain --dtype float16`` (and ``mae finetune``), an inf injected into the gradients at known
iterations:

- ``log.txt`` holds each epoch's ``train_skipped_steps`` and ``train_loss_scale`` (computed here), absent in
  float32 and bfloat16; a collapsing scale warns once per run, with what to try;
- a run stopped and resumed (epoch-end ``--resume``, and a mid-epoch checkpoint after a SIGTERM, its skipped
  steps so far included) ends bit for bit where the straight run ends, scaler state included; without the
  saved ``scaler`` entry it does not (issue 18: the piece of state is needed);
- an official-layout float16 checkpoint (no ``rng``, the ``scaler`` of an enabled scaler at a non-default
  scale) resumes with its scale and growth tracker;
- float16 is allowed on the CPU, with the warning of `mae/cpu.py` where its products are slower than float32.

Parity. Our engine in float16 (float32 master weights and AdamW state, checked) against a loop written here
around transformers' ``ViTMAEForPreTraining`` under the same autocast and scaler, from the same weights,
batches and masking noise, 2 epochs (warmup, cosine), accumulating 1 and 2, both targets. Two float16 runs of
different code round differently, and their difference is bounded by the sum of their errors whatever the
code does, so they are not compared with each other: each is compared with the exact run, our engine in
float64 (which `tests/test_train_parity.py` holds equal to the same loop in float64 within 1e-6). The
tolerance: at every optimizer step, our float16 error is at most ``RATIO`` (2) times the reference loop's, i.e.
no more than what float16 costs an independent implementation of the same steps (measured 0.81 to 1.21
times), for the gradients AdamW is given (relative L2 over all of them: both about 1e-3, two float16
roundoffs; a gradient left scaled, which AdamW alone would hardly notice, is off by the scale) and for the
weights (relative L2 over their movement since the start: both about 3 %, against 2-4e-4 in float32, most
of it AdamW dividing float16's noise in near-zero gradients by its own size). A bug in the steps shared by
all precisions (an lr one iteration late, gradients not cleared) puts the reference loop itself far from
the exact run: its error is bounded too (gradients below 20 roundoffs, weights below 10 % of the movement).
"""

from __future__ import annotations

import json
import math
import os
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor
from train_helpers import (
    assert_same,
    classification_argv,
    make_classification_data,
    make_image_folder,
    pretrain,
    run_cli,
)
from train_helpers import load_checkpoint as load

import mae
from helpers import small_config
from mae import cpu
from mae.train import engine, metrics, precision, runs
from mae.train.log_sinks import LogSinks
from mae.train.optim import build_adamw
from mae.train.preemption import EXIT_PREEMPTED
from mae.train.run_checkpoint import MID_EPOCH_NAME
from mae.train.schedule import CosineSchedule

CPU = torch.device("cpu")
COLLAPSED = "float16's loss scale has collapsed"


@pytest.fixture(autouse=True)
def float16_as_fast_as_float32(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No timing in these tests: float16 products measure as fast as float32's (the warning is tested below).
    One thread, as `train_helpers.run_cli`: as fast for these tiny models, and far faster on a busy machine."""
    monkeypatch.setattr(cpu, "measure_product_cost", lambda dtype, **_: cpu.ProductCost(dtype, 0.01, 0.01, 0.01, 0.01))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ GradScaler's rule, written out here


def expected_scales(init: float, growth_interval: int, skipped: set[int], steps: int) -> list[float]:
    """The scale after each of ``steps`` optimizer steps (torch's documented rule): halved at a skipped step
    (and the count of clean steps restarts), doubled after ``growth_interval`` clean steps in a row."""
    scale, clean, scales = init, 0, []
    for step in range(steps):
        if step in skipped:
            scale, clean = scale * 0.5, 0
        else:
            clean += 1
            if clean == growth_interval:
                scale, clean = scale * 2.0, 0
        scales.append(scale)
    return scales


# ------------------------------------------------------------------ through the engine

BATCH, BATCHES, EPOCHS, WARMUP = 2, 12, 2, 1
PEAK, MIN_LR = 1e-3, 1e-4


def lr_at(t: float) -> float:
    """Linear warmup then half-cycle cosine at the fractional epoch ``t`` (the recipe, written out here)."""
    if t < WARMUP:
        return PEAK * t / WARMUP
    return MIN_LR + 0.5 * (PEAK - MIN_LR) * (1.0 + math.cos(math.pi * (t - WARMUP) / (EPOCHS - WARMUP)))


class State(NamedTuple):
    """What one iteration left behind: the weights, AdamW's state, the scale and the groups' lrs."""

    weights: dict[str, Tensor]
    moments: dict[tuple[int, str], Tensor]
    scale: float
    lrs: list[float]


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> State:
    moments = {
        (i, key): value.clone()
        for i, state in enumerate(optimizer.state_dict()["state"].values())
        for key, value in state.items()
    }
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return State(weights, moments, scaler.get_scale(), [g["lr"] for g in optimizer.param_groups])


class Run(NamedTuple):
    stats: dict[str, float]
    shown: list[dict[str, str]]  # what the progress bar was given, iteration by iteration
    lines: list[str]  # the log lines (print_freq 1)


class Epoch:
    """Epoch 0 (warmup) of the engine on a tiny MAE in ``dtype``; an inf in one element of one weight's gradient
    at the batches ``inf_at``, a NaN loss at the batch ``nan_loss_at``. ``seen``: the state before iteration 0
    and after each iteration."""

    def __init__(
        self,
        dtype: torch.dtype,
        *,
        accum: int,
        inf_at: set[int],
        nan_loss_at: int | None = None,
        init_scale: float = 2.0**10,
        growth_interval: int = 2,
    ) -> None:
        torch.manual_seed(0)
        self.model = mae.MaskedAutoencoderViT(small_config())
        self.optimizer = build_adamw(self.model, PEAK, 0.05)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
        if dtype != torch.float16:
            self.scaler = precision.grad_scaler(CPU, dtype)  # disabled, as the trainers make it
        g = torch.Generator().manual_seed(1)
        self.batches = [(torch.randn(BATCH, 3, 32, 32, generator=g), torch.zeros(BATCH)) for _ in range(BATCHES)]
        self.dtype, self.accum, self.inf_at, self.nan_loss_at = dtype, accum, inf_at, nan_loss_at
        self.calls = 0
        self.hooks: list[Any] = []
        self.seen: list[State] = []

    def state(self) -> State:
        return snapshot(self.model, self.optimizer, self.scaler)

    def batch_loss(self, images: Tensor, _labels: Tensor) -> Tensor:
        while self.hooks:
            self.hooks.pop().remove()
        if self.calls in self.inf_at:
            # Một phần tử gradient của một trọng số thành inf: GradScaler phải bỏ qua cả bước tối ưu.
            inf = lambda grad: grad.index_fill(2, torch.tensor([0]), math.inf)  # noqa: E731
            self.hooks.append(self.model.cls_token.register_hook(inf))
        with precision.autocast(CPU, self.dtype)():
            loss, _, _ = self.model(images, mask_ratio=0.75)
        if self.calls == self.nan_loss_at:
            loss = loss * math.nan
        self.calls += 1
        return loss

    def observed(self) -> Iterator[Any]:
        """The batches, recording the state each time the engine asks for the next one, and at the end."""
        for batch in self.batches:
            self.seen.append(self.state())
            yield batch
        self.seen.append(self.state())

    def run(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
        shown: list[dict[str, str]] = []
        monkeypatch.setattr(metrics.Progress, "show", lambda self, **values: shown.append(values))
        schedule = CosineSchedule(PEAK, MIN_LR, WARMUP, EPOCHS)
        capsys.readouterr()
        with LogSinks(print_freq=1, log_dir=None, is_main=True, device=CPU, loss_tag="train_loss") as sinks:
            stats = engine.train_one_epoch(
                self.model, self.observed(), self.optimizer, self.scaler, schedule, 0, self.batch_loss,
                steps=BATCHES, accum_iter=self.accum, sinks=sinks,
            )  # fmt: skip
        return Run(stats, shown, capsys.readouterr().out.splitlines())


def assert_same_tensors(a: dict[Any, Tensor], b: dict[Any, Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key}"


@pytest.mark.parametrize(("accum", "inf_at"), [(1, {4, 5}), (2, {8, 11})], ids=["accum1", "accum2"])
def test_an_inf_gradient_skips_the_step_halves_the_scale_and_the_lr_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], accum: int, inf_at: set[int]
) -> None:
    """Optimizer steps 4 and 5 skipped (accumulating 2: the first micro-batch of step 4, the last of step 5)."""
    epoch = Epoch(torch.float16, accum=accum, inf_at=inf_at)
    run = epoch.run(monkeypatch, capsys)
    seen, updates = epoch.seen, BATCHES // accum
    skipped = {batch // accum for batch in inf_at}
    assert skipped == {4, 5}
    scales = expected_scales(2.0**10, 2, skipped, updates)
    assert scales[:6] == [2.0**10, 2.0**11, 2.0**11, 2.0**12, 2.0**11, 2.0**10]  # doubled twice, halved twice
    for step in range(updates):
        before, after = seen[step * accum], seen[(step + 1) * accum]
        assert after.scale == scales[step], f"the scale after optimizer step {step}"
        if step in skipped:
            assert after.scale == before.scale / 2
            assert_same_tensors(after.weights, before.weights, f"weights at skipped step {step}")
            assert_same_tensors(after.moments, before.moments, f"AdamW state at skipped step {step}")
        else:
            assert all(v.isfinite().all() for v in after.weights.values())
            moved = [k for k in after.weights if not torch.equal(after.weights[k], before.weights[k])]
            assert step == 0 or len(moved) > 10, f"optimizer step {step} moved only {moved}"  # step 0: lr 0
    # AdamW counted only the steps it took; its moments are float32, as the weights.
    final = seen[-1]
    assert {v.item() for k, v in final.moments.items() if k[1] == "step"} == {updates - len(skipped)}
    assert {v.dtype for v in final.moments.values()} | {v.dtype for v in final.weights.values()} == {torch.float32}
    # The lr is set at every accumulation boundary, at the fractional epoch, whatever the scaler did.
    for batch in range(BATCHES):
        expected = lr_at((batch - batch % accum) / BATCHES)
        assert seen[batch + 1].lrs == pytest.approx([expected, expected], rel=1e-12, abs=0), f"lr at {batch}"
    # The epoch's figures, the bar and the lines.
    assert run.stats["skipped_steps"] == len(skipped) and isinstance(run.stats["skipped_steps"], int)
    assert run.stats["loss_scale"] == scales[-1]
    bar = [values["scale"] for values in run.shown]
    assert bar == [f"{seen[batch + 1].scale:g}" for batch in range(BATCHES)]
    assert [line.split("loss scale ")[1].split()[0] for line in run.lines] == bar


def test_float32_has_no_scale_figures(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = Epoch(torch.float32, accum=1, inf_at=set()).run(monkeypatch, capsys)
    assert set(run.stats) == {"lr", "loss", "images_per_s"}
    assert len(run.shown) == BATCHES and all("scale" not in values for values in run.shown)
    assert len(run.lines) == BATCHES and not any("scale" in line for line in run.lines)


def test_a_nan_loss_still_stops_the_epoch_in_float16(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A skipped step (batch 1) is not a NaN loss; a NaN loss (batch 3) stops the epoch before its backward."""
    epoch = Epoch(torch.float16, accum=1, inf_at={1}, nan_loss_at=3)
    with pytest.raises(engine.NonFiniteLossError, match="the loss is nan at epoch 0, iteration 3 of 12"):
        epoch.run(monkeypatch, capsys)
    assert len(epoch.seen) == 4  # the state before batch 3
    assert epoch.seen[2].scale == epoch.seen[1].scale / 2  # batch 1's step was skipped, and the run went on
    assert_same_tensors(epoch.state().weights, epoch.seen[3].weights, "weights after the NaN loss")
    assert_same_tensors(epoch.state().moments, epoch.seen[3].moments, "AdamW state after the NaN loss")


# ------------------------------------------------------------------ the loss-scale watch

FIGURES = {"lr": 1e-4, "loss": 0.5, "images_per_s": 10.0}


@pytest.mark.parametrize(
    ("scale", "skipped", "warned"),
    [(65536.0, 0, False), (2.0, 2, False), (1.0, 2, False), (0.5, 0, True), (1024.0, 3, True)],
    ids=["clean", "half-skipped", "scale-1", "scale-below-1", "most-skipped"],
)
def test_a_collapsing_scale_warns_once_per_run(scale: float, skipped: int, warned: bool) -> None:
    """An epoch of 4 optimizer steps: more than half skipped (3), or a scale below 1, is a collapse."""
    watch = precision.LossScaleWatch(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert watch.epoch_ended(0, FIGURES) is None  # float32 or bfloat16: nothing to watch
        first = watch.epoch_ended(3, FIGURES | {"skipped_steps": skipped, "loss_scale": scale})
        again = watch.epoch_ended(4, FIGURES | {"skipped_steps": 4, "loss_scale": 0.25})
        quiet = precision.LossScaleWatch(4, enabled=False).epoch_ended(0, {"skipped_steps": 4, "loss_scale": 0.25})
    assert quiet is None  # not the main process
    messages = [str(w.message) for w in caught]
    if warned:
        assert first is not None and again is None and messages == [first]  # once per run
        assert first.startswith(f"{COLLAPSED}: epoch 3 ends with the scale at {scale:g}, and {skipped} of its 4")
        assert "--dtype bfloat16" in first and "--clip_grad" in first and "a lower --blr" in first
    else:
        assert first is None and again is not None and messages == [again]  # the later collapse is the first
    assert precision.scale_note(FIGURES) == ""
    assert precision.scale_note(FIGURES | {"skipped_steps": 1, "loss_scale": 8.0}) == ", loss scale 8 (1 step skipped)"


# ------------------------------------------------------------------ through `mae pretrain` and `mae finetune`

STEPS = 4  # the `data` fixture: 16 images in batches of 4
DEFAULT_SCALE = torch.amp.GradScaler("cpu").get_scale()  # torch's initial scale (65536)


def log_records(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out_dir / "log.txt").read_text().splitlines()]


def without_speed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if "per_s" not in k} for r in records]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), classes=2, per_class=8)


def inf_gradients_at(
    monkeypatch: pytest.MonkeyPatch, calls: set[int], *, interrupt_at: int | None = None, signal_at: int | None = None
) -> None:
    """The MAE's forwards of this run, counted from 0: at ``calls`` the loss's gradient becomes inf (every
    weight's gradient is then inf or NaN: the step is skipped); at ``interrupt_at`` a KeyboardInterrupt (as
    Ctrl-C); at ``signal_at`` a SIGTERM (a mid-epoch checkpoint at the next optimizer step, then exit 75)."""
    forward = mae.MaskedAutoencoderViT.forward
    count = 0

    def injecting(model: mae.MaskedAutoencoderViT, *args: Any, **kwargs: Any) -> Any:
        nonlocal count
        call, count = count, count + 1
        if call == interrupt_at:
            raise KeyboardInterrupt
        if call == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)  # chỉ ghi nhận cờ; lưu ở ranh giới bước tối ưu kế tiếp
        loss, pred, mask = forward(model, *args, **kwargs)
        if call in calls:
            loss.register_hook(lambda grad: grad * math.inf)
        return loss, pred, mask

    monkeypatch.setattr(mae.MaskedAutoencoderViT, "forward", injecting)


def expected_log(skips: set[int], epochs: int) -> list[tuple[int, float]]:
    """Each epoch's (skipped steps, scale at its end) for skips at the global iterations ``skips`` (accum 1, no
    growth within these few steps: torch's growth_interval is 2000)."""
    figures, scale = [], DEFAULT_SCALE
    for epoch in range(epochs):
        skipped = len({s for s in skips if s // STEPS == epoch})
        scale *= 0.5**skipped
        figures.append((skipped, scale))
    return figures


def test_the_log_holds_skipped_steps_and_scale_and_a_collapse_warns_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skips = {0, 2, 3, 4, 5, 6, 7}  # epoch 0: 3 of 4 steps skipped (a collapse), epoch 1: all 4 (warned once)
    inf_gradients_at(monkeypatch, skips)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = pretrain(capsys, data, tmp_path / "out", "--dtype", "float16")
    assert code == 0, err
    records = log_records(tmp_path / "out")
    assert [(r["train_skipped_steps"], r["train_loss_scale"]) for r in records] == expected_log(skips, 2)
    assert [type(r["train_skipped_steps"]) for r in records] == [int, int]
    assert all(math.isfinite(r["train_loss"]) for r in records)  # a skipped step is not a NaN loss
    scale0 = DEFAULT_SCALE / 8
    assert f"loss scale {scale0:g} (3 steps skipped)" in out and f"loss scale {scale0 / 16:g} (4 steps" in out
    first_line = next(line for line in out.splitlines() if line.startswith("Epoch: [0]  [0/4]"))
    assert f"loss scale {DEFAULT_SCALE / 2:g}  " in first_line  # after the first (skipped) step
    collapsed = [str(w.message) for w in caught if COLLAPSED in str(w.message)]
    assert len(collapsed) == 1, collapsed
    assert f"epoch 0 ends with the scale at {scale0:g}, and 3 of its 4 optimizer steps were skipped" in collapsed[0]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_no_scale_figures_without_float16(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, dtype: str
) -> None:
    code, out, err = pretrain(capsys, data, tmp_path / "out", "--dtype", dtype, epochs=1)
    assert code == 0, err
    (record,) = log_records(tmp_path / "out")
    assert set(record) == {"train_lr", "train_loss", "train_images_per_s", "epoch"}
    assert "loss scale" not in out


@pytest.mark.parametrize("saved", ["whole", "without its scaler"])
def test_a_float16_run_stopped_and_resumed_is_the_straight_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, saved: str
) -> None:
    """Stopped in epoch 1 and resumed from checkpoint-0.pth; a skipped step in each epoch, so the scale the
    checkpoint holds is not the default one. Without the saved ``scaler`` entry (issue 18) the resumed run
    starts epoch 1 from the default scale, and is not the straight run."""
    flags = ("--dtype", "float16")
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    with monkeypatch.context() as patch:
        inf_gradients_at(patch, {1, STEPS + 1})
        assert pretrain(capsys, data, straight, *flags)[0] == 0
    with monkeypatch.context() as patch:
        inf_gradients_at(patch, {1}, interrupt_at=STEPS + 3)
        if saved != "whole":
            training_state = runs._training_state
            patch.setattr(runs, "_training_state", lambda *a: training_state(*a) | {"scaler": {}})
        code, _, err = pretrain(capsys, data, cut, *flags)
    assert code == 130 and sorted(p.name for p in cut.iterdir()) == ["checkpoint-0.pth", "log.txt"], err
    with monkeypatch.context() as patch:
        inf_gradients_at(patch, {1})  # epoch 1's iteration 1, as in the straight run
        code, out, err = pretrain(capsys, data, cut, *flags, "--resume", str(cut))
    assert code == 0 and "resume: continuing at epoch 1" in out, err
    assert [(r["train_skipped_steps"], r["train_loss_scale"]) for r in log_records(straight)] == expected_log(
        {1, STEPS + 1}, 2
    )
    a, b = load(straight / "checkpoint-1.pth"), load(cut / "checkpoint-1.pth")
    if saved == "whole":
        for entry in ("model", "optimizer", "scaler", "epoch", "rng"):
            assert_same(a[entry], b[entry], entry)
        assert without_speed(log_records(straight)) == without_speed(log_records(cut))
    else:
        assert b["scaler"]["scale"] == 2 * a["scaler"]["scale"]  # epoch 1 began at the default scale
        assert log_records(cut)[1]["train_loss_scale"] == 2 * log_records(straight)[1]["train_loss_scale"]


def test_a_mid_epoch_checkpoint_keeps_the_skipped_steps_and_the_scale(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM at epoch 1's iteration 2, after a skipped step at its iteration 0: the requeued run (the same
    command, --auto_resume) continues at iteration 3 and the epoch counts the skip made before the stop."""
    flags = ("--dtype", "float16", "--save_every", "1", "--auto_resume")
    skips = {1, STEPS}
    straight, requeued = tmp_path / "straight", tmp_path / "requeued"
    with monkeypatch.context() as patch:
        inf_gradients_at(patch, skips)
        assert pretrain(capsys, data, straight, *flags)[0] == 0
    with monkeypatch.context() as patch:
        inf_gradients_at(patch, skips, signal_at=STEPS + 2)
        code, _, err = pretrain(capsys, data, requeued, *flags)
    assert code == EXIT_PREEMPTED, err
    mid = load(requeued / MID_EPOCH_NAME)
    assert mid["position"]["step"] == 3 and mid["position"]["averages"][0, 4].item() == 1  # the skip, saved
    assert mid["scaler"]["scale"] == DEFAULT_SCALE / 4
    code, out, err = pretrain(capsys, data, requeued, *flags)  # no skips left: epoch 1 goes on at iteration 3
    assert code == 0 and "continuing at epoch 1" in out, err
    assert [(r["train_skipped_steps"], r["train_loss_scale"]) for r in log_records(straight)] == expected_log(skips, 2)
    assert without_speed(log_records(straight)) == without_speed(log_records(requeued))
    a, b = load(straight / "checkpoint-1.pth"), load(requeued / "checkpoint-1.pth")
    for entry in ("model", "optimizer", "scaler", "epoch", "rng"):
        assert_same(a[entry], b[entry], entry)


def test_an_official_float16_checkpoint_resumes_with_its_scale(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    """The official ``misc.save_model`` layout (no ``rng``), its ``scaler`` the state of an enabled scaler at
    scale 1024 after 17 clean steps (what ``NativeScalerWithGradNormCount.state_dict()`` saves)."""
    assert pretrain(capsys, data, tmp_path / "first", "--dtype", "float16", epochs=1)[0] == 0
    ours = load(tmp_path / "first" / "checkpoint-0.pth")
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0).state_dict() | {"_growth_tracker": 17}
    official = {key: ours[key] for key in ("model", "optimizer", "epoch", "args")} | {"scaler": scaler}
    torch.save(official, tmp_path / "official.pth")
    out = tmp_path / "resumed"
    code, stdout, err = pretrain(capsys, data, out, "--dtype", "float16", "--resume", str(tmp_path / "official.pth"))
    assert code == 0 and "resume: continuing at epoch 1" in stdout, err
    (record,) = log_records(out)
    assert (record["epoch"], record["train_skipped_steps"], record["train_loss_scale"]) == (1, 0, 1024.0)
    # Epoch 1's 4 clean steps went on counting from the file's 17 (growth at 2000).
    assert load(out / "checkpoint-1.pth")["scaler"] == scaler | {"_growth_tracker": 17 + STEPS}


def test_finetune_logs_the_skipped_steps_and_the_scale(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fine-tuning in float16 overflows on its own at torch's initial scale (the classifier's first steps), so
    the skips are counted here from the gradients themselves: a step is skipped where a gradient the scaler
    is given holds inf or NaN. Three more are injected (epoch 0's last three batches: a collapse, warned)."""
    data = make_classification_data(tmp_path / "data", classes=2)  # 16 training images: 4 batches of 4
    forward = mae.classifier.VisionTransformer.forward
    count = 0

    def injecting(model: Any, imgs: Tensor) -> Tensor:
        nonlocal count
        logits = forward(model, imgs)
        if logits.requires_grad:  # training, not the evaluation
            if count in (1, 2, 3):
                logits.register_hook(lambda grad: grad * math.inf)
            count += 1
        return logits

    non_finite: list[bool] = []  # each optimizer step: did a gradient hold inf or NaN?
    step = torch.amp.GradScaler.step

    def stepping(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        non_finite.append(not all(g.isfinite().all() for g in grads))
        return step(scaler, optimizer, *args, **kwargs)

    monkeypatch.setattr(mae.classifier.VisionTransformer, "forward", injecting)
    monkeypatch.setattr(torch.amp.GradScaler, "step", stepping)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, *classification_argv("finetune", data, tmp_path / "out", "--dtype", "float16"))
    assert code == 0, err
    records = log_records(tmp_path / "out")
    assert len(non_finite) == STEPS * len(records) and all(non_finite[1:4])
    expected, scale = [], DEFAULT_SCALE
    for epoch in range(len(records)):
        skipped = sum(non_finite[epoch * STEPS : (epoch + 1) * STEPS])
        scale *= 0.5**skipped  # no growth in so few steps (growth_interval 2000)
        expected.append((skipped, scale))
    assert [(r["train_skipped_steps"], r["train_loss_scale"]) for r in records] == expected
    first = expected[0]
    assert f"loss scale {first[1]:g} ({first[0]} steps skipped)" in out
    collapsed = [str(w.message) for w in caught if COLLAPSED in str(w.message)]
    assert len(collapsed) == 1
    assert f"epoch 0 ends with the scale at {first[1]:g}, and {first[0]} of its 4" in collapsed[0]


# ------------------------------------------------------------------ float16 allowed on the CPU, warned where slow


@pytest.mark.parametrize(
    ("flags", "ratio", "why"),
    [
        ({"avx2", "fma"}, 3.0, "this CPU has no avx512_fp16 or amx_fp16, so PyTorch emulates float16 products"),
        ({"avx2", "avx512f", "avx512_fp16"}, 2.0, "float16 products are slow on this CPU, although it has avx512_fp16"),
        ({"avx2", "avx512f", "avx512_fp16"}, 0.6, None),
    ],
    ids=["emulated", "native-but-slow", "native-fast"],
)
def test_float16_runs_on_the_cpu_with_a_warning_where_it_is_slow(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], ratio: float, why: str | None
) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    measured: list[torch.dtype] = []

    def measure(dtype: torch.dtype, **_: object) -> cpu.ProductCost:
        measured.append(dtype)
        return cpu.ProductCost(dtype, 0.01, 0.01 * ratio, 0.01, 0.01 * ratio)

    monkeypatch.setattr(cpu, "measure_product_cost", measure)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.resolve_dtype("float16", CPU) == torch.float16
        assert precision.resolve_dtype("auto", CPU) == torch.float32  # auto stays the official choice
    assert measured == [torch.float16]
    messages = [str(w.message) for w in caught]
    if why is None:
        assert messages == []
    else:
        (message,) = messages
        assert (
            message.startswith("--dtype float16 on this CPU will be slower than float32, not faster") and why in message
        )
    assert precision.grad_scaler(CPU, torch.float16).is_enabled()
    with precision.autocast(CPU, torch.float16)():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16


@pytest.mark.parametrize("bf16_ratio", [0.5, 1.5])
def test_float16_slow_despite_native_instructions_points_to_bf16_where_bf16_is_faster(
    monkeypatch: pytest.MonkeyPatch, bf16_ratio: float
) -> None:
    """A CPU with avx512_fp16 and AMX-bf16 (this project's Xeon): float16 products measured 1.3x float32's time
    there, bf16's 0.6x. The warning then names bf16, with its measured speed; where bf16 is no faster, only float32."""
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_fp16", "amx_bf16"}))
    ratios = {torch.float16: 1.3, torch.bfloat16: bf16_ratio}
    monkeypatch.setattr(
        cpu, "measure_product_cost", lambda d, **_: cpu.ProductCost(d, 0.01, 0.01 * ratios[d], 0.01, 0.01 * ratios[d])
    )
    message = cpu.reduced_precision_warning(torch.float16, CPU)
    assert message is not None and "although it has avx512_fp16" in message
    if bf16_ratio < 1:
        assert message.endswith(
            "Use --dtype float32 here, or --dtype bfloat16: its products ran at 2.0x float32's speed here."
        )
    else:
        assert message.endswith("Use --dtype float32 here.")


def test_mae_pretrain_float16_warns_before_the_run_where_it_is_slow(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(cpu, "measure_product_cost", lambda dtype, **_: cpu.ProductCost(dtype, 0.01, 0.05, 0.01, 0.05))
    started: list[bool] = []
    original = engine.train_one_epoch

    def train(*args: Any, **kwargs: Any) -> dict[str, float]:
        started.append(bool(caught))  # warned before the first epoch started
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", train)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = pretrain(capsys, data, tmp_path / "out", "--dtype", "float16", epochs=1)
    assert code == 0 and "device: cpu, float16" in out, err
    assert started == [True]
    assert any("--dtype float16 on this CPU will be slower than float32" in str(w.message) for w in caught)


# ------------------------------------------------------------------ parity with transformers' MAE in float16

P_STEPS, P_EPOCHS, P_BLR, P_MIN_LR, P_WD, P_SEED = 4, 2, 0.5, 1e-3, 0.5, 7
P_INIT_SCALE = 2.0**8  # no overflow in these steps: both runs take every step (checked)
RATIO = 2.0  # our float16 error over the reference loop's, at most (measured 0.81-1.21)
U16 = 2.0**-11  # float16's unit roundoff


def parity_batches(dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(BATCH, 3, 32, 32, generator=g).to(dtype), torch.zeros(BATCH, dtype=torch.long))
        for _ in range(P_STEPS)
    ]


def parity_lr(t: float, peak: float) -> float:
    """Warmup (1 epoch) then half-cycle cosine to P_MIN_LR, at the fractional epoch (the recipe)."""
    if t < 1:
        return peak * t
    return P_MIN_LR + 0.5 * (peak - P_MIN_LR) * (1.0 + math.cos(math.pi * (t - 1) / (P_EPOCHS - 1)))


class Trained(NamedTuple):
    weights: list[dict[str, Tensor]]  # official names, after each optimizer step
    grads: list[dict[str, Tensor]]  # official names, what each optimizer step was given (unscaled)
    scale: float
    optimizer: torch.optim.Optimizer


def engine_steps(config: mae.MAEConfig, initial: dict[str, Tensor], master: torch.dtype, accum: int) -> Trained:
    """Our engine (`engine_pretrain.train_one_epoch`), float16 autocast where ``master`` is float32."""
    from mae.train.engine_pretrain import train_one_epoch
    from mae.train.schedule import base_learning_rate

    model = mae.MaskedAutoencoderViT(config).to(master)
    model.load_state_dict(initial)
    lr = base_learning_rate(P_BLR, BATCH * accum)
    optimizer = build_adamw(model, lr, P_WD)
    schedule = CosineSchedule(lr, P_MIN_LR, 1, P_EPOCHS)
    weights: list[dict[str, Tensor]] = []
    optimizer.register_step_post_hook(
        lambda *_: weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    )
    grads: list[dict[str, Tensor]] = []
    optimizer.register_step_pre_hook(
        lambda *_: grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    )
    half = master == torch.float32
    scaler = torch.amp.GradScaler("cpu", init_scale=P_INIT_SCALE, enabled=half)
    torch.manual_seed(P_SEED)  # mô hình tự rút một torch.rand(N, L) cho mỗi batch
    for epoch in range(P_EPOCHS):
        train_one_epoch(
            model, parity_batches(master), optimizer, scaler, schedule, epoch, steps=P_STEPS, accum_iter=accum,
            autocast=precision.autocast(CPU, torch.float16 if half else torch.float32),
        )  # fmt: skip
    return Trained(weights, grads, scaler.get_scale(), optimizer)


def reference_steps(config: mae.MAEConfig, initial: dict[str, Tensor], accum: int) -> Trained:
    """The official loop written from torch primitives around transformers' model, in float16 autocast with a
    GradScaler: lr per iteration at accumulation boundaries, scale(loss / accum).backward(), then every accum
    batches scaler.step, scaler.update, zero_grad; the gradients of an unfinished accumulation dropped."""
    from transformers import ViTMAEForPreTraining

    from reference.hf import hf_config, hf_to_official, official_to_hf

    with torch.device("meta"):
        model = ViTMAEForPreTraining(hf_config(config))
    model.load_state_dict({k: v.clone() for k, v in official_to_hf(initial).items()}, strict=True, assign=True)
    model.train()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:  # bảng vị trí sin-cos cố định
            (no_decay if param.ndim == 1 or name.endswith(".bias") else decay).append(param)
    peak = P_BLR * BATCH * accum / 256
    optimizer = torch.optim.AdamW(
        [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": P_WD}], lr=peak, betas=(0.9, 0.95)
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=P_INIT_SCALE)
    weights: list[dict[str, Tensor]] = []
    grads: list[dict[str, Tensor]] = []
    # Gradient mà AdamW nhận (scaler.step gọi unscale_ trước optimizer.step): đã chia lại cho scale.
    optimizer.register_step_pre_hook(
        lambda *_: grads.append(
            hf_to_official({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    )
    torch.manual_seed(P_SEED)
    for epoch in range(P_EPOCHS):
        optimizer.zero_grad()
        for step, (images, _) in enumerate(parity_batches(torch.float32)):
            if step % accum == 0:
                for group in optimizer.param_groups:
                    group["lr"] = parity_lr(epoch + step / P_STEPS, peak)
            noise = torch.rand(images.shape[0], config.num_patches)
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model(pixel_values=images, noise=noise).loss
            scaler.scale(loss / accum).backward()
            if (step + 1) % accum == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                weights.append({k: v.detach().clone() for k, v in hf_to_official(model.state_dict()).items()})
    return Trained(weights, grads, scaler.get_scale(), optimizer)


@pytest.mark.parametrize(("accum", "norm_pix_loss"), [(1, False), (2, True)], ids=["accum1-pixels", "accum2-norm-pix"])
def test_float16_steps_are_as_close_to_exact_as_transformers_reference_loop(accum: int, norm_pix_loss: bool) -> None:
    config = small_config(norm_pix_loss=norm_pix_loss)
    torch.manual_seed(0)
    initial = {k: v.detach().clone() for k, v in mae.MaskedAutoencoderViT(config).state_dict().items()}
    exact = engine_steps(config, {k: v.double() for k, v in initial.items()}, torch.float64, accum)
    ours = engine_steps(config, initial, torch.float32, accum)
    theirs = reference_steps(config, initial, accum)

    assert ours.scale == theirs.scale == P_INIT_SCALE  # no step skipped: the same steps were taken
    assert len(exact.weights) == len(ours.weights) == len(theirs.weights) == P_EPOCHS * (P_STEPS // accum)
    trained = [k for k in initial if k not in ("pos_embed", "decoder_pos_embed")]

    def flat(weights: dict[str, Tensor]) -> Tensor:
        return torch.cat([weights[k].double().flatten() for k in trained])

    # The gradients each step was given (unscaled: AdamW alone would hardly notice a missing unscale).
    for i, (e, a, b) in enumerate(zip(exact.grads, ours.grads, theirs.grads, strict=True)):
        error_ours, error_theirs = ((flat(g) - flat(e)).norm() / flat(e).norm() for g in (a, b))
        assert error_ours <= RATIO * error_theirs, f"gradient {i}: ours {error_ours:.2e}, reference {error_theirs:.2e}"
        assert error_theirs < 20 * U16  # float16 as such (measured 7e-4 to 1.5e-3: a few roundoffs)
    start = flat(initial)
    for i, (e, a, b) in enumerate(zip(exact.weights, ours.weights, theirs.weights, strict=True)):
        moved = (flat(e) - start).norm()
        if moved == 0:  # the first step, at lr 0 (warmup): nothing to compare but equality
            assert torch.equal(flat(a), start) and torch.equal(flat(b), start)
            continue
        error_ours, error_theirs = ((flat(w) - flat(e)).norm() / moved for w in (a, b))
        assert error_ours <= RATIO * error_theirs, f"step {i}: ours {error_ours:.2e}, reference {error_theirs:.2e}"
        assert error_theirs < 0.1  # float16 as such: a few % of the movement (measured about 3 %)
    # Master weights and optimizer state stay float32.
    for trained_run in (ours, theirs):
        states = trained_run.optimizer.state.values()
        assert {v.dtype for s in states for k, v in s.items() if k != "step"} == {torch.float32}
    assert {v.dtype for v in ours.weights[-1].values()} == {torch.float32}
