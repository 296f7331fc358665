"""`mae knn` on an encoder `mae pretrain` trained: it beats every one of 3 random initialisations of the same
model on synthetic classes (stripe orientation) whose brightness and contrast are random nuisances.

The classes are horizontal, vertical and diagonal stripes (period 6, 8 or 10 px, random phase); each image's
background grey is uniform in 0..190 and its contrast in 30..60, so a random encoder's features are ruled by
the brightness and sit near chance (measured 41-49 % over 5 seeds), while the normalised-pixel reconstruction
must learn the orientation (measured 68-84 % over 5 pre-training seeds, 100 epochs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from train_helpers import TINY_ARGS, TINY_CONFIG, run_quietly

import mae

PER_CLASS = 40  # train and val images per class: 120 val images
CLASSES = 3


def _stripes(root: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    for split in ("train", "val"):
        for k in range(CLASSES):
            folder = root / split / f"class_{k}"
            folder.mkdir(parents=True)
            for i in range(PER_CLASS):
                period = rng.choice([6, 8, 10])
                coord = (yy, xx, (xx + yy) / math.sqrt(2))[k] + rng.uniform(0, period)
                bg, contrast = rng.uniform(0, 190), rng.uniform(30, 60)
                grey = bg + contrast * (coord % period < period / 2) + rng.normal(0, 5, (32, 32))
                pixels = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
                Image.fromarray(pixels).save(folder / f"img_{i}.png")


def _knn_top1(checkpoint: Path, data: Path) -> float:
    code, out, err = run_quietly(
        "knn", "--checkpoint", str(checkpoint), "--data_path", str(data), "--num_workers", "0", "--device", "cpu",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    return float(json.loads(out)["results"][0]["acc1"])


def test_pretrained_encoder_beats_random_ones(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _stripes(data, seed=123)
    code, _, err = run_quietly(
        "pretrain", "--data_path", str(data / "train"), *TINY_ARGS, "--batch_size", "16", "--epochs", "100",
        "--warmup_epochs", "1", "--blr", "1e-2", "--norm_pix_loss", "--seed", "0",
        "--output_dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 0, err
    checkpoint = tmp_path / "run" / "checkpoint-99.pth"
    trained = _knn_top1(checkpoint, data)
    entries = torch.load(checkpoint, map_location="cpu", weights_only=False)
    random = []
    for seed in range(3):
        torch.manual_seed(seed)
        entries["model"] = mae.MaskedAutoencoderViT(mae.MAEConfig(**TINY_CONFIG)).state_dict()
        torch.save(entries, tmp_path / f"random-{seed}.pth")
        random.append(_knn_top1(tmp_path / f"random-{seed}.pth", data))
    # Sai số chuẩn nhị thức lớn nhất (p = 1/2) của top-1 trên 120 ảnh val: 100 * sqrt(0.25 / 120) = 4.56 điểm.
    se = 100 * math.sqrt(0.25 / (CLASSES * PER_CLASS))
    assert trained > max(random) + 3 * se, (trained, random)
