"""Opt-in (``mae pretrain --jpeg_draft``): decode each JPEG at the smallest size that still covers its crop.

libjpeg decodes a JPEG at 1/2, 1/4 or 1/8 of its size in the DCT domain (Pillow's ``Image.draft``), which
costs a fraction of a full decode. Pre-training crops 20-100 % of an image's area and resizes the crop to
``input_size`` (224): from a phone photograph (4000x3000) or a scanner's image, most of the decoded pixels are
averaged away by the resize. Here the random resized crop is drawn first, from the size in the file's header,
with torchvision's own draws in torchvision's order (so the crops, and every later random number, are those
of the default pipeline); then the image is decoded at the largest reduction whose crop still spans at least
twice ``input_size`` pixels on both sides (`REDUCING_GAP`: the bicubic resize still does the last halving or
more), and the crop's box, scaled to the reduced image, is resized to ``input_size`` by the same bicubic
filter.

Departure (opt-in): where a reduction is taken, the pixels differ from the full decode's (the DCT-domain
reduction is another low-pass filter than bicubic antialiasing); held in ``tests/test_jpeg_draft.py`` to the
default pipeline's crops and flips exactly, and to its pixels and per-channel statistics within stated
bounds. Where none is (an image under 4 x ``input_size`` on its short side: an ImageNet-sized JPEG at
224 px), and for files other than JPEG, the output is the default pipeline's, bit for bit.
"""

from __future__ import annotations

from typing import Any

from torchvision import transforms as T
from torchvision.transforms import functional as F

from .image_formats import unreadable

REDUCTIONS = (8, 4, 2)  # the DCT scalings libjpeg offers, largest first
# The reduced crop keeps at least this many times the output's pixels on each side, so that the bicubic resize
# still does most of the shrinking: Pillow's own margin for reducing on decode (``Image.thumbnail``'s
# ``reducing_gap=2.0``). Without it (a gap of 1) the outputs were measurably smoother: their per-channel
# standard deviation 2.4 % lower on the test's noisy scenes.
REDUCING_GAP = 2


def reduction_for(crop_width: int, crop_height: int, output: int) -> int:
    """The largest of 8, 4, 2 (else 1) that leaves the crop at least REDUCING_GAP x ``output`` pixels on both
    sides."""
    for r in REDUCTIONS:
        if crop_width // r >= REDUCING_GAP * output and crop_height // r >= REDUCING_GAP * output:
            return r
    return 1


def open_lazily(path: str) -> Any:
    """The image at ``path``, its header read and its pixels not yet decoded (a dataset's loader), naming the
    file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise unreadable(path, e) from None


def decode_for_crop(image: Any, box: tuple[int, int, int, int], output: int) -> tuple[Any, int]:
    """``image`` (opened, not decoded) decoded as RGB at `reduction_for` its crop ``box`` (left, top, width,
    height, in the full image), and that reduction (1 for a file other than JPEG, or a crop too small)."""
    _, _, width, height = box
    r = reduction_for(width, height, output) if image.format == "JPEG" else 1
    if r > 1:
        # Giải mã JPEG ở 1/r kích thước ngay trong miền DCT: vùng cắt vẫn không nhỏ hơn ảnh đầu ra.
        image.draft("RGB", (image.width // r, image.height // r))
    try:
        image.load()
    except (OSError, ValueError) as e:
        raise unreadable(image.filename, e) from None
    return (image if image.mode == "RGB" else image.convert("RGB")), r


class DraftResizedCrop(T.RandomResizedCrop):  # type: ignore[misc]
    """torchvision's ``RandomResizedCrop`` (bicubic here) over an image opened by `open_lazily`: the crop drawn
    from the header's size exactly as torchvision draws it, the image decoded by `decode_for_crop`."""

    def forward(self, image: Any) -> Any:
        top, left, height, width = self.get_params(image, self.scale, self.ratio)
        full_width, full_height = image.size
        decoded, r = decode_for_crop(image, (left, top, width, height), min(self.size))
        if r == 1:
            return F.resized_crop(decoded, top, left, height, width, self.size, self.interpolation, self.antialias)
        # Toạ độ vùng cắt theo tỉ lệ của ảnh đã thu nhỏ (libjpeg làm tròn kích thước lên).
        sx, sy = decoded.width / full_width, decoded.height / full_height
        scaled = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
        from PIL import Image

        return decoded.resize((self.size[1], self.size[0]), Image.Resampling.BICUBIC, box=scaled)
