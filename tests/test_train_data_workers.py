"""The loaders' worker count (`mae.train.data.loader_workers`): ``--num_workers`` capped at the CPUs available.

- with 2 CPUs available (the count monkeypatched, for torch's check too, so the test means the same on any
  machine), ``--num_workers 10`` (the official default) gives training and evaluation loaders of 2 workers,
  one line of ours says so, once, and torch's over-subscription warning never comes, while the loaders are
  built and iterated;
- the cap is never below 1 (1 CPU: 1 worker, not 0), a count within the CPUs and 0 are kept, an unknown CPU
  count keeps the request, and a rank other than 0 caps without printing.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

from mae.train import data

LINE = "loader: --num_workers 10 capped at 2, the CPUs available to this process\n"


def set_cpus(monkeypatch: pytest.MonkeyPatch, count: int | None) -> None:
    """Make this process see ``count`` CPUs (None: unknown), in our count and in torch's loader check alike."""
    if count is None:
        monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    else:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(count)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: count)
    monkeypatch.setattr(data, "_ANNOUNCED", set())  # như một tiến trình mới: chưa in gì


def test_ten_workers_on_two_cpus_give_two_one_line_and_no_torch_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_cpus(monkeypatch, 2)
    images = TensorDataset(torch.arange(8.0).reshape(8, 1), torch.zeros(8, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cảnh báo của torch (UserWarning) sẽ thành lỗi ở đây
        # Python >= 3.12 cảnh báo fork() trong tiến trình có luồng (của torch): không phải điều được kiểm ở đây.
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        train = data.build_loader(images, batch_size=2, num_workers=10, pin_memory=False)
        val = data.build_eval_loader(images, batch_size=3, num_workers=10, pin_memory=False)
        assert train.num_workers == val.num_workers == 2
        seen = [sorted(float(x) for batch, _ in loader for x in batch) for loader in (train, val)]
    assert seen == [[float(i) for i in range(8)]] * 2  # mọi ảnh được đọc, qua 2 tiến trình worker
    out, err = capsys.readouterr()
    assert err == LINE and out == ""  # một dòng cho cả hai loader, trên stderr (stdout có thể là `--json`)


@pytest.mark.parametrize(
    "cpus, asked, expected",
    [(1, 10, 1), (2, 2, 2), (2, 1, 1), (2, 0, 0), (None, 10, 10)],
    ids=["never below 1", "within", "fewer", "none asked", "unknown count"],
)
def test_the_cap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cpus: int | None, asked: int, expected: int
) -> None:
    set_cpus(monkeypatch, cpus)
    assert data.loader_workers(asked) == expected
    said = capsys.readouterr().err
    assert said == ("" if expected == asked else f"loader: --num_workers {asked} capped at {expected}, the CPUs "
                    "available to this process\n")  # fmt: skip


def test_other_ranks_cap_without_a_word(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    set_cpus(monkeypatch, 2)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    assert data.loader_workers(10) == 2
    assert capsys.readouterr().err == ""
