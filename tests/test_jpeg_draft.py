"""``mae pretrain --jpeg_draft`` (`mae/train/jpeg_draft.py`): JPEGs decoded at a reduced size where the crop
allows, with the default pipeline's crops, flips and random numbers, and its pixels within stated bounds.

The images are made here: 800x600 scenes with a natural photograph's spectrum (`scene`), saved as JPEG
(quality 90); the crops are resized to 96 px, so crops spanning 384 pixels or more are decoded at 1/2 (768 or
more: 1/4). Measured on a Xeon: 15 of 18 crops reduced; every reduced image's PSNR against the full decode's
42.8 dB or more (with the other flip: about 10 dB), mean absolute difference at most 1.41 of 255, the
per-channel means 0.008 apart and standard deviations 0.6 % apart. The bounds below: 35 dB, 2.0, 0.5 and 2 %.
(On scenes of white pixel noise, the worst case for any two low-pass filters, the standard deviations were
2.2 % apart with the reducing gap of 2, 2.4 % without it.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import pretrain, run_cli

from mae.train import jpeg_draft
from mae.train.data import build_pretrain_dataset
from mae.train.jpeg_draft import reduction_for

SIZE = 96


def scene(width: int, height: int, seed: int) -> Image.Image:
    """A natural-image-like scene: random phases, amplitude falling as 1/f per channel (the spectrum of natural
    photographs, Field 1987), channels partly shared (as colours are), scaled to 0-255."""
    r = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(width, height))
    shared = r.normal(size=(height, fx.shape[1])) + 1j * r.normal(size=(height, fx.shape[1]))
    channels = []
    for _ in range(3):
        own = r.normal(size=shared.shape) + 1j * r.normal(size=shared.shape)
        channels.append(np.fft.irfft2(amplitude * (shared + 0.5 * own), s=(height, width)))
    img = np.stack(channels, axis=-1)
    img = (img - img.mean()) / (4 * img.std()) * 255 + 127.5
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA/photos: 6 large JPEGs, one small JPEG (no crop spans 192 px) and one large PNG (not a JPEG)."""
    root = tmp_path_factory.mktemp("jpeg_draft")
    folder = root / "photos"
    folder.mkdir()
    for i in range(6):
        scene(800, 600, i).save(folder / f"{i}.jpg", quality=90)
    scene(150, 120, 6).save(folder / "small.jpg", quality=90)
    scene(800, 600, 7).save(folder / "large.png")
    return root


def test_the_reduction_keeps_the_crop_at_least_the_output() -> None:
    """The crop, reduced, keeps at least twice the output on both sides (Pillow's reducing gap for thumbnails)."""
    assert reduction_for(4000, 3000, 224) == 4  # 3000 / 8 = 375 < 448 <= 750
    assert reduction_for(7168, 3584, 224) == 8
    assert reduction_for(896, 896, 224) == 2 and reduction_for(895, 896, 224) == 1
    assert reduction_for(500, 375, 224) == 1  # no crop of an ImageNet-sized JPEG is reduced at 224 px


def items(dataset: Any, passes: int = 3) -> tuple[list[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    out = [dataset[i][0] for _ in range(passes) for i in range(len(dataset))]
    return out, torch.get_rng_state()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.double() - b.double()) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def test_same_crops_and_draws_as_the_default_and_pixels_within_bounds(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reductions: list[int] = []
    sizes: list[tuple[int, int]] = []
    decode = jpeg_draft.decode_for_crop

    def recorded(image: Any, box: tuple[int, int, int, int], output: int) -> tuple[Any, int]:
        decoded, r = decode(image, box, output)
        reductions.append(r)
        sizes.append(decoded.size)
        return decoded, r

    monkeypatch.setattr(jpeg_draft, "decode_for_crop", recorded)
    default = build_pretrain_dataset(data, SIZE)
    drafted = build_pretrain_dataset(data, SIZE, jpeg_draft=True)
    names = [Path(p).name for p, _ in drafted.samples] * 3
    theirs, their_state = items(default)
    ours, our_state = items(drafted)
    assert torch.equal(our_state, their_state)  # the same draws, in the same order: every later number agrees
    taken = {name: r for name, r in zip(names, reductions, strict=True)}
    assert taken["large.png"] == 1 and taken["small.jpg"] == 1
    assert {r for name, r in zip(names, reductions, strict=True) if name.endswith(".jpg")} >= {2}
    for name, r, size in zip(names, reductions, sizes, strict=True):  # really decoded at 1/r (libjpeg rounds up)
        assert size == ((800 + r - 1) // r, (600 + r - 1) // r) if name != "small.jpg" else size == (150, 120)
    for name, a, b, r in zip(names, ours, theirs, reductions, strict=True):
        assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape == (3, SIZE, SIZE)
        if r == 1:
            assert torch.equal(a, b), name  # nothing reduced: the default pipeline's pixels, bit for bit
        else:
            assert psnr(a, b) >= 35.0, (name, psnr(a, b))
            assert psnr(a, b) > psnr(a, b.flip(-1)) + 10  # the same flip
            assert (a.double() - b.double()).abs().mean() <= 2.0
    reduced = [i for i, r in enumerate(reductions) if r > 1]
    a, b = torch.stack([ours[i] for i in reduced]).double(), torch.stack([theirs[i] for i in reduced]).double()
    assert ((a.mean((0, 2, 3)) - b.mean((0, 2, 3))).abs() <= 0.5).all()
    assert ((a.std((0, 2, 3)) / b.std((0, 2, 3)) - 1).abs() <= 0.02).all()


def test_jpeg_draft_is_refused_for_data_in_its_own_mode(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--in_chans", "1", "--norm_stats", "auto", "--jpeg_draft", "--output_dir", str(tmp_path / "out")]
    code, _, err = run_cli(capsys, "pretrain", "--data_path", str(data), *flags)
    assert code != 0 and "--jpeg_draft decodes 8-bit RGB JPEGs; --in_chans 1 data" in err
    assert not (tmp_path / "out").exists()  # refused before any work
    (data / "extra").mkdir(exist_ok=True)
    np.save(data / "extra" / "band.npy", np.zeros((3, 40, 40), dtype=np.float32))
    try:
        with pytest.raises(ValueError, match="--jpeg_draft decodes 8-bit RGB images"):
            build_pretrain_dataset(data, SIZE, jpeg_draft=True)
    finally:
        (data / "extra" / "band.npy").unlink()
        (data / "extra").rmdir()


def test_pretraining_with_jpeg_draft_runs_and_says_so(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = pretrain(capsys, data, tmp_path / "out", "--jpeg_draft", epochs=1)
    assert code == 0, err
    assert "JPEGs decoded at a reduced size where their crop allows (--jpeg_draft)" in out
