"""What a run shows and keeps: running averages, the progress bar, and ``OUTPUT/log.txt``.

``log.txt`` is the official one: a JSON line per epoch with ``train_lr`` and ``train_loss`` (averages
over the epoch's iterations, over all processes) and ``epoch``; ``mae plot OUTPUT/log.txt`` draws it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
LOG_NAME = "log.txt"


class Average:
    """The mean of every value seen (the official meters' ``global_avg``)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, value: float) -> None:
        self.total += value
        self.count += 1

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


class Progress:
    """A bar over one epoch (loss, lr, images/s and ETA) on a terminal; silent otherwise."""

    def __init__(self, iterable: Iterable[T], total: int, description: str, enabled: bool, initial: int = 0) -> None:
        self._bar: Any = None
        self._iterable: Iterable[Any] = iterable
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                iterable, total=total, desc=description, unit="it", dynamic_ncols=True, leave=True, initial=initial
            )  # initial: an interrupted epoch continues part-way
            self._iterable = self._bar

    def __iter__(self) -> Iterator[Any]:
        return iter(self._iterable)

    @property
    def shown(self) -> bool:
        """Whether the bar is drawn (then no other line needs to print the figures, `log_sinks`)."""
        return self._bar is not None

    def show(self, **values: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def append_log(output_dir: str | Path, stats: dict[str, Any]) -> None:
    """One JSON line, flushed to disk (the official ``log.txt``)."""
    with open(Path(output_dir) / LOG_NAME, "a", encoding="utf-8") as f:
        f.write(json.dumps(stats) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.txt``; ValueError naming the line that is not JSON."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}, line {number}, is not JSON ({e.msg}): is this a `mae pretrain` log.txt?"
            ) from None
    return records


def drop_log_from(output_dir: str | Path, epoch: int) -> int:
    """Remove the records of epochs >= ``epoch`` (they are trained again after a resume); returns how many."""
    path = Path(output_dir) / LOG_NAME
    if not path.is_file():
        return 0
    records = read_log(path)
    kept = [r for r in records if not (isinstance(r.get("epoch"), int) and r["epoch"] >= epoch)]
    if len(kept) < len(records):
        tmp = path.with_name(f".{LOG_NAME}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, path)
    return len(records) - len(kept)
