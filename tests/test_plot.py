"""``OUTPUT/log.txt`` of `mae pretrain` and ``mae plot``, which draws it.

- log.txt is one JSON line per epoch with ``epoch``, ``train_loss`` and ``train_lr``; ``train_lr`` is the
  mean over the epoch's iterations of the official schedule (computed here independently: linear warmup,
  then half-cycle cosine at the fractional epoch, set at accumulation boundaries);
- ``mae plot OUT/log.txt -o x.png`` writes a real picture (a PNG, not blank, a few KB);
- a log that is not JSON is refused naming the line; a missing file or a log without training records
  too, and no picture is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import TINY_ARGS, make_image_folder, run_cli

import mae.cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS, WARMUP, BATCH, ACCUM, IMAGES, BLR = 3, 1, 4, 2, 16, 1e-3


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a tiny 3-epoch run (trained once for this file)."""
    root = tmp_path_factory.mktemp("plot")
    data = make_image_folder(root / "data", classes=2, per_class=IMAGES // 2)
    argv = ["pretrain", "--data_path", str(data), *TINY_ARGS, "--output_dir", str(root / "out")]
    argv += ["--batch_size", str(BATCH), "--accum_iter", str(ACCUM), "--blr", str(BLR)]
    argv += ["--epochs", str(EPOCHS), "--warmup_epochs", str(WARMUP)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as train_helpers.run_cli: faster for a tiny model on a busy machine
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert mae.cli.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "out"


def official_lr(t: float, lr: float) -> float:
    """The official ``util/lr_sched.adjust_learning_rate`` at the fractional epoch ``t`` (min_lr 0)."""
    if t < WARMUP:
        return lr * t / WARMUP
    return lr * 0.5 * (1.0 + math.cos(math.pi * (t - WARMUP) / (EPOCHS - WARMUP)))


def test_log_has_one_json_line_per_epoch_with_the_official_lr(run: Path) -> None:
    lines = (run / "log.txt").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == list(range(EPOCHS))
    steps = IMAGES // BATCH
    lr = BLR * BATCH * ACCUM / 256
    for r in records:
        assert {"train_loss", "train_lr", "epoch"} <= r.keys()
        assert math.isfinite(r["train_loss"]) and r["train_loss"] > 0
        # The lr of each iteration is the one set at the last accumulation boundary.
        per_step = [official_lr(r["epoch"] + (s - s % ACCUM) / steps, lr) for s in range(steps)]
        assert r["train_lr"] == pytest.approx(sum(per_step) / steps, rel=1e-12, abs=0)


def test_plot_writes_a_real_picture(capsys: pytest.CaptureFixture[str], run: Path, tmp_path: Path) -> None:
    picture = tmp_path / "x.png"
    code, out, err = run_cli(capsys, "plot", str(run / "log.txt"), "-o", str(picture))
    assert code == 0, err
    assert out == f"wrote {picture}\n"
    raw = picture.read_bytes()
    assert raw.startswith(PNG_SIGNATURE) and len(raw) > 10_000
    with Image.open(picture) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 2 * pixels.shape[0]  # two panels side by side
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, axes and curves, not one colour
    # Both curves are drawn: the default blue (loss, left) and orange (lr, right) of matplotlib.
    half = pixels.shape[1] // 2
    assert (np.abs(pixels[:, :half].astype(int) - (31, 119, 180)).sum(-1) < 30).sum() > 100
    assert (np.abs(pixels[:, half:].astype(int) - (255, 127, 14)).sum(-1) < 30).sum() > 100
    # The folder works as well as its log.txt.
    code, _, err = run_cli(capsys, "plot", str(run), "-o", str(tmp_path / "y.png"))
    assert code == 0 and (tmp_path / "y.png").read_bytes().startswith(PNG_SIGNATURE), err


def test_a_log_that_is_not_json_names_the_line(capsys: pytest.CaptureFixture[str], run: Path, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text((run / "log.txt").read_text() + "epoch 4: loss 0.91\n")
    code, out, err = run_cli(capsys, "plot", str(log), "-o", str(tmp_path / "x.png"))
    assert code == 1 and out == ""
    assert err.startswith(f"mae plot: error: {log}, line {EPOCHS + 1}, is not JSON"), err
    assert not (tmp_path / "x.png").exists()


def test_a_missing_or_foreign_log_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "plot", str(tmp_path / "nowhere" / "log.txt"), "-o", str(tmp_path / "x.png"))
    assert code == 1
    assert err.startswith(f"mae plot: error: {tmp_path / 'nowhere' / 'log.txt'} does not exist"), err
    other = tmp_path / "metrics.jsonl"
    other.write_text('{"step": 1, "accuracy": 0.5}\n')
    code, _, err = run_cli(capsys, "plot", str(other), "-o", str(tmp_path / "x.png"))
    assert code == 1 and "has no records with 'epoch' and 'train_loss'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
