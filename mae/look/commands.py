"""The sub-commands ``mae attention``, ``mae features`` and ``mae knn``: their flags and what they run.

    mae attention photo.jpg --checkpoint out/checkpoint-399.pth -o attention.png
    mae features DATA --checkpoint mae_pretrain_vit_base.pth -o feats.safetensors      # DATA/class/img.png
    mae knn --checkpoint out/checkpoint-399.pth --data_path DATA --json              # DATA/train, DATA/val

Every input is checked (files, folders, the checkpoint's kind, k) before a model is built or an image read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..train.distributed import available_device
from ..train.flags import flag, non_negative, positive
from .encoder_file import load_encoder


def _model_flags(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "checkpoint",
        required=True,
        metavar="FILE",
        help="a pre-training (full or encoder-only) or fine-tuned checkpoint",
    )
    flag(parser, "model", default=None, metavar="MODEL", help="only for a custom model the file cannot name")
    flag(parser, "model_args", nargs="*", default=None, metavar="NAME=VALUE", help="MAEConfig fields, with --model")


def _batch_flags(parser: argparse.ArgumentParser) -> None:
    flag(parser, "batch_size", type=positive(int), default=64, help="images per forward")
    flag(parser, "num_workers", type=non_negative(int), default=4)
    flag(parser, "device", default="cuda" if torch.cuda.is_available() else "cpu")
    flag(
        parser,
        "dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="float32",
        help="autocast precision of the forward (auto: float16 on CUDA, float32 on CPU); features are kept in float32",
    )


def add_attention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="an image file (resized to the model's size)")
    _model_flags(parser)
    parser.add_argument("-o", "--output", type=Path, default=Path("attention.png"))


def add_features_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, metavar="DATA", help="a folder of class folders of images, or of images")
    _model_flags(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .safetensors file to write")
    _batch_flags(parser)


def add_knn_arguments(parser: argparse.ArgumentParser) -> None:
    _model_flags(parser)
    flag(parser, "data_path", required=True, help="DATA with train/ and val/, one sub-folder of images per class")
    flag(parser, "nb_knn", type=positive(int), nargs="+", default=[20], metavar="K", help="neighbours (DINO's flag)")
    flag(parser, "temperature", type=positive(float), default=0.07, help="T in the vote weight exp(similarity / T)")
    flag(parser, "feature", choices=["cls", "avg"], default="cls", help="class token (default) or mean-pooled patches")
    _batch_flags(parser)
    flag(parser, "json", action="store_true", help="print one JSON object instead of sentences")


def run_attention(args: argparse.Namespace) -> int:
    """``mae attention``."""
    from .attention_figure import describe, run

    if not args.image.is_file():
        raise ValueError(f"{args.image} does not exist: give an image file")
    if not args.output.parent.expanduser().is_dir():
        raise ValueError(f"-o {args.output}: the folder {args.output.parent} does not exist")
    loaded = load_encoder(args.checkpoint, args.model, args.model_args)
    out = run(args.image, loaded, args.output, describe(Path(args.checkpoint), loaded))
    print(f"wrote {out}")
    return 0


def run_features(args: argparse.Namespace) -> int:
    """``mae features``."""
    from ..train.precision import autocast, resolve_dtype
    from .features import extract, image_dataset, write

    if args.output.suffix != ".safetensors":
        raise ValueError(f"-o {args.output}: name the output FILE.safetensors (it is written as safetensors)")
    if not args.output.parent.expanduser().is_dir():
        raise ValueError(f"-o {args.output}: the folder {args.output.parent} does not exist")
    device = available_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if not Path(args.data).expanduser().is_dir():
        raise ValueError(f"{args.data} is not a folder: give a folder of images, or of class folders of images")
    loaded = load_encoder(args.checkpoint, args.model, args.model_args)
    dataset = image_dataset(args.data, loaded.model.config.img_size, loaded.model.config.in_chans)
    feats = extract(
        loaded, dataset, batch_size=args.batch_size, num_workers=args.num_workers, device=device,
        autocast=autocast(device, dtype), progress=True,
    )  # fmt: skip
    metadata = {
        "checkpoint": str(args.checkpoint),
        "model": loaded.name,
        "data": str(args.data),
        "cls": "class token after the encoder's final norm",
        "avg": "mean of the patch tokens after the encoder's final norm (then fc_norm, for a global-pool classifier)",
        "mean": json.dumps(loaded.mean),
        "std": json.dumps(loaded.std),
    }
    out = write(feats, args.output, metadata)
    n, d = feats.cls.shape
    print(f"wrote {out}: {n:,} images x {d} features (cls, avg, labels; {len(feats.classes)} classes), "
          f"{feats.images_per_s:.1f} images/s")  # fmt: skip
    return 0


def run_knn(args: argparse.Namespace) -> int:
    """``mae knn``."""
    from ..train.augment import eval_transform
    from ..train.data import build_classification_datasets
    from ..train.precision import autocast, resolve_dtype
    from .features import Features, extract
    from .knn import knn_classify

    device = available_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    root = Path(args.data_path).expanduser()
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise ValueError(f"--data_path {root} must hold train/ and val/, each with one sub-folder of images per class")
    loaded = load_encoder(args.checkpoint, args.model, args.model_args)
    size, chans = loaded.model.config.img_size, loaded.model.config.in_chans
    train, val, classes = build_classification_datasets(root, eval_transform(size), eval_transform(size), None, chans)
    too_many = [k for k in args.nb_knn if k > len(train)]
    if too_many:
        raise ValueError(f"--nb_knn {too_many[0]} is more than the {len(train)} training images: lower it")
    common: dict[str, Any] = {
        "batch_size": args.batch_size, "num_workers": args.num_workers, "device": device,
        "autocast": autocast(device, dtype), "progress": not args.json,
    }  # fmt: skip
    train_feats = extract(loaded, train, description="train features", **common)
    val_feats = extract(loaded, val, description="val features", **common)

    def pick(f: Features) -> torch.Tensor:
        return f.cls if args.feature == "cls" else f.avg

    results = [
        knn_classify(
            pick(train_feats),
            train_feats.labels,
            pick(val_feats),
            val_feats.labels,
            k=k,
            temperature=args.temperature,
            num_classes=classes,
        )
        for k in args.nb_knn
    ]
    record = {
        "checkpoint": str(args.checkpoint),
        "model": loaded.name,
        "data": str(root),
        "feature": args.feature,
        "temperature": args.temperature,
        "classes": classes,
        "train_images": len(train),
        "val_images": len(val),
        "images_per_s": (len(train) + len(val))
        / (len(train) / train_feats.images_per_s + len(val) / val_feats.images_per_s),
        "results": [{"k": r.k, "acc1": r.top1, "acc5": r.top5} for r in results],
    }
    if args.json:
        print(json.dumps(record))
        return 0
    for r in results:
        print(
            f"{r.k}-NN ({args.feature} features, T={args.temperature}) on {r.images:,} val images of {root}, "
            f"{len(train):,} train images, {classes} classes: top-1 {r.top1:.2f}%, top-5 {r.top5:.2f}%"
        )
    return 0
