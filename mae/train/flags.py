"""Command-line flags under the official names (``--data_path``), accepting the dashed spelling too."""

from __future__ import annotations

import argparse
from typing import Any


def flag(parser: argparse.ArgumentParser | Any, name: str, *more: str, **kwargs: Any) -> None:
    """``--name_with_underscores``, also as ``--name-with-dashes``, stored under the underscored name."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else []) + list(more)
    kwargs.setdefault("dest", name)
    parser.add_argument(*spellings, **kwargs)


def positive(kind: type[int] | type[float]) -> Any:
    """An argparse type: a number > 0 of ``kind``."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def non_negative(kind: type[int] | type[float]) -> Any:
    """An argparse type: a number >= 0 of ``kind``."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def key_values(items: list[str], option: str) -> dict[str, Any]:
    """``["depth=6", "mlp_ratio=4.0"]`` -> ``{"depth": 6, "mlp_ratio": 4.0}``: int, float, true/false, or text."""
    parsed: dict[str, Any] = {}
    for text in items:
        name, sep, raw = text.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{option} takes NAME=VALUE pairs (e.g. depth=6); got {text!r}")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for convert in (int, float):
                try:
                    value = convert(raw)
                    break
                except ValueError:
                    continue
        parsed[name.strip()] = value
    return parsed
