"""The image transforms of fine-tuning and linear probing, as the official ``util/datasets.py`` and
``main_linprobe.py`` build them.

- fine-tuning (training): timm's ``create_transform`` — random resized crop (bicubic), flip,
  RandAugment (``--aa rand-m9-mstd0.5-inc1``), ImageNet normalisation, random erasing (``--reprob``);
- linear probing (training): the crop without torchvision's retry loop (`crop.RandomResizedCropNoRetry`),
  flip, normalisation — no other augmentation;
- evaluation: resize the short side to ``input_size / crop_pct`` (``crop_pct`` = 224/256 up to 224 px,
  1 above) with bicubic interpolation, centre crop, normalisation.

timm is the official pipeline's own library (the official scripts call it), so it is used, not rewritten.

Departure: each transform stops at the image's stored integers (uint8 [3, H, W], ``PILToTensor``) where the
official ones end with ``ToTensor`` and ``Normalize`` (and, fine-tuning, random erasing): the trainers
normalise the batch on the device (`normalize.DeviceNormalize`), and the erasing timm draws in the worker
is applied there after it (`erasing`), so the model sees the official tensors bit for bit.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from .data import IMAGENET_MEAN, IMAGENET_STD, _torchvision


def _timm_data() -> Any:
    try:
        import timm.data
    except ImportError as e:
        raise ImportError("fine-tuning uses timm (RandAugment, Mixup, random erasing): pip install 'mae[train]'") from e
    return timm.data


def finetune_transform(args: argparse.Namespace) -> Callable[[Any], torch.Tensor]:
    """The official fine-tuning augmentation (``--input_size --aa --color_jitter --reprob --remode --recount``).

    ValueError for an ``--aa`` policy timm does not know. RandAugment's posterize is made safe at the
    top magnitude (see `_keep_posterize_working`).
    """
    try:
        transform = _build_finetune_transform(args)
    except AssertionError as e:  # timm checks the policy name with assert
        raise ValueError(
            f"--aa {args.aa!r} is not a timm augmentation policy ({e}); the official one is rand-m9-mstd0.5-inc1, "
            "and --aa '' turns it off"
        ) from None
    _keep_posterize_working(transform)
    return _integers_out(transform)


def _integers_out(transform: Any) -> Any:
    """timm's Compose with ``MaybeToTensor`` + ``Normalize`` replaced by ``PILToTensor``, and its
    ``RandomErasing`` by `erasing.EraseLater` (the same draws, applied on the device after normalising)."""
    from timm.data.random_erasing import RandomErasing

    from .erasing import EraseLater

    t = _torchvision().transforms
    steps: list[Any] = []
    for step in transform.transforms:
        if isinstance(step, t.Normalize):
            continue  # trên thiết bị (DeviceNormalize), cùng phép tính float32
        if type(step).__name__ in ("MaybeToTensor", "ToTensor"):
            steps.append(t.PILToTensor())
        elif isinstance(step, RandomErasing):
            steps.append(EraseLater(step))
        else:
            steps.append(step)
    return t.Compose(steps)


def _keep_posterize_working(transform: Any) -> None:
    """RandAugment draws each op's magnitude from N(9, 0.5) capped at 10 (``mstd0.5``); at 10, timm's
    posterize keeps 0 bits, which Pillow >= 10 refuses ("bits must be between or equal to 1 and 8") where it
    used to return a black image: about one image in a few thousand stopped the run. Give the ops of this
    transform a posterize that returns the black image at 0 bits, and Pillow's result otherwise."""
    from PIL import Image, ImageOps

    def posterize(img: Any, bits_to_keep: int, **_: Any) -> Any:
        if bits_to_keep >= 8:
            return img
        if bits_to_keep <= 0:
            return Image.new(img.mode, img.size)  # mọi bit bị bỏ: ảnh đen, như Pillow cũ
        return ImageOps.posterize(img, bits_to_keep)

    for step in getattr(transform, "transforms", []):
        for op in getattr(step, "ops", []):
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = posterize


def _build_finetune_transform(args: argparse.Namespace) -> Any:
    return _timm_data().create_transform(
        input_size=args.input_size,
        is_training=True,
        color_jitter=args.color_jitter,  # chỉ dùng khi không có RandAugment
        auto_augment=args.aa,
        interpolation="bicubic",
        re_prob=args.reprob,  # xoá ngẫu nhiên một vùng ảnh (random erasing) với xác suất này
        re_mode=args.remode,
        re_count=args.recount,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def eval_transform(input_size: int) -> Callable[[Any], torch.Tensor]:
    """The official evaluation transform: resize to ``input_size / crop_pct`` (bicubic), centre crop; uint8."""
    t = _torchvision().transforms
    # Ở 224 px: phóng ảnh về 256 rồi cắt giữa 224 (crop_pct = 224/256); lớn hơn 224 thì không cắt bớt.
    crop_pct = 224 / 256 if input_size <= 224 else 1.0
    return t.Compose(
        [
            t.Resize(int(input_size / crop_pct), interpolation=t.InterpolationMode.BICUBIC),
            t.CenterCrop(input_size),
            t.PILToTensor(),  # chuẩn hoá trên thiết bị (DeviceNormalize)
        ]
    )


def linprobe_transform(input_size: int = 224) -> Callable[[Any], torch.Tensor]:
    """The official linear-probe augmentation: random resized crop (bicubic, no retry loop) and flip only; uint8."""
    from .crop import RandomResizedCropNoRetry

    t = _torchvision().transforms
    return t.Compose(
        [
            # Linear probing chỉ dùng tăng cường yếu: đặc trưng đã cố định, chỉ học lớp tuyến tính.
            RandomResizedCropNoRetry(input_size, interpolation=t.InterpolationMode.BICUBIC),
            t.RandomHorizontalFlip(),
            t.PILToTensor(),  # chuẩn hoá trên thiết bị (DeviceNormalize)
        ]
    )
