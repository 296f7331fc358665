"""The random resized crop of the official linear probe: one draw, no retry loop (the BYOL / TF form).

torchvision's `RandomResizedCrop` draws up to ten (area, aspect ratio) pairs until a crop fits in the image,
then falls back to a centre crop. The official ``main_linprobe.py`` (after MoCo v3 and BYOL's TensorFlow
code) draws once and clamps the crop to the image instead, so its crops differ in distribution and draw
a fixed count of random numbers. This module does the same, with torch's generator in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torchvision.transforms import functional as F


class RandomResizedCropNoRetry(torchvision.transforms.RandomResizedCrop):  # type: ignore[misc]
    """`torchvision.transforms.RandomResizedCrop` whose crop is drawn once and clamped to the image.

    Construction and resizing are torchvision's (``size``, ``scale``, ``ratio``, ``interpolation``,
    ``antialias``); the official linear probe uses ``interpolation=InterpolationMode.BICUBIC``.
    """

    @staticmethod
    def get_params(img: Any, scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of one crop of ``img`` (a PIL image or a [..., H, W] tensor).

        Four draws from torch's global generator, in this order: the area fraction ~ U(scale), the
        log aspect ratio ~ U(log ratio), the top row, the left column.
        """
        width, height = F.get_image_size(img)
        # Diện tích mục tiêu: một tỉ lệ ngẫu nhiên của diện tích ảnh, rút đúng một lần (không thử lại).
        fraction = torch.empty(1).uniform_(scale[0], scale[1]).item()
        target_area = width * height * fraction
        # Tỉ lệ khung hình phân bố đều theo thang log, nên w/h và h/w có cùng phân bố.
        log_low, log_high = torch.tensor(ratio).log()
        aspect = torch.empty(1).uniform_(log_low, log_high).exp().item()
        # Khung quá lớn thì bị kẹp vào kích thước ảnh (torchvision thay vào đó rút lại tối đa 10 lần).
        crop_w = min(width, round(math.sqrt(target_area * aspect)))
        crop_h = min(height, round(math.sqrt(target_area / aspect)))
        top = int(torch.randint(0, height - crop_h + 1, size=(1,)).item())
        left = int(torch.randint(0, width - crop_w + 1, size=(1,)).item())
        return top, left, crop_h, crop_w
