"""Helpers shared by the `mae pretrain` tests: a tiny synthetic image folder and the argv of a tiny model."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import mae.cli

# A tiny MAE (32x32 images, 8x8 patches, 16 patches): a whole run takes well under a second.
TINY_MODEL_ARGS = [
    "embed_dim=32",
    "depth=2",
    "num_heads=4",
    "decoder_embed_dim=16",
    "decoder_depth=1",
    "decoder_num_heads=2",
    "patch_size=8",
]
# The same model as keyword arguments of `mae.create_model("mae_vit_base_patch16", ...)`.
TINY_CONFIG: dict[str, Any] = {
    "img_size": 32,
    **{name: int(value) for name, value in (item.split("=") for item in TINY_MODEL_ARGS)},
}
TINY_ARGS = [
    "--model",
    "mae_vit_base_patch16",
    "--model_args",
    *TINY_MODEL_ARGS,
    "--input_size",
    "32",
    "--num_workers",
    "0",
    "--device",
    "cpu",
    "--log_dir",
    "",  # no TensorBoard events: the output folder holds only the run's files (test_log_sinks.py passes its own)
]


def make_image_folder(root: Path, classes: int = 2, per_class: int = 12, size: int = 40, seed: int = 0) -> Path:
    """``root/class_k/img_i.png`` (or ``root/img_i.png`` when ``classes`` is 0): random RGB images, fixed seed."""
    rng = np.random.default_rng(seed)
    folders = [root / f"class_{k}" for k in range(classes)] if classes else [root]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{i}.png")
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``mae`` in this process, on one thread: (exit code, stdout, stderr).

    One thread is as fast for these tiny models, and on a busy machine (other tests, other processes on the
    2 cores) several threads waiting on each other made the same runs 5 times slower.
    """
    capsys.readouterr()  # drop what was printed before
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = mae.cli.main(list(argv))
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return code, out, err


def pretrain(
    capsys: pytest.CaptureFixture[str], data: Path, output: Path | str, *more: str, epochs: int = 2
) -> tuple[int, str, str]:
    """A tiny ``mae pretrain`` run: batches of 4, ``epochs`` epochs with 1 of warmup, then ``more`` flags."""
    return run_cli(
        capsys,
        "pretrain",
        "--data_path",
        str(data),
        *TINY_ARGS,
        "--batch_size",
        "4",
        "--epochs",
        str(epochs),
        "--warmup_epochs",
        "1",
        "--output_dir",
        str(output),
        *more,
    )


class FixedNoise(nn.Module):
    """Calls the MAE with the next of a list of masking noises (rows chosen by the caller), so that two runs
    that draw their random numbers differently still mask the same patches."""

    def __init__(self, model: mae.MaskedAutoencoderViT, noises: list[Tensor]) -> None:
        super().__init__()
        self.model = model
        self.noises = list(noises)

    def forward(self, imgs: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
        return self.model(imgs, mask_ratio=mask_ratio, noise=self.noises.pop(0))


# ------------------------------------------------------------------ fine-tuning, linear probing, evaluation

# The tiny MAE's encoder as a classifier (`mae finetune/linprobe --model vit_base_patch16 --model_args ...`).
TINY_CLASSIFIER_MODEL_ARGS = [item for item in TINY_MODEL_ARGS if not item.startswith("decoder_")]
# The same classifier as keyword arguments of `mae.classifier.VisionTransformer(None, ...)`.
TINY_CLASSIFIER_CONFIG: dict[str, Any] = {
    name: value for name, value in TINY_CONFIG.items() if not name.startswith("decoder_")
}
TINY_CLASSIFIER_ARGS = [
    "--model",
    "vit_base_patch16",
    "--model_args",
    *TINY_CLASSIFIER_MODEL_ARGS,
    "--input_size",
    "32",
    "--num_workers",
    "0",
    "--device",
    "cpu",
    "--batch_size",
    "4",
    "--log_dir",
    "",  # no TensorBoard events, as TINY_ARGS
]


def make_classification_data(root: Path, classes: int = 3) -> Path:
    """``root/train`` (8 images of 40 px per class) and ``root/val`` (4 per class, other pixels), as the official."""
    make_image_folder(root / "train", classes=classes, per_class=8, size=40)
    make_image_folder(root / "val", classes=classes, per_class=4, seed=1)
    return root


def run_quietly(*argv: str) -> tuple[int, str, str]:
    """``mae ARGV`` in this process on one thread, its output captured without pytest's ``capsys`` (for
    fixtures shared by a module): (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = mae.cli.main(list(argv))
    finally:
        torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


def tiny_pretrained(data: Path, output: Path) -> Path:
    """A 1-epoch ``mae pretrain`` of the tiny MAE on ``data``: its ``checkpoint-0.pth`` (encoder + decoder)."""
    code, _, err = run_quietly(
        "pretrain", "--data_path", str(data), *TINY_ARGS, "--batch_size", "4", "--epochs", "1",
        "--warmup_epochs", "0", "--output_dir", str(output),
    )  # fmt: skip
    assert code == 0, err
    return output / "checkpoint-0.pth"


def classification_argv(command: str, data: Path, output: Path | str, *more: str, epochs: int = 3) -> list[str]:
    """The argv of a tiny ``mae finetune`` / ``mae linprobe`` run: ``epochs`` epochs with 1 of warmup, then ``more``."""
    return [
        command, "--data_path", str(data), *TINY_CLASSIFIER_ARGS, "--epochs", str(epochs), "--warmup_epochs", "1",
        "--output_dir", str(output), *more,
    ]  # fmt: skip


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint's entries, read as the official loader reads them (``weights_only``)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Equal nested values (dicts, lists, tuples), tensors bit for bit and of the same dtype."""
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread for a while: tiny models run as fast, and on a busy 2-core machine two threads
    waiting on each other made tiny steps many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
