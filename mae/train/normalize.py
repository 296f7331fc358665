"""``ToTensor`` and ``Normalize`` on the training device, for batches the loader leaves as stored integers.

The loader's workers stop at the image's own numbers (``PILToTensor``: uint8 for 8-bit images, uint16 for
16-bit ones; float32 for arrays), so a batch crosses to the device in a quarter of float32's bytes and the
workers skip two full passes over every image. Here the batch becomes what torchvision's ``ToTensor`` then
``Normalize`` would have made on the CPU, in the same float32 arithmetic: ``x.float() / 255`` (``/ 65535`` for
uint16; float arrays as they are), then ``(x - mean) / std`` per channel. Each step is one correctly rounded
IEEE operation per element, so the result is bit-equal to the CPU pipeline on any device and any kernel.
The batch may arrive in the images' stored layout (channels last in memory, `collate.stack_images`): it is
made contiguous first, so the model's input is the same tensor, in the same layout, as the official one.
A batch that carries random erasing (`erasing.ErasedBatch`, fine-tuning's ``--reprob``) is normalised, then
erased with the values its workers drew.

Departure: the official scripts normalise in the loader's workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .erasing import ErasedBatch

#: what ``ToTensor`` divides each stored integer type by (float data is used as it is)
SCALE = {torch.uint8: 255.0, torch.uint16: 65535.0}


class DeviceNormalize:
    """``batch [N, C, H, W]`` (uint8, uint16 or float32, on any device) -> float32, normalised per channel;
    an `ErasedBatch` is normalised, then erased."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise ValueError(f"--mean has {len(mean)} values but --std has {len(std)}: give one of each per channel")
        if any(s <= 0 for s in std):
            raise ValueError(f"--std must be positive for every channel; got {', '.join(map(str, std))}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, batch: Tensor | ErasedBatch) -> Tensor:
        if isinstance(batch, ErasedBatch):
            # Xoá ngẫu nhiên sau khi chuẩn hoá, như timm: các vùng và giá trị đã được rút trong worker.
            return batch.erase(self(batch.images))
        if batch.dim() != 4 or batch.shape[1] != len(self.mean):
            raise ValueError(
                f"a batch of shape {tuple(batch.shape)} does not have the {len(self.mean)} channels the statistics "
                "are for"
            )
        # Lô đến theo bố cục lưu của ảnh (kênh cuối, `collate`): sắp lại [N, C, H, W] liền mạch ở đây, rồi mới tính.
        x = batch.contiguous().to(torch.float32)
        if batch.dtype in SCALE:
            # Giống ToTensor: chia cho giá trị lớn nhất của kiểu số nguyên, trong float32.
            x = x.div(SCALE[batch.dtype])
        elif not batch.dtype.is_floating_point:
            raise ValueError(f"cannot normalise a batch of {batch.dtype}: the loader yields uint8, uint16 or float32")
        mean = torch.tensor(self.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
        # Giống Normalize: trừ trung bình rồi chia độ lệch chuẩn của từng kênh.
        return x.sub(mean).div(std)

    def __repr__(self) -> str:
        return f"DeviceNormalize(mean={self.mean}, std={self.std})"
