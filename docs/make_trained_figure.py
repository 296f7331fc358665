"""Make docs/reconstruction_trained.png and docs/pretrain_curve.png: a small MAE trained here, on real photographs.

    pip install --no-deps --target /tmp/skimage scikit-image   # only for its sample photos (not a project dependency)
    .venv/bin/python docs/make_trained_figure.py --skimage /tmp/skimage
    .venv/bin/python docs/make_trained_figure.py --figure-only      # redraw both PNGs from the last run

What it does, with nothing downloaded but that wheel:

1. Data. The colour and grey photographs that scikit-image ships in ``skimage/data`` (astronaut, chelsea,
   coffee, rocket, motorcycle_left, hubble_deep_field, retina, ihc, camera, coins, moon, brick, grass,
   gravel: 14 photos; grey ones as RGB) are cut into 96 random square crops each (side 25-100% of the
   photo's shorter side, resized to 96x96), 1,344 PNGs under WORK/data/train/photos. One photograph is
   held out entirely: ``grace_hopper.jpg``, which matplotlib ships (and ``mae reconstruct`` shows by
   default). The model never sees it.
2. Training, through the real command (`mae.cli.main`, the official recipe and augmentation):

       mae pretrain --data_path WORK/data --model mae_vit_base_patch16 --model_args embed_dim=192 depth=6 \\
           num_heads=3 decoder_embed_dim=128 decoder_depth=2 decoder_num_heads=4 patch_size=8 \\
           --input_size 64 --batch_size 32 --epochs 20 --warmup_epochs 2 --blr 8e-3 --device cpu \\
           --num_workers 0 --save_every 5 --output_dir WORK/out

   64x64 images in 8x8 patches (64 patches, 16 seen), a 3.2M-parameter MAE, the pixel target (no
   ``--norm_pix_loss``: the figure then shows what the model predicts, not a prediction rescaled with each
   removed patch's true mean and variance), 42 optimizer steps of 32 images per epoch, 840 in all
   (lr 1e-3 after the warmup, cosine to 0).
3. ``mae plot WORK/out/log.txt -o docs/pretrain_curve.png``.
4. The figure of the official demo (`mae.reconstruct.reconstruct`: mask ratio 0.75, mask seed 2) for the
   held-out photograph, from the last checkpoint. ``mae reconstruct grace_hopper.jpg --checkpoint
   WORK/out/checkpoint-19.pth`` draws the same figure (it reads the model from the checkpoint's run
   arguments, and enlarges a small model's panels by nearest neighbour, here 3x); this script draws them
   4x, with notes on the data and the baseline.

Measured on this machine (2 CPU cores shared with other jobs, torch 2.14, float32):

- training: 11.7 min (30-48 images/s on one thread); ``train_loss`` by epoch 1.185 0.625 0.581 0.578
  0.538 0.512 0.475 0.470 0.458 0.452 0.440 0.440 0.431 0.426 0.421 0.416 0.407 0.409 0.410 0.405;
- the held-out photograph, mask seed 2 (the figure): loss 1.151 on the removed patches, against 1.696 for
  painting every removed patch the mean colour of the visible ones (and 1.771 for checkpoint-0); mask
  seeds 3, 4, 5: 0.991, 1.009, 1.142 against 1.471, 1.446, 1.637. A training photo (astronaut) scores
  alike (1.261 against 1.704): the model is not recalling its photographs by heart;
- what the figure shows: a blurred but placed portrait, the skin tone carried from the visible face
  patches over the whole face, the dark jacket in the lower half, grey-blue sky on the right and darker
  blue on the flag's side. No detail (eyes, stars, ribbons): 12 minutes of CPU on 14 photographs, where
  the paper trains ViT-Large for 1600 epochs of ImageNet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import mae
import mae.cli
from mae.reconstruct import Reconstruction, load_image, reconstruct, render, sample_photo
from mae.train.flags import key_values
from mae.train.run_checkpoint import checkpoints_in

DOCS = Path(__file__).resolve().parent
PHOTOS = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "brick.png",
    "grass.png",
    "gravel.png",
]
CROPS_PER_PHOTO, CROP_SIZE = 96, 96
MODEL_ARGS = [
    "embed_dim=192",
    "depth=6",
    "num_heads=3",
    "decoder_embed_dim=128",
    "decoder_depth=2",
    "decoder_num_heads=4",
    "patch_size=8",
]
INPUT_SIZE, ENLARGE, MASK_SEED = 64, 4, 2


def skimage_data(root: Path | None) -> Path:
    """The folder of scikit-image's sample photos: ROOT/skimage/data (a --target install), or the installed one."""
    if root is not None:
        for candidate in (root / "skimage" / "data", root / "data", root):
            if (candidate / "astronaut.png").is_file():
                return candidate
        raise SystemExit(
            f"no skimage/data/astronaut.png under {root}: pip install --no-deps --target {root} scikit-image"
        )
    try:
        import skimage
    except ImportError:
        raise SystemExit(
            "scikit-image's photos are needed: pip install --no-deps --target DIR scikit-image, then pass --skimage DIR"
        ) from None
    return Path(skimage.__file__).parent / "data"


def make_crops(photos: list[Path], folder: Path, per_photo: int, size: int, seed: int = 0) -> int:
    """``per_photo`` random square crops of each photo (side 25-100% of its shorter side), resized to size x size."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for photo in photos:
        image = Image.open(photo).convert("RGB")
        w, h = image.size
        for i in range(per_photo):
            side = int(rng.uniform(0.25, 1.0) * min(w, h))
            left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
            crop.save(folder / f"{photo.stem}_{i:03d}.png")
            count += 1
    return count


def mean_colour_loss(result: Reconstruction) -> float:
    """The loss of a baseline that paints every removed patch the mean colour of the visible ones.

    In the model's space (ImageNet-normalised pixels), on the removed patches only: the number to set
    beside the model's loss.
    """
    from mae.reconstruct import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = (result.original - mean) / std  # [3, H, W]
    removed = result.mask.bool()  # [H, W]
    colour = x[:, ~removed].mean(dim=1)  # màu trung bình của các patch nhìn thấy
    return float(((x[:, removed] - colour[:, None]) ** 2).mean())


def train(work: Path, data: Path, epochs: int) -> Path:
    """The crops, then `mae pretrain`; returns the run's folder (with run.json: crops and minutes)."""
    shutil.rmtree(work, ignore_errors=True)
    n = make_crops([data / name for name in PHOTOS], work / "data" / "train" / "photos", CROPS_PER_PHOTO, CROP_SIZE)
    print(f"{n} crops of {len(PHOTOS)} photos from {data}")
    out = work / "out"
    started = time.time()
    argv = [
        "pretrain", "--data_path", str(work / "data"), "--model", "mae_vit_base_patch16",
        "--model_args", *MODEL_ARGS, "--input_size", str(INPUT_SIZE), "--batch_size", "32",
        "--epochs", str(epochs), "--warmup_epochs", str(min(2, epochs - 1)), "--blr", "8e-3",
        "--device", "cpu", "--num_workers", "0", "--save_every", "5", "--output_dir", str(out),
    ]  # fmt: skip
    if mae.cli.main(argv):
        raise SystemExit("mae pretrain failed")
    minutes = (time.time() - started) / 60
    (out / "run.json").write_text(json.dumps({"crops": n, "minutes": minutes, "epochs": epochs}))
    return out


def figure(out: Path, held_out: Path) -> list[str]:
    """docs/pretrain_curve.png and docs/reconstruction_trained.png from a run's folder; returns the notes."""
    run = json.loads((out / "run.json").read_text())
    losses = [json.loads(line)["train_loss"] for line in (out / "log.txt").read_text().splitlines()]
    print(f"{run['epochs']} epochs in {run['minutes']:.1f} min; train_loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    mae.cli.main(["plot", str(out / "log.txt"), "-o", str(DOCS / "pretrain_curve.png")])

    found = checkpoints_in(out)
    checkpoint = found[max(found)]
    kwargs = key_values(MODEL_ARGS, "--model_args")  # the model the run trained
    model = mae.create_model(
        "mae_vit_base_patch16", checkpoint_path=checkpoint, img_size=INPUT_SIZE, norm_pix_loss=False, **kwargs
    )
    result = reconstruct(model, load_image(held_out, INPUT_SIZE), mask_ratio=0.75, seed=MASK_SEED)
    notes = [
        f"{checkpoint.name}: {len(PHOTOS)} scikit-image photos, {run['crops']} crops, {run['epochs']} epochs on "
        f"the CPU ({run['minutes']:.0f} min); pixel target",
        f"held-out photo {held_out.name} (never trained on), {INPUT_SIZE}x{INPUT_SIZE}, 8x8 patches shown "
        f"{ENLARGE}x; mask ratio 0.75, seed {MASK_SEED}, loss {result.loss:.4f} "
        f"(mean visible colour: {mean_colour_loss(result):.4f})",
    ]
    render(result, notes, scale=ENLARGE).save(DOCS / "reconstruction_trained.png", format="PNG", optimize=True)
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skimage", type=Path, help="where scikit-image was installed (pip install --target DIR)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mae_trained_figure"), help="data and run folder")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on 2 cores shared with other jobs, 2 threads ran 10x slower than 1)",
    )
    parser.add_argument("--figure-only", action="store_true", help="redraw both PNGs from the run in WORK/out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    held_out = sample_photo()  # grace_hopper.jpg: không có trong dữ liệu huấn luyện
    out = args.work / "out" if args.figure_only else train(args.work, skimage_data(args.skimage), args.epochs)
    for line in figure(out, held_out):
        print(line)
    print(f"wrote {DOCS / 'reconstruction_trained.png'} and {DOCS / 'pretrain_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
