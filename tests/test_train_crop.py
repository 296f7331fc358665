"""The linear-probe crop (`mae.train.crop.RandomResizedCropNoRetry`): one draw clamped to the image, the
formula checked independently from the same random draws, and identical to the official `util/crop.py`
(parameters and output pixels) with $MAE_OFFICIAL_REPO."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from mae.train.crop import RandomResizedCropNoRetry
from reference import official

scales = st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted)
ratios = st.tuples(st.floats(0.2, 5.0), st.floats(0.2, 5.0)).map(sorted)


@settings(max_examples=200)
@given(
    width=st.integers(4, 400),
    height=st.integers(4, 400),
    scale=scales,
    ratio=ratios,
    seed=st.integers(0, 2**31 - 1),
)
def test_params_follow_the_formula_from_the_same_draws(
    width: int, height: int, scale: list[float], ratio: list[float], seed: int
) -> None:
    img = torch.empty(3, height, width)
    torch.manual_seed(seed)
    top, left, h, w = RandomResizedCropNoRetry.get_params(img, scale, ratio)

    # The same four draws, in the documented order, then the formula in float64.
    torch.manual_seed(seed)
    fraction = torch.empty(1).uniform_(scale[0], scale[1]).item()
    log_ratio = torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1])).item()
    area = fraction * width * height
    exact_w, exact_h = math.sqrt(area * math.exp(log_ratio)), math.sqrt(area / math.exp(log_ratio))
    for got, exact, side in ((w, exact_w, width), (h, exact_h, height)):
        # Làm tròn tới số gần nhất rồi kẹp theo ảnh; 1e-3 bù sai số float32 của các lần rút.
        assert got == side if exact >= side + 0.5 + 1e-3 else abs(got - exact) <= 0.5 + 1e-3, (got, exact, side)
    assert top == torch.randint(0, height - h + 1, (1,)).item()
    assert left == torch.randint(0, width - w + 1, (1,)).item()
    # Khung cắt nằm trọn trong ảnh.
    assert 0 <= top <= top + h <= height and 0 <= left <= left + w <= width


def test_large_crops_are_clamped_not_redrawn() -> None:
    # scale 1 and a 4:1 aspect ratio never fit: torchvision would retry, then fall back to a centre crop.
    img = torch.empty(3, 50, 60)
    torch.manual_seed(0)
    top, left, h, w = RandomResizedCropNoRetry.get_params(img, [1.0, 1.0], [4.0, 4.0])
    assert (w, h) == (60, round(math.sqrt(3000 / 4)))
    assert left == 0 and 0 <= top <= 50 - h
    # Exactly four draws were made: the next number is the fifth of the stream.
    after = torch.rand(1)
    torch.manual_seed(0)
    torch.rand(4)
    assert torch.equal(after, torch.rand(1))


def test_output_is_the_resized_crop_of_the_drawn_box() -> None:
    img = torch.rand(3, 37, 53)
    crop = RandomResizedCropNoRetry(16, interpolation=InterpolationMode.BICUBIC)
    for seed in range(5):
        torch.manual_seed(seed)
        out = crop(img)
        torch.manual_seed(seed)
        box = RandomResizedCropNoRetry.get_params(img, crop.scale, crop.ratio)
        expected = F.resized_crop(img, *box, [16, 16], InterpolationMode.BICUBIC, antialias=True)
        assert out.shape == (3, 16, 16)
        assert torch.equal(out, expected)


# ------------------------------------------------------------------ the official util/crop.py


@pytest.mark.skipif(official.skip_reason() is not None, reason=str(official.skip_reason()))
@pytest.mark.parametrize("size", [(224, 224), (300, 200), (150, 333), (17, 9), (500, 64)])
def test_identical_to_official(size: tuple[int, int]) -> None:
    theirs = official.official_module("util.crop").RandomResizedCrop(24, interpolation=3)  # 3: PIL bicubic
    ours = RandomResizedCropNoRetry(24, interpolation=InterpolationMode.BICUBIC)
    rng = np.random.default_rng(sum(size))
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    boxes = set()
    with official.training_shims():  # torchvision renamed the `_get_image_size` the official code calls
        for seed in range(40):
            for scale, ratio in (((0.08, 1.0), (3 / 4, 4 / 3)), ((0.5, 1.0), (0.2, 5.0))):
                torch.manual_seed(seed)
                expected = theirs.get_params(img, scale, ratio)
                torch.manual_seed(seed)
                got = ours.get_params(img, scale, ratio)
                assert got == expected, (seed, scale, ratio)
                boxes.add(got)
            torch.manual_seed(seed)
            expected_img = F.pil_to_tensor(theirs(img))
            torch.manual_seed(seed)
            got_img = F.pil_to_tensor(ours(img))
            assert torch.equal(got_img, expected_img), seed
    assert len(boxes) > 40  # the seeds did give different crops
