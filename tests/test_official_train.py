"""Step parity of `mae pretrain` with the official `main_pretrain.py` (facebookresearch/mae), run here.

Skipped, with the reason, when $MAE_OFFICIAL_REPO is unset. With it set, both programs train the same tiny
MAE (32x32 images, patch 8) for one epoch from the same seed on the same synthetic ImageFolder, on the
CPU in float32, with gradient accumulation (accum_iter 2); their `checkpoint-0.pth` are then the same
bit for bit: every model and optimizer tensor (torch.equal), the same keys in the same order, the same
optimizer hyper-parameters (the lr last set by the schedule included) and epoch; the scaler entry is the
documented departure (ours a fresh enabled scaler's state, the official's `{}` without CUDA). Checked for both
targets (pixels, --norm_pix_loss) and in the cosine branch (--warmup_epochs 0).

Either program resumes the other's checkpoint: the official script continues from ours and ours from
the official's (noting that the file has no random-generator state). Each resumed run starts training
from exactly the file's weights and optimizer state and writes a finite `checkpoint-1.pth`. Epoch 1 itself
is not compared: the official single-process run never calls `sampler.set_epoch`, so it sees epoch 0's
order again, while ours re-shuffles (a documented departure).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from train_helpers import make_image_folder

import mae
import mae.cli
from mae.train.optim import param_groups_weight_decay
from reference import official

pytestmark = pytest.mark.skipif(official.skip_reason() is not None, reason=str(official.skip_reason()))

# Một MAE tí hon; mlp_ratio 4 là mặc định của cả hai bên.
TINY: dict[str, Any] = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 4,
    "decoder_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
MODEL_ARGS = [f"{k}={v}" for k, v in TINY.items() if k != "img_size"]
COMMON = ["--model", "mae_vit_base_patch16", "--input_size", "32", "--batch_size", "4", "--accum_iter", "2"]
COMMON += ["--device", "cpu", "--num_workers", "0", "--seed", "0"]
STEPS_PER_EPOCH = 24 // 4 // 2  # 2 folders x 12 images, batches of 4, 2 batches per optimizer step


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA/train/class_k/img_i.png: 2 classes x 12 random 40x40 RGB images (the official reads DATA/train)."""
    root = tmp_path_factory.mktemp("data")
    make_image_folder(root / "train")
    return root


def quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str]:
    """Run ``fn`` with its console output (and the old code's deprecation warnings) put aside: (result, output)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fn(*args, **kwargs)
    return result, out.getvalue()


def run_official(data: Path, output: Path, *flags: str) -> str:
    _, text = quietly(
        official.run_official_pretrain,
        ["--data_path", str(data), *COMMON, "--output_dir", str(output), "--log_dir", str(output), *flags],
        model_kwargs=TINY,
    )
    return str(text)


def run_ours(data: Path, output: Path, *flags: str) -> str:
    argv = ["pretrain", "--data_path", str(data), *COMMON, "--output_dir", str(output), *flags]
    code, text = quietly(mae.cli.main, [*argv, "--model_args", *MODEL_ARGS])
    assert code == 0, text
    return str(text)


def load(path: Path) -> dict[str, Any]:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pair(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, Path]]:
    """Runs both programs for one epoch with the given flags (once per flag set): (official dir, our dir)."""
    done: dict[tuple[str, ...], tuple[Path, Path]] = {}

    def run(*flags: str) -> tuple[Path, Path]:
        if flags not in done:
            root = tmp_path_factory.mktemp("pair")
            run_official(data, root / "official", "--epochs", "1", *flags)
            run_ours(data, root / "ours", "--epochs", "1", *flags)
            done[flags] = (root / "official", root / "ours")
        return done[flags]

    return run


def assert_same_tensors(ours: dict[Any, Any], theirs: dict[Any, Any], where: str) -> None:
    assert list(ours) == list(theirs), where
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), f"{where}: {key}"


@pytest.mark.parametrize(
    "flags",
    [("--warmup_epochs", "1"), ("--warmup_epochs", "1", "--norm_pix_loss"), ("--warmup_epochs", "0")],
    ids=["pixels", "norm_pix", "cosine"],
)
def test_checkpoint_equals_official_bit_for_bit(pair: Callable[..., tuple[Path, Path]], flags: tuple[str, ...]) -> None:
    theirs_dir, ours_dir = pair(*flags)
    theirs, ours = load(theirs_dir / "checkpoint-0.pth"), load(ours_dir / "checkpoint-0.pth")
    assert list(ours) == [*theirs, "rng"]  # các mục của bản gốc theo đúng thứ tự, thêm trạng thái bộ sinh số ngẫu nhiên
    assert_same_tensors(ours["model"], theirs["model"], "model")
    opt_ours, opt_theirs = ours["optimizer"], theirs["optimizer"]
    assert list(opt_ours) == list(opt_theirs) == ["state", "param_groups"]
    assert list(opt_ours["state"]) == list(opt_theirs["state"])
    for index, state in opt_theirs["state"].items():
        assert_same_tensors(opt_ours["state"][index], state, f"optimizer state {index}")
        assert int(state["step"]) == STEPS_PER_EPOCH
    assert opt_ours["param_groups"] == opt_theirs["param_groups"]  # lr, betas, eps, weight_decay, params, ...
    assert opt_theirs["param_groups"][1]["lr"] > 0
    assert ours["epoch"] == theirs["epoch"] == 0
    # Khác bản gốc có chủ ý: scaler tắt (float32) của ta lưu trạng thái của một scaler bật còn mới, không phải {}
    # mà resume của bản gốc trên GPU từ chối (tests/test_checkpoint_scaler.py); scaler CUDA của bản gốc tắt ở đây.
    fresh = torch.amp.GradScaler("cpu", enabled=True).state_dict()
    assert ours["scaler"] == fresh
    if not torch.cuda.is_available():
        assert theirs["scaler"] == {}
    # Phép so sánh có nghĩa: trọng số đã rời điểm khởi tạo (seed 0) của cả hai.
    torch.manual_seed(0)
    initial = mae.create_model("mae_vit_base_patch16", **TINY)
    assert not torch.equal(initial.state_dict()["blocks.0.attn.qkv.weight"], ours["model"]["blocks.0.attn.qkv.weight"])


@contextlib.contextmanager
def weights_at_first_step(into: list[dict[str, torch.Tensor]]) -> Iterator[None]:
    """Record, by name, the parameters any optimizer holds when its first step begins (the weights it resumed from).

    The optimizer's parameters are in the groups' order [no-decay, decay], which both programs share
    (`tests/test_train_parity.py`); the names come from the same groups of a fresh model.
    """
    names = group_names()

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not into:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            into.append({n: p.detach().clone() for n, p in zip(names, params, strict=True)})

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def group_names() -> list[str]:
    """The parameter names in the optimizer's order: the [no-decay, decay] groups of the tiny model."""
    model = mae.create_model("mae_vit_base_patch16", **TINY)
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in param_groups_weight_decay(model, 0.05) for p in group["params"]]


def assert_resumed_from(file: Path, first: list[dict[str, torch.Tensor]], output: Path) -> None:
    """The run began from ``file``'s weights and optimizer state and wrote a finite checkpoint-1.pth."""
    source = load(file)
    assert len(first) == 1
    for name, value in first[0].items():
        assert torch.equal(value, source["model"][name]), name
    saved = load(output / "checkpoint-1.pth")
    assert saved["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    steps = {int(s["step"]) for s in saved["optimizer"]["state"].values()}
    assert steps == {2 * STEPS_PER_EPOCH}  # trạng thái AdamW được nạp rồi đi tiếp, không bắt đầu lại từ 0


def test_each_program_resumes_the_others_checkpoint(pair: Callable[..., tuple[Path, Path]], data: Path) -> None:
    theirs_dir, ours_dir = pair("--warmup_epochs", "1")
    out = theirs_dir.parent

    first: list[dict[str, torch.Tensor]] = []
    with weights_at_first_step(first):
        run_official(data, out / "official-from-ours", "--epochs", "2", "--resume", str(ours_dir / "checkpoint-0.pth"))
    assert_resumed_from(ours_dir / "checkpoint-0.pth", first, out / "official-from-ours")

    first = []
    with weights_at_first_step(first):
        text = run_ours(
            data, out / "ours-from-official", "--epochs", "2", "--resume", str(theirs_dir / "checkpoint-0.pth")
        )
    assert "no random-generator state" in text
    assert "continuing at epoch 1" in text
    assert_resumed_from(theirs_dir / "checkpoint-0.pth", first, out / "ours-from-official")
