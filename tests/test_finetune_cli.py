"""`mae finetune` and `mae linprobe` as a user meets them: clear errors before any work, the official outputs,
and a resumed run that is bit-equal to an uninterrupted one.

- bad input (a class count or class folders that do not match, a missing val/, a --finetune file that is
  already fine-tuned or holds no encoder, an odd batch under mixup, --eval without --resume, an earlier run
  in --output_dir, an unknown --model) stops the command with exit code 1 and a message naming the problem
  and the fix, before an epoch starts or the output folder is made;
- a full pre-training checkpoint (encoder + decoder) is accepted and the dropped decoder is reported;
- log.txt has the official keys, the per-iteration learning rate averaged as written here; checkpoints hold
  the official entries (plus rng); checkpoint-best.pth holds the best epoch's weights, which `mae evaluate`
  scores at the log's best top-1; --eval --resume prints a checkpoint's accuracy without training;
- stopped after epoch 2 of 3 (Ctrl-C) and resumed, a run ends with the weights, optimizer state and log of the
  uninterrupted run, bit for bit (mixup, cutmix and RandAugment on: every random draw is restored).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import (
    TINY_CLASSIFIER_CONFIG,
    classification_argv,
    make_classification_data,
    make_image_folder,
    run_cli,
    run_quietly,
    tiny_pretrained,
)

from mae.classifier import VisionTransformer
from mae.train import finetune as finetune_module

OFFICIAL_LOG_KEYS = {"train_lr", "train_loss", "test_loss", "test_acc1", "test_acc5", "epoch", "n_parameters"}
CHECKPOINT_KEYS = {"model", "optimizer", "epoch", "scaler", "args", "rng"}
MIXUP = ("--mixup", "0.8", "--cutmix", "1.0")  # and RandAugment, random erasing: the defaults


@dataclass
class Workspace:
    data: Path  # train/ and val/, 3 classes
    pretrained: Path  # a `mae pretrain` checkpoint: encoder + decoder
    run: Path  # a 3-epoch `mae finetune` of it with mixup and cutmix
    stdout: str


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("finetune")
    data = make_classification_data(root / "data")
    pretrained = tiny_pretrained(data, root / "pre")
    code, out, err = run_quietly(
        *classification_argv("finetune", data, root / "run", *MIXUP, "--finetune", str(pretrained))
    )
    assert code == 0, err
    return Workspace(data, pretrained, root / "run", out)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)  # type: ignore[no-any-return]


def read_log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.txt").read_text().splitlines()]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an epoch starts."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(finetune_module, "train_one_epoch", refuse)


# ----------------------------------------------------------------------------------------- bad input


def val_with_an_extra_class(ws: Workspace, tmp: Path) -> tuple[list[str], Path]:
    data = tmp / "data"
    shutil.copytree(ws.data, data)
    make_image_folder(data / "val" / "class_9", classes=0, per_class=2)
    return [], data


def no_val(ws: Workspace, tmp: Path) -> tuple[list[str], Path]:
    data = tmp / "data"
    shutil.copytree(ws.data / "train", data / "train")
    return [], data


def decoder_only_file(ws: Workspace, tmp: Path) -> tuple[list[str], Path]:
    state = load(ws.pretrained)["model"]
    decoder = {k: v for k, v in state.items() if k.startswith("decoder_") or k == "mask_token"}
    torch.save({"model": decoder}, tmp / "decoder.pth")
    return ["--finetune", str(tmp / "decoder.pth")], ws.data


def earlier_run(ws: Workspace, tmp: Path) -> tuple[list[str], Path]:
    (tmp / "out").mkdir()
    shutil.copy(ws.run / "checkpoint-0.pth", tmp / "out" / "checkpoint-0.pth")
    return [], ws.data


# Each case: (make the input, whether the problem can only be seen by reading the data, what the message says).
BAD_INPUT = {
    "class count": (
        lambda ws, tmp: (["--nb_classes", "5"], ws.data),
        True,
        ["--nb_classes 5 does not match the data", "has 3 class folders", "Pass --nb_classes 3 or leave it out"],
    ),
    "val has a class train lacks": (
        val_with_an_extra_class,
        True,
        ["must have the same class folders", "only in train: -", "only in val: class_9"],
    ),
    "no val folder": (
        no_val,
        True,
        ["--data_path DATA/val", "/val is not a folder", "one sub-folder of images per class"],
    ),
    "fine-tuned file to --finetune": (
        lambda ws, tmp: (["--finetune", str(ws.run / "checkpoint-0.pth")], ws.data),
        False,
        ["checkpoint-0.pth: is already a fine-tuned classifier", "mae evaluate FILE", "--resume"],
    ),
    "file without an encoder": (
        decoder_only_file,
        False,
        ["decoder.pth: holds no pre-trained MAE encoder", "mae pretrain"],
    ),
    "odd batch with mixup": (
        lambda ws, tmp: (["--mixup", "0.8", "--batch_size", "3"], ws.data),
        False,
        ["--mixup/--cutmix mix pairs", "--batch_size must be even; got 3"],
    ),
    "eval without resume": (
        lambda ws, tmp: (["--eval"], ws.data),
        False,
        ["--eval evaluates the --resume checkpoint", "pass --resume FILE", "mae evaluate"],
    ),
    "earlier run": (
        earlier_run,
        False,
        ["already holds checkpoint-0.pth from an earlier run", "continue it with --resume"],
    ),
    "unknown model": (
        lambda ws, tmp: (["--model", "vit_tiny_patch16"], ws.data),
        False,
        ["unknown --model 'vit_tiny_patch16'", "valid: ", "vit_base_patch16", "vit_huge_patch14"],
    ),
}


@pytest.mark.parametrize("make, reads_data, says", list(BAD_INPUT.values()), ids=list(BAD_INPUT))
@pytest.mark.usefixtures("no_training")
def test_bad_input_is_refused_before_any_work(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    ws: Workspace,
    make: Any,
    reads_data: bool,
    says: list[str],
) -> None:
    more, data = make(ws, tmp_path)
    if not reads_data:  # refused from the flags and files alone, before the images are listed

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the data was read")

        monkeypatch.setattr(finetune_module, "build_classification_datasets", refuse)
    out_dir = tmp_path / "out"
    before = sorted(out_dir.iterdir()) if out_dir.exists() else None
    code, out, err = run_cli(capsys, *classification_argv("finetune", data, out_dir, *more))
    assert code == 1
    assert err.startswith("mae finetune: error: ") and err.count("\n") == 1, err
    for text in says:
        assert text in err, err
    assert out == ""  # nothing was set up (the summary is printed once the model is built)
    assert (sorted(out_dir.iterdir()) if out_dir.exists() else None) == before  # nothing written


# ----------------------------------------------------------------------------------------- a run's output


def test_a_full_pretrain_checkpoint_is_accepted_and_its_dropped_decoder_reported(ws: Workspace) -> None:
    state = load(ws.pretrained)["model"]
    decoder = [k for k in state if k.startswith("decoder_") or k == "mask_token"]
    assert "decoder_embed.weight" in state and len(decoder) > 10
    assert f"weights: the file's decoder ({len(decoder)} tensors) was not loaded" in ws.stdout
    assert "3 classes" in ws.stdout and "loss SoftTargetCrossEntropy, mixup/cutmix" in ws.stdout


def test_the_log_has_the_official_keys_and_the_per_iteration_lr(ws: Workspace) -> None:
    log = read_log(ws.run)
    assert [r["epoch"] for r in log] == [0, 1, 2]
    n_parameters = sum(v.numel() for v in load(ws.run / "checkpoint-0.pth")["model"].values())  # all trained
    for record in log:
        assert set(record) >= OFFICIAL_LOG_KEYS, record
        assert record["n_parameters"] == n_parameters
        assert 0 <= record["test_acc1"] <= record["test_acc5"] <= 100
        assert record["test_acc1"] * 12 / 100 == pytest.approx(round(record["test_acc1"] * 12 / 100))  # of 12 images
    # train_lr: the head's lr (scale 1) at epoch + step / 6, averaged over the 6 steps; lr = 1e-3 x 4 / 256,
    # 1 warmup epoch of 3, then half-cycle cosine to 1e-6.
    lr, steps = 1e-3 * 4 / 256, 6

    def at(t: float) -> float:
        return lr * t if t < 1 else 1e-6 + (lr - 1e-6) * 0.5 * (1 + math.cos(math.pi * (t - 1) / 2))

    for record in log:
        expected = sum(at(record["epoch"] + s / steps) for s in range(steps)) / steps
        assert record["train_lr"] == pytest.approx(expected, rel=1e-12)


def test_checkpoints_hold_the_official_entries(ws: Workspace) -> None:
    names = set(VisionTransformer(None, num_classes=3, **TINY_CLASSIFIER_CONFIG).state_dict())
    assert "fc_norm.weight" in names and "norm.weight" not in names  # global pooling, the official default
    for epoch in range(3):
        ckpt = load(ws.run / f"checkpoint-{epoch}.pth")
        assert set(ckpt) == CHECKPOINT_KEYS
        assert ckpt["epoch"] == epoch and set(ckpt["model"]) == names
        assert vars(ckpt["args"])["model"] == "vit_base_patch16" and vars(ckpt["args"])["nb_classes"] == 3
        assert {"lr_scale", "weight_decay", "params"} <= set(ckpt["optimizer"]["param_groups"][0])
        assert len(ckpt["optimizer"]["state"]) == len(names)  # AdamW moments for every parameter
        assert set(ckpt["rng"]) >= {"cpu", "python", "numpy"}  # every generator the augmentation draws from
    assert not torch.equal(
        load(ws.run / "checkpoint-0.pth")["model"]["head.weight"],
        load(ws.run / "checkpoint-2.pth")["model"]["head.weight"],
    )


def test_the_best_checkpoint_holds_the_best_epoch_and_evaluates_to_its_accuracy(
    capsys: pytest.CaptureFixture[str], ws: Workspace
) -> None:
    acc1 = [r["test_acc1"] for r in read_log(ws.run)]
    best_epoch = acc1.index(max(acc1))  # the first epoch that reached the best top-1
    best = load(ws.run / finetune_module.BEST_NAME)
    assert best["epoch"] == best_epoch and best["acc1"] == max(acc1)
    weights = load(ws.run / f"checkpoint-{best_epoch}.pth")["model"]
    assert set(best["model"]) == set(weights)
    assert all(torch.equal(best["model"][k], weights[k]) for k in weights)
    code, out, err = run_cli(
        capsys, "evaluate", str(ws.run / finetune_module.BEST_NAME), "--data_path", str(ws.data), "--json",
        "--num_workers", "0", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["acc1"] == max(acc1) and result["images"] == 12
    assert result["loss"] == pytest.approx(read_log(ws.run)[best_epoch]["test_loss"], rel=1e-6)


@pytest.mark.usefixtures("no_training")
def test_eval_resume_prints_the_accuracy_without_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ws: Workspace
) -> None:
    last = read_log(ws.run)[2]
    out_dir = tmp_path / "out"
    argv = classification_argv("finetune", ws.data, out_dir, "--eval", "--resume", str(ws.run / "checkpoint-2.pth"))
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert (
        f"checkpoint-2.pth on 12 images of {ws.data}/val: top-1 {last['test_acc1']:.2f}%, "
        f"top-5 {last['test_acc5']:.2f}%, loss {last['test_loss']:.4f}"
    ) in out
    assert not out_dir.exists()


# ----------------------------------------------------------------------------------------- resume


def interrupted_at(monkeypatch: pytest.MonkeyPatch, stop: int) -> None:
    """Ctrl-C as epoch ``stop`` starts."""
    real = finetune_module.train_one_epoch

    def train_one_epoch(*args: Any, **kwargs: Any) -> dict[str, float]:
        if args[6] == stop:  # (model, criterion, loader, optimizer, scaler, schedule, epoch, ...)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "train_one_epoch", train_one_epoch)


def assert_same_tensors(a: Any, b: Any, where: str) -> None:
    """``a`` and ``b`` equal, tensors bit for bit (nested dicts and lists)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def check_resume_is_bit_equal(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    straight: Path,
    argv: list[str],
    resumed: Path,
) -> None:
    """``argv`` (writing to ``resumed``) stopped at epoch 2 of 3 then resumed ends as ``straight`` did."""
    with monkeypatch.context() as m:
        interrupted_at(m, 2)
        code, _, err = run_cli(capsys, *argv)
    assert code == 130 and f"the last checkpoint is {resumed / 'checkpoint-1.pth'}" in err, err
    assert not (resumed / "checkpoint-2.pth").exists()
    code, out, err = run_cli(capsys, *argv, "--resume", str(resumed))
    assert code == 0, err
    assert "resume: continuing at epoch 2 with the saved optimizer state" in out
    a, b = load(straight / "checkpoint-2.pth"), load(resumed / "checkpoint-2.pth")
    for key in ("model", "optimizer", "scaler", "epoch", "rng"):
        assert_same_tensors(a[key], b[key], key)
    for x, y in zip(read_log(straight), read_log(resumed), strict=True):
        for key in ("epoch", "train_lr", "train_loss", "test_loss", "test_acc1", "test_acc5"):
            assert x[key] == y[key], (x["epoch"], key)


def test_a_resumed_finetune_is_bit_equal_to_an_uninterrupted_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ws: Workspace
) -> None:
    argv = classification_argv("finetune", ws.data, tmp_path / "run", *MIXUP, "--finetune", str(ws.pretrained))
    check_resume_is_bit_equal(capsys, monkeypatch, ws.run, argv, tmp_path / "run")


def test_a_resumed_linprobe_is_bit_equal_to_an_uninterrupted_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ws: Workspace
) -> None:
    straight = tmp_path / "straight"
    argv = classification_argv("linprobe", ws.data, straight, "--finetune", str(ws.pretrained))
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    argv = classification_argv("linprobe", ws.data, tmp_path / "run", "--finetune", str(ws.pretrained))
    check_resume_is_bit_equal(capsys, monkeypatch, straight, argv, tmp_path / "run")


def test_the_best_checkpoint_is_kept_across_a_resume(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ws: Workspace
) -> None:
    """Validation top-1 made 50, 80, 60 % over the epochs: checkpoint-best.pth is epoch 1's, also when the run
    is stopped after epoch 1 and resumed (the best so far is read back from log.txt)."""
    scripted = iter([50.0, 80.0, 60.0])
    real = finetune_module.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> dict[str, float]:
        return real(*args, **kwargs) | {"acc1": next(scripted)}

    monkeypatch.setattr(finetune_module, "evaluate", evaluate)
    run = tmp_path / "run"
    argv = classification_argv("finetune", ws.data, run, "--finetune", str(ws.pretrained))
    with monkeypatch.context() as m:
        interrupted_at(m, 2)
        assert run_cli(capsys, *argv)[0] == 130
    code, out, err = run_cli(capsys, *argv, "--resume", str(run))
    assert code == 0, err
    assert [r["test_acc1"] for r in read_log(run)] == [50.0, 80.0, 60.0]
    assert "epoch 3/3: " in out and "(best 80.00%)" in out and "best so far" not in out
    best = load(run / finetune_module.BEST_NAME)
    assert best["epoch"] == 1 and best["acc1"] == 80.0
    assert_same_tensors(best["model"], load(run / "checkpoint-1.pth")["model"], "model")
    with pytest.raises(AssertionError):  # the last epoch's weights differ: the check above can tell them apart
        assert_same_tensors(best["model"], load(run / "checkpoint-2.pth")["model"], "model")
