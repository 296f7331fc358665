"""`mae features` / `mae knn` benchmark: images/s of our feature extraction and k-NN against a plain loop
over the same model.

- "ours": `mae.look.features.extract` (the evaluation transform stops at uint8; `DeviceNormalize` on the
  device; class token and mean-pooled features) over DATA/train and DATA/val, then `mae.look.knn.knn_classify`
  (k = 20, T = 0.07): what `mae knn` runs after loading the model;
- "plain loop": what one writes by hand (DINO's ``extract_features`` style) — torchvision's ``ImageFolder``
  with the official evaluation transform ending in ``ToTensor`` + ``Normalize`` in the workers, a
  ``DataLoader`` with the same batch and workers, ``model.forward_features(x)[:, 0]``, then DINO's
  ``knn_classifier`` arithmetic written out (topk, one-hot votes, sort);
- "model alone": ``forward_features`` on one batch already in memory, repeated: the ceiling no loader reaches.

The images are the photographs installed packages ship (`benchmarks.data.photographs`), re-encoded as
ImageNet-sized JPEGs; the model has random weights (the speed does not depend on them). After one untimed
round (warm-up), rounds alternate which method runs first; the median round is reported.

    python -m benchmarks features [--variant base] [--images 64] [--batch 32] [--workers 2] [--rounds 2]
        [--warmup 1] [--size 500x375] [--model_args NAME=VALUE ...] [--json F]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import mae
from mae.look.encoder_file import LoadedEncoder
from mae.look.features import extract, image_dataset
from mae.look.knn import knn_classify
from mae.train.data import IMAGENET_MEAN, IMAGENET_STD

from .data import make_jpegs, photographs
from .host import NOISE, describe

VARIANTS = {"base": "mae_vit_base_patch16", "large": "mae_vit_large_patch16", "huge": "mae_vit_huge_patch14"}


def plain_features(model: Any, folder: Path, size: int, batch: int, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-token features and labels by a hand-written loop: official eval transform in the workers."""
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision import datasets

    transform = T.Compose(
        [
            T.Resize(int(size / (224 / 256)), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )
    loader = DataLoader(datasets.ImageFolder(str(folder), transform), batch_size=batch, num_workers=workers)
    feats, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            feats.append(model.forward_features(x)[:, 0])
            labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def plain_knn(train: torch.Tensor, tl: torch.Tensor, test: torch.Tensor, vl: torch.Tensor, k: int, t: float) -> float:
    """DINO's knn_classifier arithmetic, written out plainly (top-1 only)."""
    train = torch.nn.functional.normalize(train, dim=1)
    test = torch.nn.functional.normalize(test, dim=1)
    classes = int(tl.max()) + 1
    sims, idx = (test @ train.T).topk(min(k, len(train)), dim=1)
    one_hot = torch.zeros(len(test), sims.shape[1], classes).scatter_(2, tl[idx].unsqueeze(-1), 1)
    votes = (one_hot * sims.div(t).exp().unsqueeze(-1)).sum(1)
    return float((votes.argmax(1) == vl).float().mean() * 100)


def _ours(loaded: LoadedEncoder, root: Path, batch: int, workers: int) -> dict[str, float]:
    size = loaded.model.config.img_size
    common = {"batch_size": batch, "num_workers": workers, "device": torch.device("cpu")}
    start = time.perf_counter()
    tr = extract(loaded, image_dataset(root / "train", size), autocast=contextlib.nullcontext, progress=False, **common)  # type: ignore[arg-type]
    va = extract(loaded, image_dataset(root / "val", size), autocast=contextlib.nullcontext, progress=False, **common)  # type: ignore[arg-type]
    features_s = time.perf_counter() - start
    knn_classify(tr.cls, tr.labels, va.cls, va.labels, k=min(20, len(tr.labels)))
    n = len(tr.labels) + len(va.labels)
    return {"ours: features": n / features_s, "ours: features + kNN": n / (time.perf_counter() - start)}


def _plain(loaded: LoadedEncoder, root: Path, batch: int, workers: int) -> dict[str, float]:
    size = loaded.model.config.img_size
    start = time.perf_counter()
    ptr, ptl = plain_features(loaded.model, root / "train", size, batch, workers)
    pva, pvl = plain_features(loaded.model, root / "val", size, batch, workers)
    features_s = time.perf_counter() - start
    plain_knn(ptr, ptl, pva, pvl, min(20, len(ptl)), 0.07)
    n = len(ptl) + len(pvl)
    return {"plain loop: features": n / features_s, "plain loop: features + kNN": n / (time.perf_counter() - start)}


def one_round(
    loaded: LoadedEncoder, root: Path, batch: int, workers: int, sample: torch.Tensor, index: int
) -> dict[str, float]:
    """Images/s of each method over DATA/train + DATA/val (features, then kNN), and of the model alone; the
    two methods' order alternates with ``index`` (neither always runs first)."""
    rates: dict[str, float] = {}
    methods = [_ours, _plain] if index % 2 == 0 else [_plain, _ours]
    for method in methods:
        rates.update(method(loaded, root, batch, workers))
    n = len(list((root / "train").rglob("*.jpg"))) + len(list((root / "val").rglob("*.jpg")))
    repeats = max(1, n // len(sample))
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(repeats):
            loaded.model.forward_features(sample)
    rates["model alone"] = repeats * len(sample) / (time.perf_counter() - start)
    return {name: rates[name] for name in sorted(rates, key=_ORDER.index)}


_ORDER = ["ours: features", "ours: features + kNN", "plain loop: features", "plain loop: features + kNN", "model alone"]


def report(rounds: list[dict[str, float]], setting: str) -> tuple[str, dict[str, Any]]:
    """The Markdown table (median of the rounds) and its JSON record."""
    medians = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    lines = [f"`mae features` / `mae knn` benchmark: {setting}", "", "| method | images/s |", "|---|---|"]
    lines += [f"| {name} | {rate:.1f} |" for name, rate in medians.items()]
    ratios = {
        "features": medians["ours: features"] / medians["plain loop: features"],
        "features + kNN": medians["ours: features + kNN"] / medians["plain loop: features + kNN"],
    }
    lines += ["", "| ours / plain loop | ratio | goal: at least 1 / noise |", "|---|---|---|"]
    for name, ratio in ratios.items():
        lines.append(f"| {name} | {ratio:.2f} | {'met' if ratio >= 1 / NOISE else 'NOT met'} (>= {1 / NOISE:.2f}) |")
    return "\n".join(lines), {"setting": setting, "images_per_s": medians, "ratios": ratios, "rounds": rounds}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks features", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=list(VARIANTS), default="base")
    parser.add_argument("--model_args", nargs="*", default=[], metavar="NAME=VALUE", help="MAEConfig overrides")
    parser.add_argument("--images", type=int, default=64, help="JPEGs in each of train/ and val/")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--size", default="500x375", help="the JPEGs' WIDTHxHEIGHT (ImageNet's most common)")
    parser.add_argument("--json", type=Path, help="also write the record as JSON")
    args = parser.parse_args(argv)
    from mae.train.flags import key_values

    torch.manual_seed(0)
    model = mae.create_model(VARIANTS[args.variant], **key_values(args.model_args, "--model_args")).eval()
    loaded = LoadedEncoder(model, "full", VARIANTS[args.variant], IMAGENET_MEAN, IMAGENET_STD, "ImageNet's")
    sources = photographs()
    if not sources:
        raise SystemExit("no sample photographs found (matplotlib ships some): pip install matplotlib")
    c = model.config
    sample = torch.randn(args.batch, c.in_chans, c.img_size, c.img_size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = tuple(int(n) for n in args.size.split("x"))
        make_jpegs(sources, root / "train", args.images, size)  # type: ignore[arg-type]
        make_jpegs(sources, root / "val", args.images, size)  # type: ignore[arg-type]
        for _ in range(args.warmup):
            one_round(loaded, root, args.batch, args.workers, sample, 0)  # warm-up: files cached, kernels chosen
        rounds = [one_round(loaded, root, args.batch, args.workers, sample, i) for i in range(args.rounds)]
    setting = (
        f"{args.variant} ({c.depth} blocks, dim {c.embed_dim}, {c.img_size}px), {args.images} + {args.images} "
        f"JPEGs, batch {args.batch}, {args.workers} workers, {args.rounds} rounds; {describe(torch.device('cpu'))}"
    )
    text, record = report(rounds, setting)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    return 0
