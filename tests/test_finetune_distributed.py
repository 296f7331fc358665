"""Data-parallel fine-tuning, linear probing and evaluation (gloo on the CPU, 2 processes).

- `torchrun --standalone --nproc_per_node 2 -m mae finetune ... --dist_eval` (tiny model, mixup and cutmix,
  accum_iter 2, 9 validation images: 5 on rank 0, 4 on rank 1) finishes; rank 0 alone prints, logs and
  saves; the logged top-1 is exactly that of `mae evaluate` on the saved checkpoint in one process, and the
  logged lr the schedule's per-iteration lr (the head's group) averaged over the epoch, computed here. Then
  `--eval` of that checkpoint on 2 processes without `--dist_eval` (each evaluates all 9 images) prints
  "on 9 images" once, not 18, with the single-process top-1 and top-5.
- Fine-tuning at the engine level (2 processes spawned here, the classifier in DistributedDataParallel,
  rank r fed half r of every global batch): at every optimizer step both ranks use identical gradients
  and hold identical weights (torch.equal), and these equal one process running
  `engine_finetune.train_one_epoch` on the whole batches within 1e-6, over 2 epochs with accum_iter 2 (a
  partial accumulation at the end of each epoch), layer-decay AdamW, gradient clipping that bites, timm's
  Mixup/CutMix (soft targets, label smoothing 0.1) and `SoftTargetCrossEntropy`.
- Linear probing, the same way with `add_probe_head` and LARS. Finding: the probe's BatchNorm1d is in
  train mode and DDP does not synchronise it (nor does the official `main_linprobe.py`, which wraps the
  model in plain DDP), so each rank normalises its half by that half's mean and variance: the update is
  NOT that of one process normalising the whole batch. What holds, and is tested: the ranks' gradients and
  linear weights are identical, and equal those of one process that normalises each half of the batch by
  its own statistics (float64, within 1e-10). The running statistics (used at evaluation and saved by rank
  0) are rank 0's: DDP broadcasts rank 0's buffers before every forward, so the saved ones are the moving
  average of rank 0's halves only, and rank 1's end one half-batch away from them; the reference keeps the
  statistics of its first half and matches rank 0's.
- `evaluate` over `build_eval_loader` shares (rank::2, no padding) on 9 images (odd): both ranks return
  the single-process top-1 and top-5 exactly, and these are the values planted in the labels here (each
  image's label is the class at a chosen rank of the logits, computed in the test); the loss is within
  1e-12 (relative) of one process at batch 1, and within 1e-6 at batch 3 (the evaluation sums each batch's
  losses in float32, and the batches hold other images on 2 processes than on 1). Without sharing
  (`shared=False`, every rank all 9 images) each rank counts 9 images and equals one process exactly.

What cannot be held equal between one process and two, and how it is held here: the augmentation (fixed
tensors instead of images); stochastic depth (off: each rank draws its own per-sample masks); mixup's
draws, which come from numpy's global generator, seeded seed + rank on each rank as `mae finetune` does and
the pairs formed within each rank's half (timm flips the batch): the single process mixes each half of its
batch on its own, with the generator state of the rank that holds that half. float64, for the reason given
in `tests/test_train_distributed.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.data.mixup import Mixup
from timm.loss.cross_entropy import SoftTargetCrossEntropy
from torch import Tensor, nn
from torch.multiprocessing.spawn import spawn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import TensorDataset
from train_helpers import TINY_CLASSIFIER_ARGS, make_image_folder, one_thread, run_quietly

from helpers import free_port, gloo_group, small_config
from mae.classifier import VisionTransformer, param_groups_lrd
from mae.train.data import build_eval_loader
from mae.train.distributed import Dist
from mae.train.engine_finetune import evaluate, train_one_epoch
from mae.train.lars import LARS
from mae.train.linprobe import add_probe_head
from mae.train.precision import grad_scaler
from mae.train.schedule import CosineSchedule

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"),
    pytest.mark.xdist_group("distributed"),
]

WORLD = 2
HALF = 4  # images per rank and micro-batch; the single process takes 2 x HALF
STEPS = 5  # micro-batches per epoch: accum_iter 2 leaves one unfinished at the end of each epoch
ACCUM = 2
EPOCHS = 2
CLASSES = 7
SEED = 7  # numpy's global generator on rank r: SEED + r (as `mae finetune --seed 7`)
FINETUNE_LR, PROBE_LR = 2e-3, 0.5
CLIP = 1.0  # between the steps' gradient norms (0.67-1.92 measured): some steps are clipped, some not
EVAL_IMAGES = 9  # odd: 5 on rank 0, 4 on rank 1
EVAL_BATCHES = (1, 3)


# ------------------------------------------------------------------------------------------- torchrun


def test_torchrun_finetune_two_processes_rank0_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_image_folder(data / "train", classes=3, per_class=8, size=40)
    make_image_folder(data / "val", classes=3, per_class=3, size=40, seed=1)  # 9 images: 5 + 4 on 2 processes
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD)]
    command += ["-m", "mae", "finetune", "--data_path", str(data), "--output_dir", str(out), *TINY_CLASSIFIER_ARGS]
    command += ["--batch_size", "2", "--accum_iter", str(ACCUM), "--epochs", "1", "--warmup_epochs", "1"]
    command += ["--mixup", "0.8", "--cutmix", "1.0", "--dist_eval"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    assert "batch: 2 x accum 2 x 2 process(es) = 8" in done.stdout  # cả hai tiến trình đã vào nhóm
    assert done.stdout.count("epoch 1/1:") == 1  # chỉ rank 0 in
    assert done.stdout.count("training time") == 1
    names = {p.name for p in out.iterdir()}
    assert {"checkpoint-0.pth", "log.txt"} <= names <= {"checkpoint-0.pth", "log.txt", "checkpoint-best.pth"}
    records = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert len(records) == 1 and records[0]["epoch"] == 0  # một bản ghi: chỉ rank 0 ghi log
    ckpt = torch.load(out / "checkpoint-0.pth", map_location="cpu", weights_only=False)
    assert ckpt["rng"]["cpu"].shape[0] == WORLD  # trạng thái sinh số của cả hai rank
    # 24 ảnh / 2 tiến trình / batch 2 = 6 micro-batch mỗi rank, cộng dồn 2: 3 bước tối ưu.
    assert {int(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {3}
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())

    # --dist_eval chia 9 ảnh cho 2 tiến trình: top-1 đúng bằng đánh giá một tiến trình trên cùng trọng số.
    code, printed, err = run_quietly(
        "evaluate", str(out / "checkpoint-0.pth"), "--data_path", str(data), "--json", "--num_workers", "0"
    )
    assert code == 0, err
    single = json.loads(printed)
    assert single["images"] == 9
    assert records[0]["test_acc1"] == single["acc1"]
    assert records[0]["test_acc5"] == single["acc5"]
    assert records[0]["test_loss"] == pytest.approx(single["loss"], rel=1e-5)  # lô khác nhau, cộng float32
    # train_lr: lr của nhóm lớn nhất (đầu phân loại, lr_scale 1) theo lịch trình, trung bình qua các iteration.
    lr, steps = 1e-3 * 2 * ACCUM * WORLD / 256, 24 // WORLD // 2  # blr x batch hiệu dụng / 256; batch mỗi rank
    lrs = [lr * ((s - s % ACCUM) / steps + 0) / 1 for s in range(steps)]  # đặt ở batch đầu mỗi bước; khởi động 1
    assert records[0]["train_lr"] == pytest.approx(sum(lrs) / len(lrs), rel=1e-12)

    # Không --dist_eval: mỗi tiến trình đánh giá cả 9 ảnh; số ảnh in ra là 9, không phải 2 x 9.
    command = [*command[: command.index("finetune") + 1], "--data_path", str(data), *TINY_CLASSIFIER_ARGS]
    command += ["--eval", "--resume", str(out / "checkpoint-0.pth"), "--output_dir", ""]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(f"checkpoint-0.pth on 9 images of {data}/val: top-1 {single['acc1']:.2f}%, ") == 1
    assert f"top-5 {single['acc5']:.2f}%" in done.stdout


# ------------------------------------------------------------------------------------- training steps


class PerShareMixup:
    """timm's ``Mixup`` applied to each of ``len(states)`` equal shares of the batch on its own, share ``r``
    drawing from numpy's global generator in state ``states[r]``: one process doing what the ranks do."""

    def __init__(self, mixup: Mixup, seeds: list[int]) -> None:
        self.mixup = mixup
        self.states = []
        for seed in seeds:
            np.random.seed(seed)
            self.states.append(np.random.get_state())

    def __call__(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        mixed, targets = [], []
        for r, (xs, ts) in enumerate(zip(x.chunk(len(self.states)), target.chunk(len(self.states)), strict=True)):
            np.random.set_state(self.states[r])
            xs, ts = self.mixup(xs.clone(), ts)
            self.states[r] = np.random.get_state()
            mixed.append(xs)
            targets.append(ts)
        return torch.cat(mixed), torch.cat(targets)


class PerShareBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that, in training, normalises each of ``shares`` equal parts of the batch by that part's own
    statistics and keeps the running statistics of the first part only: one process doing what DDP does with
    a plain BatchNorm1d (each rank its own half; rank 0's buffers broadcast before every forward)."""

    def __init__(self, features: int, shares: int) -> None:
        super().__init__(features, eps=1e-6, affine=False)
        self.shares = shares

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        first, *rest = x.chunk(self.shares)
        # Mỗi phần chuẩn hoá bằng trung bình và phương sai của riêng nó (như mỗi rank trong DDP).
        others = [F.batch_norm(part, None, None, training=True, eps=self.eps) for part in rest]
        return torch.cat([super().forward(first), *others])


def classifier(probe: bool) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(small_config(), num_classes=CLASSES, global_pool=not probe)
    if probe:
        add_probe_head(model)
    return model


def run_steps(
    data: dict[str, Tensor], probe: bool, dist_: Dist, per_share_norm: bool = True
) -> list[dict[str, Tensor]]:
    """EPOCHS epochs of `train_one_epoch` on this process's rows of every global batch (all rows in one process).

    Returns, for every optimizer step, the gradients it used (``grad.NAME``, after clipping) and the state
    after it; the first entry also holds ``norm`` (each step's gradient norm before clipping).
    """
    rows = slice(dist_.rank * HALF, (dist_.rank + 1) * HALF) if dist_.enabled else slice(None)
    model = classifier(probe)
    if probe and not dist_.enabled and per_share_norm:
        model.head[0] = PerShareBatchNorm(small_config().embed_dim, WORLD)  # type: ignore[index]
    model.double()
    wrapped: nn.Module = DistributedDataParallel(model) if dist_.enabled else model
    mixup_fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
    optimizer: torch.optim.Optimizer
    if probe:
        optimizer = LARS(model.head.parameters(), lr=PROBE_LR)
        criterion: nn.Module = nn.CrossEntropyLoss()
        schedule = CosineSchedule(PROBE_LR, 0.0, 1, EPOCHS)
    else:
        optimizer = torch.optim.AdamW(param_groups_lrd(model, 0.05, 0.75), lr=FINETUNE_LR)
        criterion = SoftTargetCrossEntropy()
        schedule = CosineSchedule(FINETUNE_LR, 1e-5, 1, EPOCHS)
        mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=CLASSES)
        if dist_.enabled:
            np.random.seed(SEED + dist_.rank)  # như seed_everything(seed + rank)
            mixup_fn = mixup
        else:
            mixup_fn = PerShareMixup(mixup, [SEED + r for r in range(WORLD)])
    snapshots: list[dict[str, Tensor]] = []
    grads: dict[str, Tensor] = {}
    norms: list[float] = []

    def before(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads.clear()
        grads.update({f"grad.{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    def after(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        snapshots.append({**grads, **{k: v.detach().clone() for k, v in model.state_dict().items()}})

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
    clip_grad = None if probe else CLIP
    if clip_grad is not None:
        clip = torch.nn.utils.clip_grad_norm_

        def recording_clip(params: Any, max_norm: float, *args: Any, **kwargs: Any) -> Tensor:
            norm = clip(params, max_norm, *args, **kwargs)
            norms.append(float(norm))
            return norm

        torch.nn.utils.clip_grad_norm_ = recording_clip  # type: ignore[assignment]
    try:
        scaler = grad_scaler(torch.device("cpu"), torch.float32)
        for epoch in range(EPOCHS):
            # Mixup trộn tại chỗ: mỗi epoch một bản sao mới, như DataLoader trả tensor mới.
            loader = [(data["images"][s, rows].clone(), data["labels"][s, rows].clone()) for s in range(STEPS)]
            train_one_epoch(
                wrapped, criterion, loader, optimizer, scaler, schedule, epoch,
                steps=STEPS, accum_iter=ACCUM, mixup_fn=mixup_fn, clip_grad=clip_grad, dist=dist_,
            )  # fmt: skip
    finally:
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_ = clip
    if snapshots:
        snapshots[0]["norm"] = torch.tensor(norms, dtype=torch.float64)
    return snapshots


def training_data() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "images": torch.randn(STEPS, WORLD * HALF, 3, 32, 32, generator=g, dtype=torch.float64),
        "labels": torch.randint(0, CLASSES, (STEPS, WORLD * HALF), generator=g),
    }


def worker(rank: int, port: int, folder: str) -> None:
    with gloo_group(rank, port, WORLD):
        data = torch.load(Path(folder) / "data.pt", weights_only=True)
        dist_ = Dist(rank=rank, world_size=WORLD)
        result = {
            "finetune": run_steps(data, False, dist_),
            "probe": run_steps(data, True, dist_),
            "evaluate": [run_evaluate(data, batch, dist_) for batch in EVAL_BATCHES],
            "evaluate_all": [run_evaluate(data, batch, dist_, shared=False) for batch in EVAL_BATCHES],
        }
        torch.save(result, Path(folder) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """The data, and what each of the 2 ranks returned (one spawn for every test: starting them is the slow part)."""
    folder = tmp_path_factory.mktemp("ddp")
    data = training_data() | evaluation_data()
    torch.save(data, folder / "data.pt")
    spawn(worker, args=(free_port(), str(folder)), nprocs=WORLD, join=True)  # type: ignore[no-untyped-call]
    return data, [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def assert_close(actual: Tensor, expected: Tensor, atol: float, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol, msg=lambda message: f"{what}: {message}")


@pytest.mark.parametrize("probe", [False, True], ids=["finetune", "linprobe"])
def test_ddp_steps_equal_across_ranks_and_single_process(
    runs: tuple[dict[str, Tensor], list[dict[str, Any]]], probe: bool
) -> None:
    data, results = runs
    ranks = [result["probe" if probe else "finetune"] for result in results]
    with one_thread():
        single = run_steps(data, probe, Dist())

    assert len(single) == len(ranks[0]) == len(ranks[1]) == EPOCHS * (STEPS // ACCUM)
    tolerance = 1e-10 if probe else 1e-6  # LARS không khuếch đại nhiễu làm tròn như AdamW
    running = {"head.0.running_mean", "head.0.running_var"}
    for i, expected in enumerate(single):
        assert list(ranks[0][i]) == list(expected)
        for key, value in expected.items():
            if key == "norm":
                continue
            if key not in running:  # rank 1 giữ thống kê chạy của nửa batch của nó (xem docstring)
                assert torch.equal(ranks[0][i][key], ranks[1][i][key]), f"ranks differ at step {i}: {key}"
            assert_close(ranks[0][i][key], value, tolerance, f"{key} at optimizer step {i}")
    # Phép so sánh có nghĩa: trọng số học được đổi hơn nhiều lần dung sai.
    learnt = (
        ["head.1.weight", "head.1.bias"]
        if probe
        else [k for k in single[0] if k != "norm" and not k.startswith("grad.")]
    )
    moved = max((single[-1][k] - single[0][k]).abs().max().item() for k in learnt)
    assert moved > 1000 * tolerance
    if probe:
        # Chỉ đầu tuyến tính học; encoder đóng băng.
        assert sorted(k for k in single[0] if k.startswith("grad.")) == ["grad.head.1.bias", "grad.head.1.weight"]
    else:
        norms = single[0]["norm"]
        assert torch.equal(ranks[0][0]["norm"], ranks[1][0]["norm"])
        torch.testing.assert_close(ranks[0][0]["norm"], norms, rtol=1e-9, atol=0)
        assert (norms > CLIP).any() and (norms < CLIP).any()  # có bước bị cắt, có bước không


def test_probe_with_whole_batch_statistics_differs() -> None:
    """The finding above, shown: one process normalising the whole batch computes another gradient."""
    data = training_data()
    with one_thread():
        per_share = run_steps(data, True, Dist())[0]["grad.head.1.weight"]
        whole = run_steps(data, True, Dist(), per_share_norm=False)[0]["grad.head.1.weight"]
    assert (whole - per_share).norm() > 0.1 * whole.norm()


# ------------------------------------------------------------------------------------------ evaluation


def eval_classifier() -> VisionTransformer:
    """The fine-tuning classifier with a head of std 1 (logits of order 1: no near-ties between classes)."""
    model = classifier(False).double()
    nn.init.normal_(model.head.weight, std=1.0)  # type: ignore[arg-type]
    return model


def run_evaluate(data: dict[str, Tensor], batch: int, dist_: Dist, shared: bool = True) -> dict[str, float]:
    """`evaluate` on this process's share of the images (``shared``, as ``--dist_eval``), or on all of them."""
    model = eval_classifier()
    loader = build_eval_loader(
        TensorDataset(data["eval_images"], data["eval_labels"]),
        batch_size=batch,
        num_workers=0,
        pin_memory=False,
        rank=dist_.rank if shared else 0,
        world_size=dist_.world_size if shared else 1,
    )
    return evaluate(model, loader, shared=shared, dist=dist_)


def evaluation_data() -> dict[str, Tensor]:
    """EVAL_IMAGES images, the label of image i the class at place i mod CLASSES of its logits (computed here)."""
    g = torch.Generator().manual_seed(2)
    images = torch.randn(EVAL_IMAGES, 3, 32, 32, generator=g, dtype=torch.float64)
    with torch.no_grad():
        logits = eval_classifier().eval()(images)
    place = torch.arange(EVAL_IMAGES) % CLASSES
    labels = logits.argsort(dim=1, descending=True)[torch.arange(EVAL_IMAGES), place]
    return {"eval_images": images, "eval_labels": labels, "eval_logits": logits, "eval_place": place}


def test_dist_eval_equals_single_process_on_odd_count(runs: tuple[dict[str, Tensor], list[dict[str, Any]]]) -> None:
    data, results = runs
    # Nhãn của ảnh i là lớp đứng thứ (i mod 7) theo logit: top-1 đúng ở i = 0, 7 (2/9); top-5 đúng khi thứ
    # hạng < 5 (7/9). Kết quả mong đợi tính ở đây, không bởi evaluate.
    place = data["eval_place"]
    expected_acc1 = 100.0 * int((place == 0).sum()) / EVAL_IMAGES
    expected_acc5 = 100.0 * int((place < 5).sum()) / EVAL_IMAGES
    assert 0 < expected_acc1 < expected_acc5 < 100
    expected_loss = F.cross_entropy(data["eval_logits"], data["eval_labels"]).item()
    ranks = [result["evaluate"] for result in results]
    for i, batch in enumerate(EVAL_BATCHES):
        with one_thread():
            single = run_evaluate(data, batch, Dist())
        assert single["images"] == ranks[0][i]["images"] == EVAL_IMAGES
        assert single["acc1"] == expected_acc1 and single["acc5"] == expected_acc5
        assert single["loss"] == pytest.approx(expected_loss, rel=1e-6)  # logit float32 trong evaluate
        for rank in ranks:
            assert rank[i]["acc1"] == single["acc1"] and rank[i]["acc5"] == single["acc5"]
            assert rank[i]["loss"] == pytest.approx(single["loss"], rel=1e-12 if batch == 1 else 1e-6)
        assert ranks[0][i]["loss"] == ranks[1][i]["loss"]
        # Không --dist_eval: mỗi rank đánh giá mọi ảnh; đếm mỗi ảnh một lần, không nhân với số tiến trình.
        for result in results:
            whole = result["evaluate_all"][i]
            assert whole["images"] == EVAL_IMAGES
            assert (whole["acc1"], whole["acc5"], whole["loss"]) == (single["acc1"], single["acc5"], single["loss"])
