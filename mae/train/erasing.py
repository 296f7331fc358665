"""Random erasing drawn in the loader's workers, applied on the device after normalising.

timm's ``RandomErasing`` (fine-tuning's ``--reprob``, official default 0.25) runs after ``Normalize`` and
overwrites rectangles of the normalised image with random values (``--remode pixel``: one standard-normal
number per channel and pixel; ``rand``: one per channel; ``const``: zeros). Those values do not depend on
the image, so the worker can draw them without the image's floats: `EraseLater` runs timm's own
``RandomErasing`` on a stand-in that records each rectangle and the values written into it (the same calls
to Python's ``random`` and torch's generator, in the same order), and ships them with the image's stored
integers (`ErasedImage`). `collate.collate` gathers a batch into an `ErasedBatch`; after ``ToTensor`` and
``Normalize`` on the device (`normalize.DeviceNormalize`), `ErasedBatch.erase` writes the recorded values
into their rectangles, in the order they were drawn: the tensor the official CPU pipeline makes, bit for bit.

Departure: the official scripts erase in the workers, on the normalised float image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor


class _Recorder:
    """Stands in for the normalised image [C, H, W] in timm's ``RandomErasing``: keeps what it writes."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)
        self.dtype = torch.float32  # the dtype of ToTensor's output: the values are drawn in it
        self.boxes: list[tuple[int, int, int, int]] = []
        self.values: list[Tensor] = []

    def size(self) -> tuple[int, ...]:
        return self.shape

    def __setitem__(self, key: tuple[slice, slice, slice], value: Tensor) -> None:
        _, rows, cols = key
        top, left = rows.start, cols.start
        h, w = rows.stop - top, cols.stop - left
        self.boxes.append((top, left, h, w))
        # Giá trị xoá không phụ thuộc ảnh: chỉ cần lưu hình chữ nhật và các số đã rút (mở rộng ra cả vùng).
        self.values.append(value.expand(self.shape[0], h, w).reshape(-1))


class ErasedImage(NamedTuple):
    """One image's stored integers [C, H, W] and the rectangles (top, left, h, w) to erase, with their values."""

    pixels: Tensor
    boxes: list[tuple[int, int, int, int]]
    values: list[Tensor]  # float32, C * h * w each, the order of ``boxes``


class EraseLater:
    """A transform step: uint8 image [C, H, W] -> `ErasedImage`, drawing ``erasing`` (timm's
    ``RandomErasing``) exactly as it would draw on the normalised image."""

    def __init__(self, erasing: Any) -> None:
        self.erasing = erasing

    def __call__(self, pixels: Tensor) -> ErasedImage:
        recorder = _Recorder(pixels.shape)
        self.erasing(recorder)
        return ErasedImage(pixels, recorder.boxes, recorder.values)

    def __repr__(self) -> str:
        return f"EraseLater({self.erasing!r})"


class ErasedBatch(NamedTuple):
    """A batch of stored integers [N, C, H, W] with its erasing: ``boxes`` [K, 5] int64 rows (image, top,
    left, h, w), in the order drawn, and ``values`` [sum of C * h * w] float32 (the rows' values, in turn)."""

    images: Tensor
    boxes: Tensor
    values: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ErasedBatch:
        """Images and values to ``device``; the boxes stay on the host (they are read there, not computed on)."""
        return ErasedBatch(
            self.images.to(device, non_blocking=non_blocking),
            self.boxes,
            self.values.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> ErasedBatch:
        return ErasedBatch(self.images.pin_memory(), self.boxes, self.values.pin_memory())

    @property
    def shape(self) -> torch.Size:
        return self.images.shape

    def erase(self, normalised: Tensor) -> Tensor:
        """Write the recorded values into ``normalised`` [N, C, H, W] (float32, normalised ``images``)."""
        channels = normalised.shape[1]
        offset = 0
        for index, top, left, h, w in self.boxes.tolist():
            size = channels * h * w
            region = self.values[offset : offset + size].view(channels, h, w)
            # Ghi đè theo đúng thứ tự đã rút: vùng sau đè lên vùng trước như trong timm.
            normalised[index, :, top : top + h, left : left + w] = region
            offset += size
        return normalised
