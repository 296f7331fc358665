"""How the loaders' workers make a batch: the images in their stored layout, random erasing as a plan.

Pillow keeps an image's pixels interleaved, [H, W, C]; ``PILToTensor`` returns a [C, H, W] *view* of them,
and torch's ``default_collate`` stacks those views into a contiguous [N, C, H, W] batch: a strided copy of
every image in the worker, about 0.17 ms per 224-px image on one core of a 2-core Xeon (the whole pipeline
took about 2.9 ms per 500x375 JPEG there; the official ``ToTensor`` makes the same transposition). Here the
worker stacks the images as they are stored, [N, H, W, C], and hands on its [N, C, H, W] view (torch's
channels-last strides); `normalize.DeviceNormalize` makes the batch contiguous on the device, where the
transposition is cheap (a GPU's), or where it replaces the worker's (the CPU). Moving numbers is exact: the
model's input is unchanged bit for bit (``tests/test_device_normalize.py``).

A batch of `erasing.ErasedImage` samples (fine-tuning's random erasing) becomes an `erasing.ErasedBatch`.

Departure: the official loaders' batches are contiguous [N, C, H, W] float32 (`normalize`'s docstring).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

from .erasing import ErasedBatch, ErasedImage


def stored_channels_last(image: Tensor) -> bool:
    """Whether ``image`` [C, H, W] is a view of [H, W, C] memory (what ``PILToTensor`` returns)."""
    return image.dim() == 3 and image.permute(1, 2, 0).is_contiguous()


def stack_images(images: list[Tensor]) -> Tensor:
    """``images`` [C, H, W] -> [N, C, H, W], in the stored layout when every image has it (channels last in
    memory; in a worker, in shared memory as ``default_collate`` allocates it), contiguous otherwise."""
    if images and all(stored_channels_last(image) for image in images):
        # Giữ nguyên thứ tự điểm ảnh như Pillow lưu (H, W, C): worker không phải chép hoán vị từng ảnh.
        return default_collate([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return default_collate(images)


def collate(batch: list[tuple[Any, Any]]) -> Any:
    """torch's ``default_collate`` for (image, label) samples, except that the images keep their stored layout
    (`stack_images`) and a batch of `ErasedImage` samples becomes an `ErasedBatch`."""
    if not batch or not isinstance(batch[0], (tuple, list)) or len(batch[0]) != 2:
        return default_collate(batch)
    first = batch[0][0]
    labels = default_collate([sample[1] for sample in batch])
    if isinstance(first, ErasedImage):
        images = [sample[0] for sample in batch]
        boxes = [(i, *box) for i, image in enumerate(images) for box in image.boxes]
        values = [v for image in images for v in image.values]
        erased = ErasedBatch(
            stack_images([image.pixels for image in images]),
            torch.tensor(boxes, dtype=torch.int64).view(-1, 5),
            torch.cat(values) if values else torch.empty(0, dtype=torch.float32),
        )
        return [erased, labels]
    if isinstance(first, Tensor):
        return [stack_images([sample[0] for sample in batch]), labels]
    return default_collate(batch)
