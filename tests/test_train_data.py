"""The images `mae pretrain` reads, and the data problems it reports before any training.

- ``--data_path DATA`` reads ``DATA/train`` when it exists (the official layout), else ``DATA``; a flat folder
  of images (no class sub-folders) is read too;
- a missing or empty folder, a folder with no images, an image that cannot be opened, a batch larger than
  the data, or more accumulation steps than batches: exit code 1, a message naming the problem (and the
  file), nothing printed on stdout (the model was never built) and nothing written in the output folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from train_helpers import make_image_folder, pretrain

from mae.train import pretrain as pretrain_module


def images_read(out: str) -> tuple[int, str]:
    """(number of images, dataset kind) from the set-up summary on stdout."""
    found = re.search(r"^data: (\d+) images \((\w+)\)", out, flags=re.MULTILINE)
    assert found, out
    return int(found.group(1)), found.group(2)


def test_data_train_is_read_when_it_exists(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "imagenet"
    make_image_folder(data / "train", classes=2, per_class=4)
    make_image_folder(data / "val", classes=3, per_class=5, seed=1)  # 15 images that must not be read
    code, out, err = pretrain(capsys, data, "", epochs=1)
    assert code == 0, err
    assert images_read(out) == (8, "ImageFolder")
    # Without a train/ sub-folder, DATA itself is the image folder (here its class folders are train/ and val/).
    code, out, err = pretrain(capsys, data / "val", "", epochs=1)
    assert code == 0, err
    assert images_read(out) == (15, "ImageFolder")


def test_a_flat_folder_of_images_trains(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "flat", classes=0, per_class=9)
    (data / "notes.txt").write_text("not an image")
    code, out, err = pretrain(capsys, data, tmp_path / "out", epochs=1)
    assert code == 0, err
    assert images_read(out) == (9, "ImageFiles")
    assert (tmp_path / "out" / "checkpoint-0.pth").is_file()


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an epoch starts."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(pretrain_module, "train_one_epoch", refuse)


def missing(root: Path) -> tuple[Path, list[str]]:
    return root / "nowhere", [f"--data_path {root / 'nowhere'} does not exist"]


def empty(root: Path) -> tuple[Path, list[str]]:
    (root / "empty").mkdir()
    return root / "empty", [f"{root / 'empty'} is empty"]


def empty_train(root: Path) -> tuple[Path, list[str]]:
    (root / "data" / "train").mkdir(parents=True)
    make_image_folder(root / "data" / "val", classes=1, per_class=4)  # not read: DATA/train exists
    return root / "data", [str(root / "data" / "train"), "is empty"]


def text_files_only(root: Path) -> tuple[Path, list[str]]:
    (root / "docs" / "a").mkdir(parents=True)
    (root / "docs" / "readme.txt").write_text("no images here")
    (root / "docs" / "a" / "list.txt").write_text("nor here")
    return root / "docs", ["holds no images", ".png", "readme.txt"]


def garbage_image(root: Path) -> tuple[Path, list[str]]:
    data = make_image_folder(root / "data", classes=2, per_class=4)
    bad = data / "class_1" / "img_2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a PNG signature, then garbage
    return data, [f"cannot read image {bad}", "Remove or replace the file"]


def garbage_image_flat(root: Path) -> tuple[Path, list[str]]:
    data = make_image_folder(root / "flat", classes=0, per_class=4)
    bad = data / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    return data, [f"cannot read image {bad}"]


DATA_PROBLEMS = {
    "missing folder": (missing, []),
    "empty folder": (empty, []),
    "empty DATA/train": (empty_train, []),
    "only text files": (text_files_only, []),
    "unreadable image": (garbage_image, []),
    "unreadable image, flat folder": (garbage_image_flat, []),
    "batch larger than the data": (
        lambda root: (make_image_folder(root / "data", 2, 4), ["--batch_size 16 is larger", "8 images", "8 or less"]),
        ["--batch_size", "16"],
    ),
    "accum_iter over the batches": (
        lambda root: (make_image_folder(root / "data", 2, 6), ["an epoch has 3 batches", "--accum_iter is 4"]),
        ["--accum_iter", "4"],
    ),
}


@pytest.mark.parametrize("make, flags", list(DATA_PROBLEMS.values()), ids=list(DATA_PROBLEMS))
@pytest.mark.usefixtures("no_training")
def test_data_problems_fail_before_any_work(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make: Any,
    flags: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    data, says = make(tmp_path)
    out_dir = tmp_path / "out"
    code, out, err = pretrain(capsys, data, out_dir, *flags)
    assert code == 1
    assert err.startswith("mae pretrain: error: ") and err.count("\n") == 1, err
    for text in says:
        assert text in err, (text, err)
    assert out == ""  # the set-up summary (printed once the model is built) was never reached
    assert not out_dir.exists() or not any(out_dir.iterdir())
