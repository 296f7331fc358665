"""Every piece of a checkpoint's training state is needed for a resume to continue the run exactly.

A tiny fine-tuning run (RandAugment and random erasing draw from Python's generator, Mixup/CutMix from numpy's,
the crops and the erasing pixels from torch's) is resumed from its epoch-0 checkpoint: as written, the resumed
run ends bit for bit where the straight run ends; with one piece of the saved state replaced by what another
run would hold (AdamW's moments, each generator in turn), it ends elsewhere. So no piece is saved for show,
and none can be dropped unnoticed. The float16 loss scale is the same kind of piece: `test_float16.py` shows a
resume without it differs.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_helpers import TINY_ARGS, classification_argv, make_classification_data, run_quietly
from train_helpers import load_checkpoint as load

from mae.train.run_checkpoint import local_rng_state

MIXUP = ["--mixup", "0.8", "--cutmix", "1.0"]


def other_generators() -> dict[str, torch.Tensor]:
    """Generator states a fresh run would not have had at that point (other seeds), as `rng` rows."""
    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    return {name: row.unsqueeze(0) for name, row in local_rng_state(torch.device("cpu")).items()}


def fresh_optimizer_state(ckpt: dict[str, Any]) -> None:
    ckpt["optimizer"]["state"] = {}  # AdamW's moments and step counts as a new optimizer holds them


def other_generator(*names: str) -> Any:
    def replace(ckpt: dict[str, Any]) -> None:
        other = other_generators()
        for name in names:
            ckpt["rng"][name] = other[name]

    return replace


PIECES = {
    "optimizer moments": fresh_optimizer_state,
    "torch generator": other_generator("cpu"),
    "Python generator": other_generator("python", "python_gauss"),
    "numpy generator": other_generator("numpy", "numpy_gauss"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The data, the pretrained file, a straight 2-epoch run and its epoch-0 checkpoint."""
    root = tmp_path_factory.mktemp("resume_state")
    data = make_classification_data(root / "data")
    code, _, err = run_quietly(
        "pretrain", "--data_path", str(data / "train"), *TINY_ARGS, "--batch_size", "4", "--epochs", "1",
        "--warmup_epochs", "0", "--output_dir", str(root / "pre"),
    )  # fmt: skip
    assert code == 0, err
    argv = classification_argv(
        "finetune", data, root / "straight", *MIXUP, "--finetune", str(root / "pre" / "checkpoint-0.pth"), epochs=2
    )
    code, _, err = run_quietly(*argv)
    assert code == 0, err
    return {"root": root, "data": data, "pre": root / "pre" / "checkpoint-0.pth", "straight": root / "straight"}


def resumed_from(runs: dict[str, Path], name: str, change: Any) -> dict[str, Any]:
    """The straight run's epoch-0 checkpoint, changed by ``change``, resumed to the end: its last checkpoint."""
    out = runs["root"] / name.replace(" ", "_")
    out.mkdir()
    ckpt = load(runs["straight"] / "checkpoint-0.pth")
    if change is not None:
        change(ckpt)
    torch.save(ckpt, out / "checkpoint-0.pth")
    argv = classification_argv("finetune", runs["data"], out, *MIXUP, "--finetune", str(runs["pre"]), epochs=2)
    code, stdout, err = run_quietly(*argv, "--resume", str(out / "checkpoint-0.pth"))
    assert code == 0, err
    assert "continuing at epoch 1" in stdout
    return load(out / "checkpoint-1.pth")


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_checkpoint_as_written_resumes_bit_for_bit(runs: dict[str, Path]) -> None:
    straight = load(runs["straight"] / "checkpoint-1.pth")
    resumed = resumed_from(runs, "as written", None)
    assert same_weights(resumed["model"], straight["model"])


@pytest.mark.parametrize("piece", list(PIECES))
def test_without_each_piece_the_resumed_run_differs(runs: dict[str, Path], piece: str) -> None:
    straight = load(runs["straight"] / "checkpoint-1.pth")
    resumed = resumed_from(runs, piece, PIECES[piece])
    assert not same_weights(resumed["model"], straight["model"]), f"{piece}: the resume did not need it"
