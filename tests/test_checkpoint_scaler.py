"""The ``scaler`` entry of our checkpoints: something the official resume accepts (issue 16).

The official ``util/misc.load_model`` loads the entry into its *enabled* CUDA ``GradScaler``, which refuses
``{}``, the state of a disabled scaler (ours in float32 and bfloat16). So every checkpoint carries a
scaler state:

- a float32 and a bfloat16 checkpoint of a tiny ``mae pretrain`` run hold the state of a fresh enabled
  scaler (torch's defaults), and load, as the official ``misc.load_model`` loads them (its behaviour
  written out here), into an enabled scaler, which then equals a fresh one (a float16 resume starts from
  the default scale); a disabled scaler ignores it;
- our own ``--resume`` of those files still ends bit for bit where the uninterrupted run ends;
- with ``MAE_OFFICIAL_REPO`` set, the official ``misc.load_model`` itself resumes them into an enabled
  scaler (the official ``NativeScalerWithGradNormCount`` where CUDA is, else ``torch.amp.GradScaler("cpu")``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import TINY_ARGS, TINY_CONFIG, assert_same, make_image_folder, run_quietly
from train_helpers import load_checkpoint as load

import mae
from mae.train.optim import build_adamw
from reference import official

DTYPES = ["float32", "bfloat16"]
STEPS = 4  # 16 images in batches of 4


def fresh_state() -> dict[str, Any]:
    """What an enabled scaler that has not stepped yet saves (torch's constructor defaults)."""
    return torch.amp.GradScaler("cpu", enabled=True).state_dict()


def pretrain_argv(data: Path, output: Path, dtype: str, *more: str) -> list[str]:
    """A tiny 2-epoch ``mae pretrain`` saving every epoch, in ``dtype``."""
    return [
        "pretrain", "--data_path", str(data), *TINY_ARGS, "--batch_size", "4", "--epochs", "2",
        "--warmup_epochs", "1", "--save_every", "1", "--dtype", dtype, "--output_dir", str(output), *more,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """For each dtype: the folder of a 2-epoch run, and that of a run resumed from its ``checkpoint-0.pth``."""
    root = tmp_path_factory.mktemp("scaler")
    data = make_image_folder(root / "data", classes=2, per_class=8)
    folders = {}
    for dtype in DTYPES:
        straight, cut = root / f"{dtype}-straight", root / f"{dtype}-cut"
        code, _, err = run_quietly(*pretrain_argv(data, straight, dtype))
        assert code == 0, err
        cut.mkdir()
        shutil.copy(straight / "checkpoint-0.pth", cut / "checkpoint-0.pth")  # như một lần chạy bị dừng sau epoch 0
        code, out, err = run_quietly(*pretrain_argv(data, cut, dtype, "--resume", str(cut)))
        assert code == 0, err
        assert "continuing at epoch 1" in out
        folders[dtype] = (straight, cut)
    return folders


def fresh_model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The run's model and optimizer before any training (what a resuming script builds)."""
    model = mae.create_model("mae_vit_base_patch16", **TINY_CONFIG)
    return model, build_adamw(model, lr=1e-3, weight_decay=0.05)


def load_like_official(path: Path, model: torch.nn.Module, optimizer: Any, scaler: Any) -> argparse.Namespace:
    """The official ``misc.load_model``'s behaviour, written out: the weights (strict, its default), then, when
    the file has an optimizer and an epoch (and this is not ``--eval``), the optimizer, the next epoch and,
    when the file has one, the scaler's state, given to the scaler without a check."""
    args = argparse.Namespace(resume=str(path), start_epoch=0, eval=False)
    checkpoint = load(path)
    model.load_state_dict(checkpoint["model"])
    if "optimizer" in checkpoint and "epoch" in checkpoint and not args.eval:
        optimizer.load_state_dict(checkpoint["optimizer"])
        args.start_epoch = checkpoint["epoch"] + 1
        if "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
    return args


@pytest.mark.parametrize("dtype", DTYPES)
def test_checkpoint_holds_a_fresh_enabled_scaler_state(runs: dict[str, tuple[Path, Path]], dtype: str) -> None:
    straight, _ = runs[dtype]
    for epoch in (0, 1):
        ckpt = load(straight / f"checkpoint-{epoch}.pth")
        assert ckpt["args"].dtype == dtype
        assert ckpt["scaler"] == fresh_state() != {}
        assert ckpt["scaler"]["scale"] == 65536.0  # giá trị mặc định, đọc từ torch ở trên


@pytest.mark.parametrize("dtype", DTYPES)
def test_official_resume_logic_loads_into_an_enabled_scaler(runs: dict[str, tuple[Path, Path]], dtype: str) -> None:
    path = runs[dtype][0] / "checkpoint-0.pth"
    model, optimizer = fresh_model_and_optimizer()
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    args = load_like_official(path, model, optimizer, scaler)  # {} thì sẽ lỗi "The source state dict is empty"
    assert args.start_epoch == 1
    assert scaler.state_dict() == fresh_state()
    assert scaler.get_scale() == 65536.0  # resume float16 từ tệp này bắt đầu ở scale mặc định
    assert {int(s["step"]) for s in optimizer.state_dict()["state"].values()} == {STEPS}
    # Scaler tắt (resume float32 và bfloat16 của ta) bỏ qua trạng thái này.
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    disabled.load_state_dict(load(path)["scaler"])
    assert not disabled.is_enabled() and disabled.state_dict() == {}


@pytest.mark.parametrize("dtype", DTYPES)
def test_our_resume_is_still_bit_for_bit(runs: dict[str, tuple[Path, Path]], dtype: str) -> None:
    straight, cut = runs[dtype]
    a, b = load(straight / "checkpoint-1.pth"), load(cut / "checkpoint-1.pth")
    for entry in ("model", "optimizer", "scaler", "epoch", "rng"):
        assert_same(a[entry], b[entry], entry)
    assert b["scaler"] == fresh_state()


@pytest.mark.parametrize("dtype", DTYPES)
def test_official_load_model_resumes_ours(runs: dict[str, tuple[Path, Path]], dtype: str) -> None:
    reason = official.skip_reason()
    if reason:
        pytest.skip(reason)
    _, misc = official.official_engine()
    path = runs[dtype][0] / "checkpoint-0.pth"
    model, optimizer = fresh_model_and_optimizer()
    with official.training_shims():
        # Bộ scaler của bản gốc bật trên CUDA; không có CUDA thì một GradScaler bật trên CPU đóng vai nó.
        target = misc.NativeScalerWithGradNormCount() if torch.cuda.is_available() else torch.amp.GradScaler("cpu")
        args = argparse.Namespace(resume=str(path), start_epoch=0, eval=False)
        misc.load_model(args, model, optimizer, target)
    assert args.start_epoch == 1
    assert target.state_dict() == fresh_state()
    assert {int(s["step"]) for s in optimizer.state_dict()["state"].values()} == {STEPS}
