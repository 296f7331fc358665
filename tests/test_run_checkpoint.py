"""The checkpoints of `mae pretrain`: official layout, exact resume, atomic writes, and a NaN loss.

- a run interrupted in the middle of an epoch and resumed from its folder ends bit for bit where the
  uninterrupted run ends (weights, optimizer state, generators, log), with gradient accumulation, and with
  worker processes loading the data;
- ``--resume FOLDER`` takes the latest checkpoint; resuming a finished run trains nothing; resuming with
  another model is a clear error;
- ``checkpoint-N.pth`` holds the official entries (+ ``rng``), loads with ``weights_only=True``, has the
  optimizer groups of timm's ``param_groups_weight_decay`` and is a full checkpoint for `mae.create_model`;
- saving follows the official rule (every ``--save_every`` epochs, and the last), never leaves a
  half-written file, and ``--output_dir ''`` writes nothing;
- a NaN loss stops the run naming the epoch and iteration and the checkpoint to resume from, which loads.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import TINY_CONFIG, TINY_MODEL_ARGS, assert_same, make_image_folder, pretrain
from train_helpers import load_checkpoint as load

import mae
from mae.train import run_checkpoint

ENTRIES = {"model", "optimizer", "epoch", "scaler", "args", "rng"}  # the official five, and rng
STEPS = 4  # the `data` fixture: 16 images in batches of 4


def log_records(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out_dir / "log.txt").read_text().splitlines()]


def files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


def break_forward_at(monkeypatch: pytest.MonkeyPatch, call: int, failure: str) -> None:
    """Make the ``call``-th MAE forward (counted from 1) return a NaN loss, or raise KeyboardInterrupt."""
    original = mae.MaskedAutoencoderViT.forward
    calls = 0

    def forward(self: mae.MaskedAutoencoderViT, imgs: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        loss, pred, mask = original(self, imgs, *args, **kwargs)
        if calls == call:
            if failure == "interrupt":
                raise KeyboardInterrupt  # as Ctrl-C in the middle of an epoch
            loss = loss * math.nan
        return loss, pred, mask

    monkeypatch.setattr(mae.MaskedAutoencoderViT, "forward", forward)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data", classes=2, per_class=8)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_interrupted_run_resumes_bit_for_bit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, workers: int
) -> None:
    flags = ("--accum_iter", "2", "--num_workers", str(workers))
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    code, _, err = pretrain(capsys, data, straight, *flags)
    assert code == 0, err
    with pytest.MonkeyPatch.context() as patch:
        break_forward_at(patch, STEPS + 3, "interrupt")  # epoch 1, after one optimizer step of two
        code, _, err = pretrain(capsys, data, cut, *flags)
    assert code == 130 and f"interrupted; the last checkpoint is {cut / 'checkpoint-0.pth'}" in err
    assert sorted(files(cut)) == ["checkpoint-0.pth", "log.txt"]
    code, out, err = pretrain(capsys, data, cut, *flags, "--resume", str(cut))
    assert code == 0, err
    assert "resume: continuing at epoch 1" in out and "random-generator state restored" in out
    for epoch in (0, 1):
        a, b = load(straight / f"checkpoint-{epoch}.pth"), load(cut / f"checkpoint-{epoch}.pth")
        for entry in ("model", "optimizer", "scaler", "epoch", "rng"):
            assert_same(a[entry], b[entry], f"epoch {epoch}: {entry}")
    assert not torch.equal(load(cut / "checkpoint-0.pth")["rng"]["cpu"], load(cut / "checkpoint-1.pth")["rng"]["cpu"])
    a_log, b_log = log_records(straight), log_records(cut)
    assert [r["epoch"] for r in a_log] == [r["epoch"] for r in b_log] == [0, 1]
    assert [r["train_loss"] for r in a_log] == [r["train_loss"] for r in b_log]
    assert [r["train_lr"] for r in a_log] == [r["train_lr"] for r in b_log]


def test_resume_takes_the_latest_and_a_finished_run_has_nothing_to_train(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    out_dir = tmp_path / "out"
    assert pretrain(capsys, data, out_dir, "--save_every", "1")[0] == 0
    before = files(out_dir)
    assert sorted(before) == ["checkpoint-0.pth", "checkpoint-1.pth", "log.txt"]
    code, out, err = pretrain(capsys, data, out_dir, "--resume", str(out_dir))
    assert code == 0, err
    assert "nothing to train: epoch 2 is past --epochs 2; raise --epochs to go on" in out
    assert files(out_dir) == before
    code, out, err = pretrain(capsys, data, out_dir, "--resume", str(out_dir), epochs=3)
    assert code == 0, err
    assert "resume: continuing at epoch 2" in out
    assert sorted(files(out_dir)) == ["checkpoint-0.pth", "checkpoint-1.pth", "checkpoint-2.pth", "log.txt"]
    assert [r["epoch"] for r in log_records(out_dir)] == [0, 1, 2]


def test_overwrite_starts_afresh_without_the_earlier_runs_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    out_dir = tmp_path / "out"
    assert pretrain(capsys, data, out_dir, "--save_every", "1", epochs=3)[0] == 0
    code, _, err = pretrain(capsys, data, out_dir, "--overwrite", epochs=1)
    assert code == 0, err
    # Nothing of the 3-epoch run is left to mix with this one (a later --resume would take its checkpoint-2).
    assert sorted(files(out_dir)) == ["checkpoint-0.pth", "log.txt"]
    assert [r["epoch"] for r in log_records(out_dir)] == [0]
    assert load(out_dir / "checkpoint-0.pth")["args"].epochs == 1


def test_resume_folder_is_ordered_by_epoch_number(tmp_path: Path) -> None:
    for name in ("checkpoint-2.pth", "checkpoint-10.pth", "checkpoint-9.pth", "checkpoint-best.pth", "log.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".checkpoint-11.pth.123.tmp").write_bytes(b"")  # a save that was killed
    (tmp_path / "checkpoint-12.pth").mkdir()  # not a file
    assert run_checkpoint.resolve_resume(str(tmp_path)) == tmp_path / "checkpoint-10.pth"
    assert run_checkpoint.resolve_resume(str(tmp_path / "checkpoint-2.pth")) == tmp_path / "checkpoint-2.pth"
    with pytest.raises(mae.CheckpointError, match=r"holds no checkpoint-N\.pth"):
        run_checkpoint.resolve_resume(str(tmp_path / "checkpoint-12.pth"))


def test_resuming_with_another_model_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    assert pretrain(capsys, data, tmp_path / "first", epochs=1)[0] == 0
    saved = tmp_path / "first" / "checkpoint-0.pth"
    wider = [a.replace("embed_dim=32", "embed_dim=48") for a in TINY_MODEL_ARGS]
    other = tmp_path / "other"
    code, out, err = pretrain(capsys, data, other, "--model_args", *wider, "--resume", str(saved))
    assert code == 1
    assert err.startswith(f"mae pretrain: error: {saved}: ") and "dim 32" in err and "dim 48" in err, err
    assert not run_checkpoint.checkpoints_in(other) and "epoch 1/" not in out


def test_checkpoints_have_the_official_layout(capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path) -> None:
    import timm.optim as timm_optim

    out_dir = tmp_path / "out"
    assert pretrain(capsys, data, out_dir, "--weight_decay", "0.07", epochs=1)[0] == 0
    path = out_dir / "checkpoint-0.pth"
    ckpt = load(path)  # weights_only=True: tensors and plain values only, and the official Namespace
    assert set(ckpt) == ENTRIES
    assert ckpt["epoch"] == 0 and isinstance(ckpt["args"], argparse.Namespace)
    assert ckpt["args"].weight_decay == 0.07 and ckpt["args"].model == "mae_vit_base_patch16"
    # float32: trạng thái của một GradScaler bật còn mới, không phải {} của scaler tắt (test_checkpoint_scaler.py).
    assert ckpt["scaler"] == torch.amp.GradScaler("cpu", enabled=True).state_dict()
    assert ckpt["rng"]["cpu"].shape == (1, torch.get_rng_state().numel())

    # Optimizer: timm's groups (what the official script builds), [no decay, decay], named_parameters order.
    model = mae.create_model("mae_vit_base_patch16", **TINY_CONFIG)
    groups = timm_optim.param_groups_weight_decay(model, 0.07)
    saved = ckpt["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in saved] == [g["weight_decay"] for g in groups] == [0.0, 0.07]
    assert [len(g["params"]) for g in saved] == [len(g["params"]) for g in groups]
    order = [i for g in saved for i in g["params"]]
    assert order == list(range(len(order)))
    state = ckpt["optimizer"]["state"]
    assert [state[i]["exp_avg"].shape for i in order] == [p.shape for g in groups for p in g["params"]]

    # A full checkpoint for `create_model` and `load_pretrained`: every tensor from the file.
    built = mae.create_model("mae_vit_base_patch16", checkpoint_path=path, **TINY_CONFIG)
    assert built.load_report is not None and built.load_report.kind == "full" and not built.load_report.missing
    assert_same(built.state_dict(), ckpt["model"])
    fresh = mae.create_model("mae_vit_base_patch16", **TINY_CONFIG)
    report = fresh.load_pretrained(path)
    assert report.kind == "full" and not report.missing and not report.unexpected
    assert_same(fresh.state_dict(), ckpt["model"])


def test_save_every_n_epochs_and_the_last(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=2, per_class=2)  # 4 images: one batch per epoch
    epochs, every = 4, 2
    code, out, err = pretrain(capsys, data, tmp_path / "out", "--save_every", str(every), epochs=epochs)
    assert code == 0, err
    # The official rule, `epoch % 20 == 0 or epoch + 1 == args.epochs`, with N for 20.
    expected = [e for e in range(epochs) if e % every == 0 or e + 1 == epochs]
    assert expected == [0, 2, 3]
    assert list(run_checkpoint.checkpoints_in(tmp_path / "out")) == expected
    assert [load(p)["epoch"] for p in run_checkpoint.checkpoints_in(tmp_path / "out").values()] == expected
    summaries = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(summaries) == epochs
    assert [e for e, line in enumerate(summaries) if line.endswith(f", saved checkpoint-{e}.pth")] == expected


def half_then_fail(written: list[str]) -> Any:
    """A `torch.save` that writes half of the file, then fails as a full disk would."""
    real_save = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        written.append(f.name)
        raise OSError(28, "No space left on device")

    return save


def test_a_failed_save_leaves_the_previous_file_and_no_temporary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoint-3.pth"
    run_checkpoint.save_atomic({"epoch": 3, "w": torch.arange(4.0)}, path)
    before = path.read_bytes()
    written: list[str] = []
    monkeypatch.setattr(torch, "save", half_then_fail(written))
    with pytest.raises(OSError, match="No space left on device"):
        run_checkpoint.save_atomic({"epoch": 4, "w": torch.zeros(10_000)}, path)
    assert len(written) == 1 and Path(written[0]).parent == tmp_path and Path(written[0]) != path
    assert path.read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["checkpoint-3.pth"]
    monkeypatch.undo()
    assert_same(load(path), {"epoch": 3, "w": torch.arange(4.0)})


def test_a_run_that_cannot_save_keeps_the_old_checkpoint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Path
) -> None:
    out_dir = tmp_path / "out"
    assert pretrain(capsys, data, out_dir, "--save_every", "1")[0] == 0
    before = (out_dir / "checkpoint-1.pth").read_bytes()
    written: list[str] = []
    monkeypatch.setattr(torch, "save", half_then_fail(written))
    # Resuming from epoch 0 trains epoch 1 again and saves over checkpoint-1.pth: the save fails halfway.
    code, _, err = pretrain(capsys, data, out_dir, "--resume", str(out_dir / "checkpoint-0.pth"), "--seed", "1")
    assert code == 1 and "No space left on device" in err and written
    assert (out_dir / "checkpoint-1.pth").read_bytes() == before
    assert sorted(f.name for f in out_dir.iterdir()) == ["checkpoint-0.pth", "checkpoint-1.pth", "log.txt"]


def test_empty_output_dir_saves_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    code, out, err = pretrain(capsys, data, "", epochs=2)
    assert code == 0, err
    assert "output: none (no saving)" in out and "epoch 2/2: loss" in out and "saved" not in out
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("epoch, iteration", [(1, 2), (0, 1)])
def test_a_nan_loss_stops_naming_the_step_and_the_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, epoch: int, iteration: int
) -> None:
    out_dir = tmp_path / "out"
    with pytest.MonkeyPatch.context() as patch:
        break_forward_at(patch, epoch * STEPS + iteration + 1, "nan")
        code, out, err = pretrain(capsys, data, out_dir, "--save_every", "1", epochs=3)
    assert code == 1
    assert f"the loss is nan at epoch {epoch}, iteration {iteration} of {STEPS}" in err, err
    saved = run_checkpoint.checkpoints_in(out_dir)
    assert list(saved) == list(range(epoch))  # the epochs before the NaN, none after
    if epoch == 0:
        assert "no checkpoint was saved" in err
        return
    last = saved[epoch - 1]
    assert (
        f"the last checkpoint is {last} (continue with --resume {last}, or the same command with --auto_resume" in err
    )
    ckpt = load(last)
    assert set(ckpt) == ENTRIES and ckpt["epoch"] == epoch - 1
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert [r["epoch"] for r in log_records(out_dir)] == list(range(epoch))
    code, out, err = pretrain(capsys, data, out_dir, "--save_every", "1", "--resume", str(last), epochs=3)
    assert code == 0, err
    assert f"resume: continuing at epoch {epoch}" in out and list(run_checkpoint.checkpoints_in(out_dir)) == [0, 1, 2]


def test_the_runs_model_and_target_are_read_back_from_its_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    from mae import reconstruct

    out_dir = tmp_path / "out"
    assert pretrain(capsys, data, out_dir, "--norm_pix_loss", epochs=1)[0] == 0
    path = out_dir / "checkpoint-0.pth"
    info = mae.inspect_checkpoint(path)
    assert info.norm_pix_loss is True and info.target_source == "the run's arguments"
    report = mae.create_model("mae_vit_base_patch16", **TINY_CONFIG).load_pretrained(path)
    assert any("was trained with norm_pix_loss=True" in w for w in report.warnings)
    # `mae reconstruct` builds the run's (custom) model with its target, from the checkpoint alone.
    _, notes = reconstruct.run(None, path, tmp_path / "figure.png")
    assert any(n.startswith("norm-pix model") for n in notes) and not any("UNTRAINED" in n for n in notes)


def test_rng_state_carries_the_python_and_numpy_generators() -> None:
    """timm's augmentation draws from Python's ``random`` and its Mixup from numpy: a saved ``rng`` entry
    brings both back (after a torch.save/load round trip with weights_only=True), as well as torch's."""
    import random

    import numpy as np

    from mae.train.distributed import Dist

    random.seed(5)
    np.random.seed(7)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    buffer = io.BytesIO()
    torch.save(run_checkpoint.rng_state(Dist()), buffer)
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    buffer.seek(0)
    note = run_checkpoint.restore_rng(torch.load(buffer, weights_only=True), Dist())
    assert "restored" in note
    assert (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item()) == expected
