"""Make docs/attention_tiny.png: `mae attention` on a tiny MAE pre-trained briefly here, by the commands.

    .venv/bin/python docs/make_attention_figure.py [--work /tmp/attention_figure]

1. Data: 128 random square crops (side 25-100% of the shorter side, resized to 64x64) of the sample photograph
   matplotlib ships (``grace_hopper.jpg``, the only photograph installed here), under WORK/data/train/photo.
2. ``mae pretrain --data_path WORK/data --model mae_vit_base_patch16 --model_args embed_dim=96 depth=4
   num_heads=4 decoder_embed_dim=64 decoder_depth=1 decoder_num_heads=4 patch_size=8 --input_size 64
   --batch_size 32 --epochs 20 --warmup_epochs 2 --blr 8e-3 --device cpu --num_workers 0``: 80 steps, about
   17 minutes on a busy 2-core CPU.
3. ``mae attention grace_hopper.jpg --checkpoint WORK/out/checkpoint-19.pth -o docs/attention_tiny.png``.

The model has seen crops of the very photograph it is shown, for 80 steps: the figure shows what the command
draws, not what a trained ViT attends to.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image

import mae.cli
from mae.reconstruct import sample_photo

DOCS = Path(__file__).resolve().parent
MODEL_ARGS = [
    "embed_dim=96", "depth=4", "num_heads=4", "decoder_embed_dim=64", "decoder_depth=1", "decoder_num_heads=4",
    "patch_size=8",
]  # fmt: skip


def make_crops(photo: Path, folder: Path, count: int = 128, size: int = 64) -> None:
    """``count`` random square crops of ``photo``, ``size`` px, as PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    source = Image.open(photo).convert("RGB")
    rng = random.Random(0)
    for i in range(count):
        side = int(min(source.size) * rng.uniform(0.25, 1.0))
        left, top = rng.randint(0, source.width - side), rng.randint(0, source.height - side)
        crop = source.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
        crop.save(folder / f"{i:03d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/attention_figure"))
    work = parser.parse_args().work
    photo = sample_photo()
    make_crops(photo, work / "data" / "train" / "photo")
    code = mae.cli.main(
        [
            "pretrain", "--data_path", str(work / "data"), "--model", "mae_vit_base_patch16", "--model_args",
            *MODEL_ARGS, "--input_size", "64", "--batch_size", "32", "--epochs", "20", "--warmup_epochs", "2",
            "--blr", "8e-3", "--device", "cpu", "--num_workers", "0", "--output_dir", str(work / "out"),
            "--log_dir", "",
        ]
    )  # fmt: skip
    if code:
        raise SystemExit(code)
    checkpoint = work / "out" / "checkpoint-19.pth"
    raise SystemExit(
        mae.cli.main(["attention", str(photo), "--checkpoint", str(checkpoint), "-o", str(DOCS / "attention_tiny.png")])
    )


if __name__ == "__main__":
    main()
