"""`mae pretrain` as a user meets it: the official flags, clear errors before any work, and its output.

- every flag of the official `main_pretrain.py` parser (read from its source) is accepted and parses to the
  official value, with the official default except the documented departures;
- the dashed spellings (`--data-path`) give the same Namespace as the official underscored ones;
- bad flags stop the run with exit code 1 and a message naming the problem, before the model is built or
  anything is written;
- off a terminal there is no progress bar: one summary line per epoch on stdout (and the iteration lines,
  `Epoch: [N]  [i/N] ...`, of `test_log_sinks.py`).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import TINY_MODEL_ARGS, make_image_folder, pretrain

import mae.cli
from mae import models
from mae.train import pretrain as pretrain_module
from reference import official

# The official defaults this trainer departs from on purpose (mae/train/pretrain.py and its flag help).
DEPARTURES = {
    "data_path": "required (the official default is a path on FAIR's cluster)",
    "device": "cuda only where CUDA is available, else cpu",
}


def official_parser() -> argparse.ArgumentParser:
    """The official `get_args_parser()`, taken from the source by `ast` and run alone (nothing else imported)."""
    reason = official.skip_reason()
    if reason:
        pytest.skip(reason)
    source = Path(str(official.official_repo()), "main_pretrain.py").read_text()
    function = next(
        node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name == "get_args_parser"
    )
    module = ast.Module(body=[ast.Import(names=[ast.alias(name="argparse")]), function], type_ignores=[])
    namespace: dict[str, Any] = {}
    exec(compile(ast.fix_missing_locations(module), "main_pretrain.py", "exec"), namespace)
    parser = namespace["get_args_parser"]()
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def ours(*argv: str) -> dict[str, Any]:
    """`mae pretrain ARGV` parsed by the real command line, without running it."""
    parsed = vars(mae.cli.build_parser().parse_args(["pretrain", *argv]))
    del parsed["command"], parsed["func"]
    return parsed


def sample_value(action: argparse.Action) -> list[str]:
    """A value the official flag accepts that is not its default."""
    if action.nargs == 0:
        return []
    if action.type is int:
        return ["3"]
    return ["0.5"] if action.type is float else ["some/value"]


def test_every_official_flag_is_accepted_with_the_official_value() -> None:
    parser = official_parser()
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(actions) >= 25  # the official parser has 26 flags: the source was read
    for action in actions:
        for spelling in action.option_strings:
            argv = [spelling, *sample_value(action)]
            if action.dest != "data_path":
                argv += ["--data_path", "d"]
            expected = getattr(parser.parse_args(argv), action.dest)
            assert ours(*argv)[action.dest] == expected, argv


def test_official_defaults_except_the_documented_departures() -> None:
    expected = vars(official_parser().parse_args([]))
    got = ours("--data_path", "d")
    for name, value in expected.items():
        if name not in DEPARTURES:
            assert got[name] == value and type(got[name]) is type(value), name
    assert got["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SystemExit) as stopped:
        ours()
    assert stopped.value.code == 2  # --data_path is required


# Every flag of `mae pretrain` with a value that is not its default.
ALL_FLAGS = [
    "--data_path", "data", "--batch_size", "8", "--epochs", "3", "--accum_iter", "2",
    "--model", "mae_vit_huge_patch14", "--input_size", "64", "--mask_ratio", "0.5", "--norm_pix_loss",
    "--model_args", "depth=2", "embed_dim=64", "--weight_decay", "0.1", "--lr", "1e-4", "--blr", "2e-4",
    "--min_lr", "1e-6", "--warmup_epochs", "1", "--clip_grad", "3.0", "--output_dir", "out_dir",
    "--log_dir", "log_dir", "--print_freq", "5", "--save_every", "5", "--resume", "some_run", "--start_epoch", "2",
    "--auto_resume", "--save_every_minutes", "30", "--grad_checkpointing", "--knn_every", "2", "--jpeg_draft",
    "--in_chans", "4", "--mean", "0.1", "0.2", "--std", "0.3", "0.4", "--norm_stats", "auto",
    "--num_workers", "1", "--no_pin_mem", "--device", "cuda:1", "--seed", "7", "--dtype", "bfloat16", "--fast",
    "--compile", "--world_size", "2", "--local_rank", "0", "--dist_on_itp", "--dist_url", "tcp://host:1",
    "--dist_timeout", "60", "--overwrite",
]  # fmt: skip


def test_dashed_spellings_parse_to_the_same_namespace() -> None:
    dashed = [a.replace("_", "-") if a.startswith("--") else a for a in ALL_FLAGS]
    assert "--data-path" in dashed and "--batch-size" in dashed and "--no-pin-mem" in dashed
    underscored = ours(*ALL_FLAGS)
    assert ours(*dashed) == underscored
    assert underscored["data_path"] == "data" and underscored["model_args"] == ["depth=2", "embed_dim=64"]
    assert underscored["pin_mem"] is False and underscored["dist_url"] == "tcp://host:1"
    # ...and every value differs from its default: each flag was really read.
    defaults = ours("--data_path", "x")
    assert [name for name in underscored if underscored[name] == defaults[name]] == []
    assert ours("--data_path", "x", "--pin-mem")["pin_mem"] is True


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data", classes=2, per_class=4)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an epoch starts."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(pretrain_module, "train_one_epoch", refuse)


BAD_FLAGS = {
    "unknown model": (["--model", "mae_vit_tiny"], ["unknown --model 'mae_vit_tiny'", *models.list_models()]),
    "patch does not divide": (["--input_size", "33"], ["img_size (33)", "patch_size (8)", "32 or 40"]),
    "mask ratio 1": (["--mask_ratio", "1.0"], ["--mask_ratio", "[0, 1)", "1.0"]),
    "unknown model field": (["--model_args", *TINY_MODEL_ARGS, "depth_of_field=3"], ["depth_of_field", "embed_dim"]),
    "model field without =": (["--model_args", *TINY_MODEL_ARGS, "depth2"], ["NAME=VALUE", "'depth2'"]),
}


@pytest.mark.parametrize("flags, says", list(BAD_FLAGS.values()), ids=list(BAD_FLAGS))
@pytest.mark.usefixtures("no_training")
def test_bad_flags_fail_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, flags: list[str], says: list[str]
) -> None:
    out_dir = tmp_path / "out"
    code, out, err = pretrain(capsys, data, out_dir, *flags)
    assert code == 1
    assert err.startswith("mae pretrain: error: ") and err.count("\n") == 1, err
    for text in says:
        assert text in err
    assert out == ""  # the set-up summary (printed once the model is built) was never reached
    assert not out_dir.exists()  # stopped before the output folder, hence before reading any data


def test_a_folder_with_checkpoints_is_not_trained_over(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=2, per_class=4)
    out_dir = tmp_path / "out"
    assert pretrain(capsys, data, out_dir, epochs=1)[0] == 0
    before = {f.name: f.read_bytes() for f in out_dir.iterdir()}
    code, out, err = pretrain(capsys, data, out_dir, epochs=2)
    assert code == 1 and out == ""
    assert "already holds checkpoint-0.pth" in err and f"continue it with --resume {out_dir}" in err
    assert {f.name: f.read_bytes() for f in out_dir.iterdir()} == before  # nothing touched
    # The advice works: the same command with --resume goes on from epoch 1.
    code, out, err = pretrain(capsys, data, out_dir, "--resume", str(out_dir), epochs=2)
    assert code == 0, err
    assert "resume: continuing at epoch 1" in out and (out_dir / "checkpoint-1.pth").is_file()


SUMMARY = re.compile(r"^epoch (\d+)/3: loss \d+\.\d{4}, lr \S+, \S+ images/s, saved checkpoint-\d+\.pth$")


def test_off_a_terminal_no_progress_bar_one_line_per_epoch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=2, per_class=4)
    code, out, err = pretrain(capsys, data, tmp_path / "out", "--save_every", "1", epochs=3)
    assert code == 0, err
    assert "\r" not in err and "\r" not in out
    epochs = [int(m.group(1)) for line in out.splitlines() if (m := SUMMARY.match(line))]
    assert epochs == [1, 2, 3]
    assert len([line for line in out.splitlines() if line.startswith("epoch ")]) == 3


def test_on_a_terminal_the_progress_bar_redraws(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The control of the test above: the same run, with stderr said to be a terminal, draws a bar there."""
    pytest.importorskip("tqdm")
    data = make_image_folder(tmp_path / "data", classes=2, per_class=4)
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = pretrain(capsys, data, tmp_path / "out", epochs=1)
    assert code == 0, err
    assert "\r" in err and "epoch 0" in err and "\r" not in out
