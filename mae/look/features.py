"""The encoder's features of a folder of images, as `mae features` writes them and `mae knn` uses them.

For each image, with every patch visible (no masking), ``tokens = encoder.forward_features(x)``
[N, 1 + L, D] — the blocks and then the encoder's final LayerNorm (``norm``, the pre-training model's) — and:

- ``cls``: ``tokens[:, 0]``, the class token after that final norm (what DINO's k-NN and MAE's linear probe
  read);
- ``avg``: ``tokens[:, 1:].mean(1)``, the mean of the L patch tokens after that final norm.

For a fine-tuned classifier with global pooling, whose final norm is ``fc_norm`` after the pooling (the
encoder's ``norm`` is the identity there), ``cls`` is the class token after the last block and ``avg`` is
``fc_norm(mean of the patch tokens)``, the features its head reads.

Images get the official evaluation transform (`augment.eval_transform`: resize, centre crop, uint8) and are
normalised on the device (`normalize.DeviceNormalize`) with the checkpoint's statistics.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..encoder import MAEEncoder
from .encoder_file import LoadedEncoder


@dataclass
class Features:
    """Features of N images: ``cls`` and ``avg`` [N, D] float32, ``labels`` [N] int64 (-1: a flat folder, no
    labels), the class names (folder names in label order) and the images' count per second."""

    cls: Tensor
    avg: Tensor
    labels: Tensor
    classes: list[str]
    images_per_s: float = 0.0


def encode(encoder: MAEEncoder, images: Tensor) -> tuple[Tensor, Tensor]:
    """(cls [N, D], avg [N, D]) of normalised images [N, C, H, W], as the module docstring defines them."""
    tokens = encoder.forward_features(images)  # [N, 1 + L, D]: mọi patch, không che
    avg = tokens[:, 1:].mean(dim=1)  # trung bình các token patch (bỏ [CLS])
    fc_norm = getattr(encoder, "fc_norm", None)  # a global-pool classifier normalises after pooling
    if fc_norm is not None and getattr(encoder, "global_pool", False):
        avg = fc_norm(avg)
    return tokens[:, 0], avg


def image_dataset(root: str | Path, input_size: int, in_chans: int = 3) -> Any:
    """The images under ``root`` with the evaluation transform: an ``ImageFolder`` when ``root`` has class
    folders (labels are their positions in sorted order), else a flat folder of images (label -1). Images of
    other than 3 channels (and ``.npy`` arrays) are read in their own mode (`image_formats.in_own_modes`).

    ValueError before any work for a missing or empty folder, or an image that cannot be read or has other
    channels than ``in_chans``."""
    from ..train.augment import eval_transform
    from ..train.data import ImageFiles, build_image_folder
    from ..train.image_formats import has_data_extension, in_own_modes

    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder: give a folder of images, or of class folders of images")
    transform = eval_transform(input_size)
    if any(d.is_dir() and any(has_data_extension(str(f)) for f in d.rglob("*")) for d in root.iterdir()):
        return build_image_folder(root, transform, "DATA", in_chans)
    files = sorted(f for f in root.iterdir() if f.is_file() and has_data_extension(str(f)))
    if not files:
        raise ValueError(f"{root} holds no images (neither in it nor in class folders)")
    dataset: Any = ImageFiles(files, transform)
    dataset.samples = [(path, -1) for path, _ in dataset.samples]  # một thư mục phẳng: không có nhãn
    dataset.classes = []
    in_own_modes(dataset, in_chans)
    return dataset


@torch.no_grad()
def extract(
    loaded: LoadedEncoder,
    dataset: Any,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[object]],
    progress: bool,
    description: str = "features",
) -> Features:
    """The features of every image of ``dataset``, in its order, batched on ``device``."""
    from ..train.data import build_eval_loader
    from ..train.metrics import Progress
    from ..train.normalize import DeviceNormalize

    model = loaded.model.to(device).eval()
    normalize = DeviceNormalize(loaded.mean, loaded.std)
    loader = build_eval_loader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    cls_parts: list[Tensor] = []
    avg_parts: list[Tensor] = []
    label_parts: list[Tensor] = []
    started = time.perf_counter()
    bar = Progress(loader, len(loader), description, enabled=progress)
    for images, labels in bar:
        x = normalize(images.to(device, non_blocking=True))  # uint8 -> float32 chuẩn hoá, trên thiết bị
        with autocast():
            cls, avg = encode(model, x)
        cls_parts.append(cls.float().cpu())
        avg_parts.append(avg.float().cpu())
        label_parts.append(torch.as_tensor(labels, dtype=torch.int64))
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    return Features(
        cls=torch.cat(cls_parts),
        avg=torch.cat(avg_parts),
        labels=torch.cat(label_parts),
        classes=list(getattr(dataset, "classes", [])),
        images_per_s=len(dataset) / elapsed if elapsed > 0 else float("inf"),
    )


def write(features: Features, path: str | os.PathLike[str], metadata: dict[str, str]) -> Path:
    """``cls``, ``avg`` and ``labels`` as a safetensors file, written to a temporary file beside ``path``,
    flushed to disk and renamed over it; the class names (JSON) and ``metadata`` in its ``__metadata__``."""
    from ..safetensors_io import save_file

    out = Path(path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tensors = {"cls": features.cls, "avg": features.avg, "labels": features.labels}
    try:
        save_file(tensors, tmp, {**metadata, "classes": json.dumps(features.classes)})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)  # đổi tên là nguyên tử: không để lại tệp viết dở
    finally:
        tmp.unlink(missing_ok=True)
    return out
