"""Data beyond 8-bit RGB (`mae.train.image_formats`, `mae.train.norm_stats`): 1-channel grayscale PNGs and 4-band
``.npy`` arrays pre-train (the loss falls below half its start), their checkpoints record the channels and the
``--norm_stats auto`` statistics (equal to numpy's over the same files) and reconstruct in grey / as the chosen
bands; 16-bit values reach the model at their scale; a channel mismatch is refused before any work; the
statistics travel from the pre-training file to fine-tuning and evaluation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import (
    TINY_ARGS,
    TINY_CLASSIFIER_ARGS,
    TINY_CONFIG,
    load_checkpoint,
    make_image_folder,
    run_cli,
    run_quietly,
)

import mae
from mae import reconstruct as rc
from mae.train.norm_stats import stats_from_checkpoint

SIZE, IMAGES, EPOCHS = 32, 32, 6  # 6 epochs of 4 batches of 8: 24 steps, about 2 s each run on one thread
LEARN = ["--batch_size", "8", "--epochs", str(EPOCHS), "--warmup_epochs", "0", "--lr", "1e-2", "--save_every", "100"]
BAND_GAIN = np.array([1.0, -0.8, 0.6, -0.4])  # band k = level x gain_k + offset_k: the bands move together
BAND_OFFSET = np.array([0.0, 0.9, 0.2, 0.6])
Run = tuple[Path, list[np.ndarray], Path, list[float]]  # data folder, its images, last checkpoint, epoch losses


def make_grey(root: Path) -> list[np.ndarray]:
    """``root/img_i.png``: 8-bit grayscale (mode L), a random level per image plus a left-right ramp."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    ramp = np.linspace(-0.1, 0.1, SIZE)
    images = []
    for i in range(IMAGES):
        row = np.clip(rng.uniform(0.1, 0.9) + ramp * rng.choice([-1, 1]), 0, 1)
        pixels = np.broadcast_to(row * 255, (SIZE, SIZE)).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(root / f"img_{i:02d}.png")
        images.append(pixels)
    return images


def make_bands(root: Path) -> list[np.ndarray]:
    """``root/img_i.npy``: 4 float32 bands, constant per image and band, from one random level per image; every
    other file stored (H, W, C), the others (C, H, W). Returns the (C, H, W) arrays."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    arrays = []
    for i in range(IMAGES):
        levels = (rng.uniform(0, 1) * BAND_GAIN + BAND_OFFSET).astype(np.float32)
        array = np.broadcast_to(levels[:, None, None], (4, SIZE, SIZE)).copy()
        np.save(root / f"img_{i:02d}.npy", array.transpose(1, 2, 0) if i % 2 else array)
        arrays.append(array)
    return arrays


def pretrained(root: Path, in_chans: int) -> tuple[Path, list[float]]:
    """A tiny ``mae pretrain --in_chans C --norm_stats auto`` run on ``root``: its last checkpoint, epoch losses."""
    out = root.parent / f"run{in_chans}"
    code, _, err = run_quietly(
        "pretrain", "--data_path", str(root), *TINY_ARGS, "--in_chans", str(in_chans), "--norm_stats", "auto",
        *LEARN, "--output_dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    losses = [json.loads(line)["train_loss"] for line in (out / "log.txt").read_text().splitlines()]
    return out / f"checkpoint-{EPOCHS - 1}.pth", losses


@pytest.fixture(scope="module")
def grey(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("grey") / "data"
    images = make_grey(root)
    return (root, images, *pretrained(root, 1))


@pytest.fixture(scope="module")
def bands(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("bands") / "data"
    arrays = make_bands(root)
    return (root, arrays, *pretrained(root, 4))


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def panel(figure: np.ndarray, index: int, size: int) -> np.ndarray:
    """Panel ``index`` of a figure, back at the model's resolution (each pixel is drawn as a square)."""
    scale = 224 // SIZE
    left, top, right, bottom = rc.panel_box(index, size * scale)
    return figure[top:bottom:scale, left:right:scale]


@pytest.mark.parametrize("which", ["grey", "bands"])
def test_the_loss_falls_below_half_its_start(which: str, request: pytest.FixtureRequest) -> None:
    *_, losses = request.getfixturevalue(which)
    assert losses[-1] < 0.5 * losses[0], losses


def test_auto_statistics_equal_numpys_and_the_checkpoint_records_them(grey: Run, bands: Run) -> None:
    # Written out: every pixel of every file (fewer than the 1,000 sampled), ToTensor's scale, float64, ddof 0.
    pixels = np.stack(grey[1]).astype(np.float64) / 255.0
    stacked = np.stack(bands[1]).astype(np.float64)  # [N, 4, H, W], the stored float32 values
    expected = {
        1: ([pixels.mean()], [pixels.std()]),
        4: (stacked.mean(axis=(0, 2, 3)).tolist(), stacked.std(axis=(0, 2, 3)).tolist()),
    }
    for in_chans, (_, _, checkpoint, _) in ((1, grey), (4, bands)):
        ckpt = load_checkpoint(checkpoint)  # weights_only, as the official loader reads it
        args = ckpt["args"]
        assert args.in_chans == in_chans and type(args.in_chans) is int
        assert type(args.mean) is list and type(args.std) is list and all(type(v) is float for v in args.mean)
        # float64 sums of 32 x 1,024 values in [-1, 1] in another order: within 1e-12 of each other.
        np.testing.assert_allclose(args.mean, expected[in_chans][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(args.std, expected[in_chans][1], rtol=0, atol=1e-12)
        assert stats_from_checkpoint(ckpt) == (args.mean, args.std, in_chans)
        assert ckpt["model"]["patch_embed.proj.weight"].shape[1] == in_chans


def test_a_grey_checkpoint_reconstructs_in_grey_with_its_statistics(
    grey: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, images, checkpoint, _ = grey
    out = tmp_path / "r.png"
    code, _, err = run_cli(
        capsys, "reconstruct", str(root / "img_03.png"), "--checkpoint", str(checkpoint), "-o", str(out)
    )
    assert code == 0, err
    figure = read_png(out)
    panels = [panel(figure, i, SIZE) for i in range(4)]
    for p in panels:
        assert (p[..., 0] == p[..., 1]).all() and (p[..., 1] == p[..., 2]).all()  # grey: R = G = B
    assert (panels[0][..., 0] == images[3]).all()
    # The reconstruction written out: the image normalised with numpy's statistics of the data, the model's
    # prediction under the demo's seed, un-normalised with the same statistics.
    pixels = np.stack(images).astype(np.float64) / 255.0
    mean, std = float(pixels.mean()), float(pixels.std())
    model = mae.create_model("mae_vit_base_patch16", checkpoint_path=checkpoint, **TINY_CONFIG, in_chans=1).eval()
    x = (torch.from_numpy(images[3]).float()[None, None] / 255.0 - mean) / std
    with torch.no_grad():
        torch.manual_seed(2)
        _, pred, _ = model(x, mask_ratio=0.75)
    drawn = ((model.unpatchify(pred)[0, 0] * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert np.abs(panels[2][..., 0].astype(int) - drawn.astype(int)).max() <= 1  # float32 rounding at .5


def test_a_four_band_checkpoint_reconstructs_the_chosen_bands(
    bands: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, arrays, checkpoint, _ = bands
    for chosen, file in (("3,2,1", "img_03.npy"), ("0", "img_04.npy")):  # an (H, W, C) file, then a (C, H, W) one
        out = tmp_path / f"{chosen}.png"
        code, out_text, err = run_cli(
            capsys, "reconstruct", str(root / file), "--checkpoint", str(checkpoint), "-o", str(out), "--bands", chosen
        )
        assert code == 0, err
        assert "4 channel(s)" in out_text
        original = panel(read_png(out), 0, SIZE).astype(int)
        index = int(file[4:6])
        picked = [int(b) for b in chosen.split(",")]
        expected = np.round(np.clip(arrays[index][picked], 0, 1) * 255).astype(int).transpose(1, 2, 0)
        if len(picked) == 1:
            expected = np.repeat(expected, 3, axis=2)
        assert np.abs(original - expected).max() <= 1
    code, _, err = run_cli(capsys, "reconstruct", str(root / "img_03.npy"), "--checkpoint", str(checkpoint),
                           "-o", str(tmp_path / "x.png"), "--bands", "4,2,1")  # fmt: skip
    assert code == 1 and "channels 0..3" in err


def test_sixteen_bit_values_reach_the_model_at_their_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    values = [1000, 40000, 65535, 30000]  # 40000 and 65535 overflow int16; none fits 8 bits
    (tmp_path / "data").mkdir()
    for i, v in enumerate(values):
        Image.fromarray(np.full((SIZE, SIZE), v, dtype=np.uint16)).save(tmp_path / "data" / f"{i}.png")
    assert Image.open(tmp_path / "data" / "1.png").mode in ("I;16", "I")  # a 16-bit PNG, as Pillow reads it
    seen: list[torch.Tensor] = []
    forward = mae.MaskedAutoencoderViT.forward

    def recording(self: mae.MaskedAutoencoderViT, imgs: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(imgs.detach().clone())
        return forward(self, imgs, *args, **kwargs)

    monkeypatch.setattr(mae.MaskedAutoencoderViT, "forward", recording)
    code, _, err = run_cli(
        capsys, "pretrain", "--data_path", str(tmp_path / "data"), *TINY_ARGS, "--in_chans", "1",
        "--mean", "0.5", "--std", "0.25", "--batch_size", "2", "--epochs", "1", "--warmup_epochs", "0",
        "--output_dir", "",
    )  # fmt: skip
    assert code == 0, err
    batch = torch.cat(seen)
    assert batch.shape == (4, 1, SIZE, SIZE) and batch.dtype == torch.float32
    # A constant image stays constant through the crop and bicubic resize; each reaches the model as
    # (v / 65535 - 0.5) / 0.25, computed here in float64 (within float32's rounding of two operations).
    per_image = batch.flatten(1)
    assert (per_image.max(1).values - per_image.min(1).values).abs().max() <= 4 / 65535 / 0.25
    expected = sorted((v / 65535 - 0.5) / 0.25 for v in values)
    np.testing.assert_allclose(sorted(per_image.mean(1).tolist()), expected, rtol=0, atol=1e-5)


def make_rgb(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "rgb", classes=0, per_class=4, size=SIZE)


def make_wide(tmp_path: Path) -> Path:
    (tmp_path / "wide").mkdir()
    Image.fromarray(np.full((SIZE, SIZE), 40000, dtype=np.uint16)).save(tmp_path / "wide" / "a.png")
    return tmp_path / "wide"


def make_four(tmp_path: Path) -> Path:
    (tmp_path / "four").mkdir()
    np.save(tmp_path / "four" / "a.npy", np.zeros((4, SIZE, SIZE), np.float32))
    return tmp_path / "four"


@pytest.mark.parametrize(
    ("make", "in_chans", "says"),
    [
        (make_rgb, "1", "img_0.png has 3 channel(s) (mode RGB) but --in_chans is 1"),
        (make_wide, "3", "a.png is a 1-channel image of more than 8 bits (mode I;16)"),
        (make_four, "3", "a.npy is npy float32 (4, 32, 32), not 3 channel(s)"),
        (make_four, "1", "a.npy is npy float32 (4, 32, 32), not 1 channel(s)"),
    ],
)
def test_a_channel_mismatch_is_refused_before_any_work(
    make: Callable[[Path], Path], in_chans: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "pretrain", "--data_path", str(data), *TINY_ARGS, "--in_chans", in_chans,
        "--mean", *["0.5"] * int(in_chans), "--std", *["0.2"] * int(in_chans), "--batch_size", "1", "--epochs", "1",
        "--output_dir", str(out),
    )  # fmt: skip
    assert code == 1 and says in err, err
    assert not out.exists()  # no output folder: refused before any work


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--in_chans", "4"], "give --mean and --std with 4 value(s) each, or --norm_stats auto"),
        (["--in_chans", "2", "--mean", "0.5", "--std", "0.2"], "--mean has 1 value(s) but the data has 2 channel(s)"),
        (["--in_chans", "1", "--mean", "0.5"], "--mean needs --std too"),
        (["--norm_stats", "auto", "--mean", "0.1", "0.2", "0.3"], "pass one or the other, not both"),
    ],
)
def test_statistics_flags_are_checked_before_any_work(
    flags: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "pretrain", "--data_path", str(tmp_path), *TINY_ARGS, *flags, "--output_dir", str(tmp_path / "o")
    )
    assert code == 1 and says in err, err
    code, _, err = run_cli(
        capsys, "pretrain", "--data_path", str(tmp_path), *TINY_ARGS[:2], "--model_args", "in_chans=1"
    )
    assert code == 1 and "use --in_chans instead" in err


def test_fine_tuning_takes_the_files_channels_and_statistics_and_evaluate_reads_them(
    grey: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, images, checkpoint, _ = grey
    data = tmp_path / "cls"
    for split in ("train", "val"):  # two classes of the pre-training images, by level
        for i, pixels in enumerate(images[:16] if split == "train" else images[16:24]):
            folder = data / split / ("dark" if pixels.mean() < 128 else "light")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    common = [*TINY_CLASSIFIER_ARGS, "--finetune", str(checkpoint), "--epochs", "1", "--warmup_epochs", "0"]
    code, _, err = run_cli(capsys, "finetune", "--data_path", str(data), *common, "--output_dir", str(tmp_path / "r"))
    assert code == 1 and "RandAugment works on 8-bit RGB images only" in err and "--aa ''" in err
    assert not (tmp_path / "r").exists()
    code, _, err = run_cli(capsys, "finetune", "--data_path", str(data), *common, "--model_args", "in_chans=1")
    assert code == 1 and "use --in_chans instead" in err
    out = tmp_path / "ft"
    code, _, err = run_cli(capsys, "finetune", "--data_path", str(data), *common, "--aa", "", "--output_dir", str(out))
    assert code == 0, err
    recorded = load_checkpoint(checkpoint)["args"]
    args = load_checkpoint(out / "checkpoint-0.pth")["args"]
    assert (args.in_chans, args.mean, args.std) == (1, recorded.mean, recorded.std)  # the --finetune file's
    code, text, err = run_cli(capsys, "evaluate", str(out / "checkpoint-best.pth"), "--data_path", str(data),
                              "--device", "cpu", "--num_workers", "0", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(text.strip().splitlines()[-1])
    assert (result["in_chans"], result["mean"], result["std"]) == (1, recorded.mean, recorded.std)
    assert result["images"] == 8


def test_only_a_command_with_norm_stats_offers_it() -> None:
    from mae.train.norm_stats import resolve_flags

    for offer in (True, False):
        for mean, std in ((None, None), ([0.5], None)):
            with pytest.raises(ValueError) as e:
                resolve_flags(1, mean, std, auto=False, offer_auto=offer)
            assert ("--norm_stats auto" in str(e.value)) is offer, str(e.value)
