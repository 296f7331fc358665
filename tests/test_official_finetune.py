"""The official fine-tuning code (facebookresearch/mae `main_finetune.py`, `main_linprobe.py`,
`engine_finetune.py`), run here under `reference.official`'s shims with OUR classifier as its model.

Skipped, with the reason, when $MAE_OFFICIAL_REPO is unset. These are smoke tests of the runners: each
program trains a tiny classifier for one epoch on a tiny synthetic ImageFolder (DATA/train, DATA/val) and
writes the official checkpoint and log; `--eval` returns; the engine's functions train and evaluate our
model directly. The parity tests of `mae finetune` / `mae linprobe` against them build on the fixtures here.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import io
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import TINY_CLASSIFIER_CONFIG, make_classification_data

from mae.classifier import VisionTransformer
from mae.train.lars import LARS
from reference import official

pytestmark = pytest.mark.skipif(official.skip_reason() is not None, reason=str(official.skip_reason()))

CLASSES = 3
TRAIN_IMAGES, VAL_IMAGES = 8 * CLASSES, 4 * CLASSES  # make_classification_data
# Fine-tuning: the tiny encoder (32 px, patch 8) as `--model vit_base_patch16` with these MAEConfig fields.
FINETUNE_MODEL: dict[str, Any] = dict(TINY_CLASSIFIER_CONFIG)
# Linear probing: the official transforms are fixed at 224 px; patch 32 keeps it to 49 tokens.
LINPROBE_MODEL: dict[str, Any] = {**TINY_CLASSIFIER_CONFIG, "img_size": 224, "patch_size": 32}
COMMON = ["--model", "vit_base_patch16", "--batch_size", "4", "--nb_classes", str(CLASSES)]
COMMON += ["--device", "cpu", "--num_workers", "0", "--no_pin_mem", "--seed", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA/train (3 classes x 8 images of 40 px) and DATA/val (3 x 4), as the official scripts read them."""
    return make_classification_data(tmp_path_factory.mktemp("data"), classes=CLASSES)


def quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str]:
    """``fn`` on one thread with its console output (and the old code's warnings) put aside: (result, output).

    One thread: on a busy machine, threads waiting on each other made these tiny runs 20 times slower.
    """
    out, threads = io.StringIO(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)
    return result, out.getvalue()


def run_official_finetune(data: Path, output: Path, *flags: str, model: dict[str, Any] | None = None) -> str:
    """The official `main_finetune.py` on ``data`` (32 px) writing to ``output``: its console output."""
    argv = ["--data_path", str(data), *COMMON, "--input_size", "32", "--output_dir", str(output)]
    _, text = quietly(
        official.run_official_finetune, [*argv, "--log_dir", str(output), *flags], model_kwargs=model or FINETUNE_MODEL
    )
    return str(text)


def run_official_linprobe(data: Path, output: Path, *flags: str, model: dict[str, Any] | None = None) -> str:
    """The official `main_linprobe.py` on ``data`` (224 px crops) writing to ``output``: its console output."""
    argv = ["--data_path", str(data), *COMMON, "--output_dir", str(output), "--log_dir", str(output), *flags]
    _, text = quietly(official.run_official_linprobe, argv, model_kwargs=model or LINPROBE_MODEL)
    return str(text)


def load(path: Path) -> dict[str, Any]:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def log_lines(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (output / "log.txt").read_text().splitlines()]


def test_finetune_runs_our_classifier_for_one_epoch(data: Path, tmp_path: Path) -> None:
    before = (builtins.print, torch.backends.cudnn.benchmark)
    run_official_finetune(data, tmp_path, "--epochs", "1", "--warmup_epochs", "1", "--mixup", "0.8", "--cutmix", "1.0")
    saved = load(tmp_path / "checkpoint-0.pth")
    assert list(saved) == ["model", "optimizer", "epoch", "scaler", "args"]
    ours = VisionTransformer(None, num_classes=CLASSES, **FINETUNE_MODEL)  # the model the factory was replaced by
    assert {k: v.shape for k, v in saved["model"].items()} == {k: v.shape for k, v in ours.state_dict().items()}
    steps = {int(state["step"]) for state in saved["optimizer"]["state"].values()}
    assert steps == {TRAIN_IMAGES // 4}  # AdamW stepped once per batch of the epoch
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    (line,) = log_lines(tmp_path)
    assert line["epoch"] == 0 and 0 <= line["test_acc1"] <= 100 and line["train_loss"] > 0
    # The shims are undone and the checkout's modules are gone.
    assert (builtins.print, torch.backends.cudnn.benchmark) == before
    assert not any(name in sys.modules for name in ("util", "models_vit", "main_finetune", "engine_finetune"))


def test_finetune_eval_returns_instead_of_exiting(data: Path, tmp_path: Path) -> None:
    run_official_finetune(data, tmp_path, "--epochs", "1", "--warmup_epochs", "0", "--smoothing", "0")
    text = run_official_finetune(data, tmp_path / "eval", "--eval", "--resume", str(tmp_path / "checkpoint-0.pth"))
    assert f"Accuracy of the network on the {VAL_IMAGES} test images" in text
    assert not (tmp_path / "eval" / "log.txt").exists()


def test_linprobe_runs_our_classifier_with_lars(data: Path, tmp_path: Path) -> None:
    run_official_linprobe(data, tmp_path, "--epochs", "1", "--warmup_epochs", "1")
    saved = load(tmp_path / "checkpoint-0.pth")
    head = {k for k in saved["model"] if k.startswith("head.")}
    assert head == {"head.0.running_mean", "head.0.running_var", "head.0.num_batches_tracked", "head.1.weight"} | {
        "head.1.bias"
    }
    assert int(saved["model"]["head.0.num_batches_tracked"]) == TRAIN_IMAGES // 4
    (line,) = log_lines(tmp_path)
    assert line["n_parameters"] == (FINETUNE_MODEL["embed_dim"] + 1) * CLASSES  # only the linear head is trained
    # The official LARS state loads into ours (the same keys).
    linear = torch.nn.Linear(FINETUNE_MODEL["embed_dim"], CLASSES)
    ours = LARS(linear.parameters())
    ours.load_state_dict(saved["optimizer"])
    assert torch.equal(ours.state[linear.weight]["mu"], saved["optimizer"]["state"][0]["mu"])


def test_runner_refusals(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        official.run_official_finetune([], model_kwargs={"num_classes": 5})
    with pytest.raises(ValueError, match="vit_small_patch16"):
        run_official_finetune(data, tmp_path, "--model", "vit_small_patch16")
    with pytest.raises(ValueError, match="unknown configuration field"):
        run_official_linprobe(data, tmp_path, model={"embed_dims": 32})
    with pytest.raises(SystemExit) as stop:  # argparse's exit 2 is not swallowed, only exit(0)
        run_official_finetune(data, tmp_path, "--no_such_flag")
    assert stop.value.code == 2
    assert not (tmp_path / "checkpoint-0.pth").exists()
    with pytest.raises(SystemExit) as stop:  # the engine's sys.exit(1) on a non-finite loss goes on up too
        run_official_finetune(data, tmp_path, "--epochs", "1", "--warmup_epochs", "0", "--lr", "1e30")
    assert stop.value.code == 1


def test_engine_trains_and_evaluates_our_classifier() -> None:
    found = official.official_finetune_engine()
    torch.manual_seed(0)
    model = VisionTransformer(None, num_classes=CLASSES, **FINETUNE_MODEL)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, CLASSES, (4,))) for _ in range(4)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = argparse.Namespace(accum_iter=2, lr=1e-3, min_lr=1e-6, warmup_epochs=1, epochs=2)
    with official.training_shims():
        stats, _ = quietly(
            found.engine.train_one_epoch, model, torch.nn.CrossEntropyLoss(), batches, optimizer,
            torch.device("cpu"), 1, found.misc.NativeScalerWithGradNormCount(), None, None, log_writer=None, args=args,
        )  # fmt: skip
        results, _ = quietly(found.engine.evaluate, batches, model, torch.device("cpu"))
    assert set(stats) == {"lr", "loss"} and stats["loss"] > 0
    # The last lr set: step 2 of 4 in epoch 1 of 2, on the cosine after 1 warmup epoch.
    assert optimizer.param_groups[0]["lr"] == found.lr_sched.adjust_learning_rate(
        torch.optim.SGD([torch.zeros(1)], lr=0.0), 1 + 2 / 4, args
    )
    assert int(optimizer.state[model.get_parameter("head.weight")]["step"]) == 2  # 4 batches, accumulated by 2
    assert not torch.equal(model.state_dict()["head.weight"], start["head.weight"])
    assert set(results) == {"loss", "acc1", "acc5"} and results["acc5"] == 100.0  # 3 classes: top-5 is everything


# --- parity: `mae finetune` / `mae linprobe` against the official scripts, bit for bit ----------------------


def _pretrained(data: Path, output: Path, model: dict[str, Any]) -> Path:
    """A 1-epoch `mae pretrain` of a tiny MAE with the classifier's encoder sizes (and a small decoder)."""
    from train_helpers import run_quietly

    sizes = [f"{k}={v}" for k, v in model.items() if k != "img_size"]
    decoder = ["decoder_embed_dim=16", "decoder_depth=1", "decoder_num_heads=2"]
    code, _, err = run_quietly(
        "pretrain", "--data_path", str(data / "train"), "--model", "mae_vit_base_patch16", "--model_args", *sizes,
        *decoder, "--input_size", str(model["img_size"]), "--num_workers", "0", "--device", "cpu",
        "--batch_size", "4", "--epochs", "1", "--warmup_epochs", "0", "--output_dir", str(output),
    )  # fmt: skip
    assert code == 0, err
    return output / "checkpoint-0.pth"


def _ours(command: str, data: Path, output: Path, model: dict[str, Any], *flags: str) -> None:
    from train_helpers import run_quietly

    sizes = [f"{k}={v}" for k, v in model.items() if k != "img_size"]
    code, _, err = run_quietly(
        command, "--data_path", str(data), *COMMON, "--model_args", *sizes, "--input_size", str(model["img_size"]),
        "--output_dir", str(output), *flags,
    )  # fmt: skip
    assert code == 0, err


def _assert_same_run(theirs: Path, ours: Path) -> None:
    """Every model and optimizer tensor bit-equal, the same groups, the same log figures."""
    a, b = load(theirs / "checkpoint-0.pth"), load(ours / "checkpoint-0.pth")
    assert list(a["model"]) == list(b["model"])
    unequal = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not unequal, f"{len(unequal)} of {len(a['model'])} tensors differ, e.g. {unequal[:3]}"
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys() and state_a
    for i in state_a:
        assert state_a[i].keys() == state_b[i].keys()
        for key, value in state_a[i].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[i][key])), (i, key)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in a["optimizer"]["param_groups"]]
    assert groups == [{k: v for k, v in g.items() if k != "params"} for g in b["optimizer"]["param_groups"]]
    assert [g["params"] for g in a["optimizer"]["param_groups"]] == [
        g["params"] for g in b["optimizer"]["param_groups"]
    ]
    (line_a,), (line_b,) = log_lines(theirs), log_lines(ours)
    for key in ("train_lr", "train_loss", "test_acc1", "test_acc5", "epoch", "n_parameters"):
        assert line_a[key] == line_b[key], key
    # The evaluation loss: the official averages the batches' means, ours the images' losses (the same
    # when the batch size divides the validation set, up to the order of the float sums).
    assert line_b["test_loss"] == pytest.approx(line_a["test_loss"], rel=1e-6)


def test_mae_finetune_equals_the_official_script(data: Path, tmp_path: Path) -> None:
    """One epoch of `main_finetune.py` and of `mae finetune` from the same `mae pretrain` checkpoint, with
    the official augmentation (RandAugment, random erasing), Mixup + CutMix, label smoothing, layer decay
    and `--accum_iter 2`: every weight and AdamW moment bit-equal, and the same log."""
    import random

    pre = _pretrained(data, tmp_path / "pre", FINETUNE_MODEL)
    flags = ["--finetune", str(pre), "--epochs", "1", "--warmup_epochs", "1", "--accum_iter", "2"]
    flags += ["--mixup", "0.8", "--cutmix", "1.0", "--layer_decay", "0.65", "--drop_path", "0.1"]
    random.seed(0)  # timm's RandAugment draws from Python's generator, which the official script leaves unseeded
    run_official_finetune(data, tmp_path / "official", *flags)
    _ours("finetune", data, tmp_path / "ours", FINETUNE_MODEL, *flags)
    _assert_same_run(tmp_path / "official", tmp_path / "ours")


def test_mae_linprobe_equals_the_official_script(data: Path, tmp_path: Path) -> None:
    """One epoch of `main_linprobe.py` and of `mae linprobe`: the frozen encoder, the BatchNorm + linear head
    (running statistics included), LARS's momentum buffers, the crops; bit-equal."""
    pre = _pretrained(data, tmp_path / "pre", LINPROBE_MODEL)
    flags = ["--finetune", str(pre), "--epochs", "1", "--warmup_epochs", "1", "--accum_iter", "2"]
    run_official_linprobe(data, tmp_path / "official", *flags)
    _ours("linprobe", data, tmp_path / "ours", LINPROBE_MODEL, *flags)
    _assert_same_run(tmp_path / "official", tmp_path / "ours")


def test_evaluation_equals_the_official_evaluate(data: Path) -> None:
    """The official `engine_finetune.evaluate` and ours on the same model and folder: the same top-1 and top-5,
    the loss within float rounding (batches of 4 divide the 12 images); and with a partial last batch."""
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from mae.train.augment import eval_transform
    from mae.train.data import build_eval_loader, build_image_folder
    from mae.train.engine_finetune import evaluate
    from mae.train.normalize import DeviceNormalize

    found = official.official_finetune_engine()
    torch.manual_seed(0)
    model = VisionTransformer(None, num_classes=CLASSES, **FINETUNE_MODEL)
    with torch.no_grad():
        model.get_parameter("head.weight").normal_(0, 0.5)  # logits far from uniform: accuracies vary
    dataset = build_image_folder(data / "val", eval_transform(32))
    for batch in (4, 5):
        loader = build_eval_loader(dataset, batch_size=batch, num_workers=0, pin_memory=False)
        normalize = DeviceNormalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)  # our loader yields uint8
        normalised = [(normalize(images), labels) for images, labels in loader]  # the official loader's batches
        with official.training_shims():
            theirs, _ = quietly(found.engine.evaluate, normalised, model, torch.device("cpu"))
        ours = evaluate(model, loader, shared=False, normalize=normalize)
        assert (ours["acc1"], ours["acc5"]) == (pytest.approx(theirs["acc1"]), pytest.approx(theirs["acc5"]))
        assert ours["images"] == VAL_IMAGES
        if batch == 4:
            assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-6)
