"""Images in their own mode, for data that is not 8-bit RGB: grayscale, 16-bit, and multi-band arrays.

``--in_chans 3`` with Pillow images keeps the RGB path of `data` (every image converted to RGB, as the
official loader does). Any other channel count, or ``.npy`` files, are read here, each file as it is stored:

- Pillow images in their own mode: ``L`` (8-bit grayscale) and ``1`` (read as ``L``) give uint8; 16-bit PNG
  and TIFF (``I;16``, ``I;16B``, ``I;16L``, and ``I`` holding values 0-65535) give uint16; ``F`` (32-bit float
  TIFF) gives float32; multi-band modes (``LA``, ``RGBA``, ``CMYK``) give uint8 with their bands as channels;
- ``.npy`` arrays of shape (C, H, W) or (H, W, C) (or (H, W) for one channel): uint8, uint16, or floats
  (read as float32). Integers are scaled as ``ToTensor`` scales them (÷255, ÷65535), floats used as they are.

The reader returns a Pillow image (crops and flips then run in Pillow, as for RGB) or, for arrays, a float32
tensor [C, H, W] in ``ToTensor``'s scale (torchvision's transforms run on tensors). `to_stored_tensor` is every
transform's last step: the stored numbers as a [C, H, W] tensor (uint8, uint16 or float32) that
`normalize.DeviceNormalize` scales and normalises on the device.

`check_channels` reads the headers of the files (a seeded 1,000 of a larger set) before any work and names the
first file whose channels are not ``--in_chans``, with its mode.

The augmentation is the RGB recipe's own transform (`for_own_modes`): the same crop boxes (the same random
draws) and flips on every channel, bicubic. Departures, where torchvision allows no closer match:
- ``.npy`` arrays are cropped and resized in float32 by torch's antialiased bicubic (``antialias=True``: the
  a = -0.5 kernel and widened support that Pillow uses), not rounded to integers afterwards, and not clamped
  (bicubic can overshoot the stored range slightly at sharp edges, as it does before Pillow clamps);
- 16-bit images are resized by Pillow in their own mode (``I;16``: rounded to integers and clamped, as 8-bit);
- fine-tuning's RandAugment and colour jitter are RGB-only (timm's ops work on 8-bit RGB images): data read
  here refuses them with an error saying to pass ``--aa ''`` (or to leave out ``--color_jitter``) rather than
  dropping them silently; random erasing works on any channel count and is kept.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

ARRAY_EXTENSIONS = (".npy",)
SINGLE_BAND = ("1", "L", "I;16", "I;16B", "I;16L", "I", "F")  # one channel, in these bit depths
WIDE = ("I;16", "I;16B", "I;16L", "I", "F")  # more than 8 bits: an RGB conversion would clip them
MULTI_BAND = ("LA", "RGB", "RGBA", "CMYK")  # 8 bits per band
CHECK_ALL_UP_TO = 50_000  # larger sets have a seeded 1,000 checked up front; the rest name themselves on failure
CHECKED_SAMPLE = 1000


def unreadable(path: str | Path, error: BaseException, kind: str = "image") -> ValueError:
    """The error for a file that cannot be read: it names the file and the reason, and says what to do."""
    return ValueError(f"cannot read {kind} {path}: {error}. Remove or replace the file.")


@dataclass(frozen=True)
class Stored:
    """What a file's header says: its channels and a short description of its mode."""

    channels: int
    mode: str  # a Pillow mode ("I;16") or "npy uint16 (4, 64, 64)"
    shape: tuple[int, ...] = ()  # an array's shape (empty for Pillow images)


def is_array(path: str | Path) -> bool:
    return str(path).lower().endswith(ARRAY_EXTENSIONS)


def _array_layout(shape: tuple[int, ...], in_chans: int) -> str | None:
    """The layout of an array of ``shape`` with ``in_chans`` channels ("CHW", "HWC", "HW"); None for other channels."""
    if len(shape) == 2:
        return "HW" if in_chans == 1 else None
    if len(shape) != 3:
        return None
    if shape[0] == in_chans:
        return "CHW"  # (C, H, W) first when both ends match
    if shape[2] == in_chans:
        return "HWC"
    return None


def probe(path: str | Path) -> Stored:
    """The channels and mode of ``path`` from its header only; ValueError naming a file that cannot be read."""
    if is_array(path):
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)  # only the header is read
        except (OSError, ValueError) as e:
            raise unreadable(path, e, "array") from None
        shape = tuple(int(n) for n in array.shape)
        channels = 1 if len(shape) == 2 else min(shape[0], shape[-1]) if len(shape) == 3 else 0
        return Stored(channels, f"npy {array.dtype} {shape}", shape)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return Stored(len(img.getbands()), img.mode)
    except (OSError, UnidentifiedImageError) as e:
        raise unreadable(path, e) from None


def mismatch(path: str | Path, stored: Stored, in_chans: int) -> str | None:
    """Why ``path`` cannot be read with ``in_chans`` channels (a sentence saying what to do), or None."""
    if is_array(path):
        if _array_layout(stored.shape, in_chans) is None:
            return (
                f"{path} is {stored.mode}, not {in_chans} channel(s) as (C, H, W) or (H, W, C): pass --in_chans to "
                "match the data, or save the arrays with the channels first or last"
            )
        return None
    mode = stored.mode
    if in_chans == 3:
        if mode in WIDE:
            return (
                f"{path} is a 1-channel image of more than 8 bits (mode {mode}): --in_chans 3 converts images to "
                "8-bit RGB, which would clip it. Pass --in_chans 1"
            )
        return None  # the RGB path converts every other mode to RGB, as the official loader does
    if in_chans == 1 and mode in SINGLE_BAND:
        return None
    if in_chans > 1 and mode in MULTI_BAND and stored.channels == in_chans:
        return None
    if mode not in SINGLE_BAND + MULTI_BAND:
        return (
            f"{path} is a mode {mode} image, which is read only as RGB: convert it to grayscale (L, I;16) or to "
            "a .npy array, or pass --in_chans 3"
        )
    return (
        f"{path} has {stored.channels} channel(s) (mode {mode}) but --in_chans is {in_chans}: pass --in_chans "
        f"{stored.channels} or convert the data"
    )


def check_channels(paths: list[str], in_chans: int) -> None:
    """Read the header of every file (a seeded 1,000 of a larger set); ValueError naming the first file whose
    channels are not ``in_chans``, with its mode, or that cannot be read."""
    chosen = paths if len(paths) <= CHECK_ALL_UP_TO else random.Random(0).sample(paths, CHECKED_SAMPLE)
    for path in chosen:
        problem = mismatch(path, probe(path), in_chans)
        if problem is not None:
            raise ValueError(problem)


def _read_array(path: str, in_chans: int) -> Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise unreadable(path, e, "array") from None
    layout = _array_layout(array.shape, in_chans)
    if layout is None:
        raise ValueError(f"{path} has shape {array.shape}, not {in_chans} channel(s): pass --in_chans to match")
    if layout == "HW":
        array = array[None]
    elif layout == "HWC":
        array = array.transpose(2, 0, 1)
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        # Như ToTensor: số nguyên chia cho giá trị lớn nhất của kiểu (255, 65535), trong float32.
        scale = 255.0 if array.dtype == np.uint8 else 65535.0
        return torch.from_numpy(array.astype(np.float32)).div(scale)
    if np.issubdtype(array.dtype, np.floating):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    raise ValueError(
        f"{path} holds {array.dtype} values: save multi-band arrays as uint8, uint16 (scaled by 255 or 65535) or "
        "float32 (used as they are)"
    )


def read_image(path: str, in_chans: int) -> Any:
    """``path`` in its own mode: a Pillow image (``L``, ``I;16``, ``F``, a multi-band mode), or a float32 tensor
    [C, H, W] for a ``.npy`` array. ValueError naming a file that cannot be read or has other channels."""
    if is_array(path):
        return _read_array(path, in_chans)
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise unreadable(path, e) from None
    problem = mismatch(path, Stored(len(img.getbands()), img.mode), in_chans)
    if problem is not None:
        raise ValueError(problem)
    if img.mode == "1":
        return img.convert("L")
    if img.mode == "I":
        low, high = cast(tuple[int, int], img.getextrema())  # one band: (lowest, highest)
        if low < 0 or high > 65535:
            raise ValueError(f"{path} (mode I) holds values {low}..{high}, outside 16 bits: save it as 16-bit or .npy")
        return img.convert("I;16")  # 16-bit PNGs that Pillow opens as 32-bit integers
    if img.mode in ("I;16B", "I;16L"):
        return img.convert("I;16")
    return img


def to_stored_tensor(image: Any) -> Tensor:
    """The last step of every transform here: the stored numbers as [C, H, W] — uint8 (8-bit modes), uint16
    (16-bit), float32 (``F`` images and arrays, already in ``ToTensor``'s scale) — for `normalize.DeviceNormalize`."""
    if isinstance(image, Tensor):
        return image.to(torch.float32)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    array = np.array(array.transpose(2, 0, 1), order="C")  # a writable copy, [C, H, W]
    if array.dtype == np.dtype(">u2"):
        array = array.astype(np.uint16)  # big-endian 16-bit: to this machine's order
    return torch.from_numpy(array)


class ToStoredTensor:
    """`to_stored_tensor` as a transform step (picklable, for the loader's worker processes)."""

    def __call__(self, image: Any) -> Tensor:
        return to_stored_tensor(image)

    def __repr__(self) -> str:
        return "ToStoredTensor()"


def as_unit_float(stored: Tensor) -> Tensor:
    """The stored numbers as ``ToTensor`` scales them, in float64: uint8 ÷ 255, uint16 ÷ 65535, floats as they are."""
    from .normalize import SCALE

    scale = SCALE.get(stored.dtype)
    return stored.to(torch.float64) if scale is None else stored.to(torch.float64) / scale


def has_data_extension(path: str) -> bool:
    """An image (torchvision's extensions) or an array file: what the dataset builders pick up."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return path.lower().endswith(IMG_EXTENSIONS + ARRAY_EXTENSIONS)


def uses_own_modes(in_chans: int, paths: list[str]) -> bool:
    """Whether the data is read here (`Reader`) rather than as RGB: other channels than 3, or arrays."""
    return in_chans != 3 or any(is_array(p) for p in paths)


class Reader:
    """A dataset's loader: `read_image` with ``in_chans`` channels (picklable, for the worker processes)."""

    def __init__(self, in_chans: int) -> None:
        self.in_chans = in_chans

    def __call__(self, path: str) -> Any:
        return read_image(path, self.in_chans)


RGB_ONLY = ("RandAugment", "AutoAugment", "AugMixAugment", "ColorJitter", "RandomGrayscale")


def for_own_modes(transform: Any) -> Any:
    """An RGB transform (a torchvision ``Compose``) for images in their own mode: its crops, flips and resizes
    (which run per channel, in Pillow for images and in torch for arrays) unchanged, its ``PILToTensor`` replaced
    by `ToStoredTensor`. ValueError for an RGB-only step (RandAugment, colour jitter): refused, not dropped."""
    from torchvision import transforms as t

    steps = []
    for step in transform.transforms:
        name = type(step).__name__
        if name in RGB_ONLY:
            flag = "--color_jitter" if "Color" in name or "Gray" in name else "--aa"
            fix = "leave out --color_jitter" if flag == "--color_jitter" else "pass --aa ''"
            raise ValueError(
                f"{flag}: timm's {name} works on 8-bit RGB images only, and this data is read in its own mode "
                f"(--in_chans other than 3, or .npy arrays): {fix}"
            )
        # Cùng phép cắt, lật, phóng to cho mọi kênh; chỉ bước cuối đổi: giữ nguyên kiểu số lưu trong tệp.
        steps.append(ToStoredTensor() if isinstance(step, t.PILToTensor) else step)
    return t.Compose(steps)


def in_own_modes(dataset: Any, in_chans: int) -> None:
    """Check a dataset's files against ``in_chans`` (`check_channels`, before any work) and, where the data is
    not read as RGB (`uses_own_modes`), give it `Reader` and `for_own_modes` of its transform, in place.
    ``dataset.loader`` is then what reads a file (`norm_stats.compute_stats` reads the files through it too)."""
    paths = [path for path, _ in dataset.samples]
    check_channels(paths, in_chans)
    if uses_own_modes(in_chans, paths):
        dataset.loader = Reader(in_chans)
        if dataset.transform is not None:
            dataset.transform = for_own_modes(dataset.transform)
