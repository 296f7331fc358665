"""The shims `reference.official` applies while the official code runs, checked without a checkout (they
patch the libraries, not the official code)."""

from __future__ import annotations

import pytest

from reference import official


def test_posterize_keeps_working_at_zero_bits_while_the_official_code_runs() -> None:
    """RandAugment ``rand-m9-mstd0.5`` draws posterize's top magnitude about once in 500 images: 0 bits kept,
    which current Pillow refuses. While the official code runs (the shims), timm's op returns the black image
    the Pillow of 2022 gave; after, timm's own op is back."""
    import numpy as np
    import timm.data.auto_augment as auto_augment
    from PIL import Image

    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    with pytest.raises(ValueError, match="bits must be between"):
        auto_augment.NAME_TO_OP["PosterizeIncreasing"](img, 0)
    with official.training_shims():
        black = auto_augment.NAME_TO_OP["PosterizeIncreasing"](img, 0)
        assert black.mode == img.mode and black.size == img.size and not np.asarray(black).any()
        assert auto_augment.NAME_TO_OP["Posterize"](img, 8) is img
        assert np.array_equal(np.asarray(auto_augment.NAME_TO_OP["Posterize"](img, 4)), np.asarray(img) & 0xF0)
    assert auto_augment.NAME_TO_OP["PosterizeIncreasing"] is auto_augment.posterize
