"""It learns: a tiny encoder pre-trained by `mae pretrain`, then `mae linprobe` and `mae finetune` on it, classify
images they never saw.

The data are made here, with a fixed seed: 4 classes of 48x48 RGB images told apart by their colour layout,
which half is bright: both, the top only, the bottom only, neither (levels 0.65 and 0.25 of a random hue,
+-0.05, the halves joined by a soft edge at a random height 0.4-0.6), plus a Gaussian blob of random colour,
place and size and pixel noise (std 0.05). 64 training and 25 validation images per class. The classes
survive the horizontal flip and (mostly) the crops of the recipes. RandAugment is off in fine-tuning
(``--aa=``): its Invert and Solarize turn a bright half dark, i.e. change the class.

Through the real commands (`mae.cli.main`, one thread): `mae pretrain` of a tiny MAE (32x32 input, patch 8,
encoder dim 32 x 2 blocks, decoder dim 32 x 1 block) for 20 epochs of 16 steps (batch 16, blr 4e-2); then
`mae linprobe --finetune` its last checkpoint (class token, BatchNorm + linear head, LARS; batch 16, blr 256,
8 epochs) and `mae finetune --finetune` it (global pool, AdamW with layer decay; batch 16, blr 5e-3,
4 epochs). Claims, on the last epoch's validation top-1 in each log.txt (chance: 25%):
- the pre-training loss falls below half its first epoch's;
- the linear probe reaches 75% (3x chance), with the encoder's weights untouched (frozen);
- fine-tuning reaches 75%.

Measured on this machine (torch 2.14 CPU, float32, one thread), seeds 0 / 1 / 2 (data and runs): pre-training
loss 1.234 -> 0.151 / 1.253 -> 0.202 / 1.244 -> 0.156; probe top-1 by epoch 25 25 25 50 64 94 100 100 /
25 25 51 75 100 99 99 100 / 25 25 25 28 100 100 100 100; fine-tuning (8 epochs) 98 98 99 100 ... 100 /
87 92 97 99 99 100 100 100 / 99 100 ... 100. Each claim can fail (seed 0): with `LARS.step` a no-op the
probe ends at 43%; with the fine-tuning AdamW's `step` a no-op fine-tuning stays at 17% every epoch.

Not claimed, because it did not hold: that the pre-trained probe beats a probe on the randomly initialised
encoder (the checkpoint of the same seed after one epoch at blr 1e-30). On this data the random encoder's
probe reaches 98 / 100 / 99% (it is a little slower in 2 of 3 seeds); on harder variants (vertical
profiles, band positions, textures) it matched or beat the pre-trained one within a few hundred steps, see
the report of issue 10. The test takes about 15 s (pre-training 8-10 s) on one thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from train_helpers import run_quietly

SIZE, INPUT = 48, 32  # ảnh sinh ra 48x48; mô hình thấy 32x32, patch 8 (16 patch)
TRAIN_PER_CLASS, VAL_PER_CLASS = 64, 25
HIGH, LOW, JITTER = 0.65, 0.25, 0.05
# Lớp = nửa nào sáng (trên, dưới); tên thư mục theo thứ tự ImageFolder sắp xếp.
CLASSES = {"both": (True, True), "bottom": (False, True), "neither": (False, False), "top": (True, False)}
ENCODER = ["embed_dim=32", "depth=2", "num_heads=4", "patch_size=8"]
DECODER = ["decoder_embed_dim=32", "decoder_depth=1", "decoder_num_heads=4"]
COMMON = ["--input_size", str(INPUT), "--num_workers", "0", "--device", "cpu", "--seed", "0", "--batch_size", "16"]
PRETRAIN_EPOCHS, PROBE_EPOCHS, FINETUNE_EPOCHS = 20, 8, 4
ACCURACY = 75.0  # phần trăm, gấp 3 lần đoán mò (25%); đo được 100% ở cả 3 seed


def layout(rng: np.random.Generator, top_bright: bool, bottom_bright: bool) -> np.ndarray:
    """One image [SIZE, SIZE, 3] uint8: two halves of one random hue at the class's levels, a blob and noise."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) / (SIZE - 1)
    top = 1.0 / (1.0 + np.exp((y - rng.uniform(0.4, 0.6)) / 0.04))  # 1 ở nửa trên, 0 ở nửa dưới, mép mềm
    hue = rng.uniform(0.3, 1.0, 3)
    hue /= hue.mean()
    level_top = (HIGH if top_bright else LOW) + rng.uniform(-JITTER, JITTER)
    level_bottom = (HIGH if bottom_bright else LOW) + rng.uniform(-JITTER, JITTER)
    image = (level_top * top + level_bottom * (1.0 - top))[..., None] * hue
    cx, cy, radius = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.2)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    image = image + rng.uniform(-0.3, 0.3, 3) * blob[..., None] + rng.normal(0.0, 0.05, image.shape)
    return (image.clip(0, 1) * 255).round().astype(np.uint8)


def make_data(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for name, (top, bottom) in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(layout(rng, top, bottom)).save(folder / f"{i:03d}.png")
    return root


def run(*argv: str | Path) -> list[dict[str, float]]:
    """``mae ARGV`` on one thread; the records of its OUTPUT/log.txt (the output folder follows --output_dir)."""
    args = [str(a) for a in argv]
    code, out, err = run_quietly(*args)
    assert code == 0, out + err
    output = Path(args[args.index("--output_dir") + 1])
    return [json.loads(line) for line in (output / "log.txt").read_text().splitlines()]


def test_probe_and_finetune_of_a_pretrained_tiny_encoder_learn(tmp_path: Path) -> None:
    # Một test cho một lần huấn luyện (như tests/test_train_learns.py).
    data = make_data(tmp_path / "data")
    pretrained = run(
        "pretrain", "--data_path", data, "--model", "mae_vit_base_patch16", "--model_args", *ENCODER, *DECODER,
        *COMMON, "--epochs", str(PRETRAIN_EPOCHS), "--warmup_epochs", "1", "--blr", "4e-2",
        "--save_every", "1000", "--output_dir", tmp_path / "pre",
    )  # fmt: skip
    first, last = pretrained[0]["train_loss"], pretrained[-1]["train_loss"]
    assert last < 0.5 * first, f"pre-training loss {first:.3f} -> {last:.3f}"
    checkpoint = tmp_path / "pre" / f"checkpoint-{PRETRAIN_EPOCHS - 1}.pth"

    classifier = ["--data_path", data, "--model", "vit_base_patch16", "--model_args", *ENCODER, *COMMON]
    probe = run(
        "linprobe", *classifier, "--finetune", checkpoint, "--epochs", str(PROBE_EPOCHS), "--warmup_epochs", "1",
        "--blr", "256", "--output_dir", tmp_path / "probe",
    )  # fmt: skip
    accuracies = [round(r["test_acc1"]) for r in probe]
    assert probe[-1]["test_acc1"] >= ACCURACY, f"linear probe top-1 by epoch: {accuracies}"
    # Linear probing chỉ học lớp tuyến tính: encoder giữ nguyên trọng số tiền huấn luyện.
    encoder = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    probed = torch.load(tmp_path / "probe" / f"checkpoint-{PROBE_EPOCHS - 1}.pth", weights_only=False)["model"]
    shared = [k for k in encoder if k.startswith(("blocks.", "patch_embed.", "cls_token", "norm."))]
    assert len(shared) > 10 and all(torch.equal(encoder[k], probed[k]) for k in shared)

    finetuned = run(
        "finetune", *classifier, "--finetune", checkpoint, "--epochs", str(FINETUNE_EPOCHS), "--warmup_epochs", "1",
        "--blr", "5e-3", "--aa=", "--output_dir", tmp_path / "finetune",
    )  # fmt: skip
    accuracies = [round(r["test_acc1"]) for r in finetuned]
    assert finetuned[-1]["test_acc1"] >= ACCURACY, f"fine-tuning top-1 by epoch: {accuracies}"
