"""Command-line flags under the official names (``--data_path``), accepting the dashed spelling too."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from .distributed import DEFAULT_TIMEOUT_S
from .log_sinks import OFFICIAL_LOG_DIR


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


def add_loader_flags(group: Any) -> None:
    """How the data is read: ``--num_workers`` and ``--pin_mem`` / ``--no_pin_mem`` (official defaults)."""
    flag(group, "num_workers", type=non_negative(int), default=10)
    flag(group, "pin_mem", action="store_true", default=True, help="pin host memory for CUDA copies (default)")
    flag(group, "no_pin_mem", action="store_false", dest="pin_mem")


def add_requeue_flags(group: Any) -> None:
    """How a run survives a scheduler (`auto_resume`, `preemption`): ``--auto_resume`` and ``--save_every_minutes``."""
    flag(
        group,
        "auto_resume",
        action="store_true",
        help="continue the run in --output_dir from its latest checkpoint (or start afresh when it has none); "
        "refused when that run was made with other settings",
    )
    flag(
        group,
        "save_every_minutes",
        type=positive(float),
        default=None,
        metavar="M",
        help="also write checkpoint-midepoch.pth at most every M minutes (at an optimizer step); SIGTERM/SIGUSR1 "
        "write it at the next step and exit 75",
    )


def add_log_flags(group: Any) -> None:
    """Where the per-iteration figures go (`log_sinks`): ``--log_dir`` (TensorBoard, the official default) and
    ``--print_freq`` (a line every N iterations off a terminal; the official engines print every 20)."""
    flag(
        group,
        "log_dir",
        default=OFFICIAL_LOG_DIR,
        help="TensorBoard events (pip install tensorboard); at this default: in --output_dir; '' for none",
    )
    flag(
        group,
        "print_freq",
        type=positive(int),
        default=20,
        metavar="N",
        help="off a terminal, print a line every N iterations and the last (official: 20)",
    )


def add_device_and_distributed_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every training command shares after its own: device, seed, precision, the fast path,
    compile; the official distributed flags (set by torchrun); and ``--overwrite``."""
    g = parser.add_argument_group("device and precision")
    flag(
        g,
        "device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cuda or cpu (default: cuda if present)",
    )
    flag(g, "seed", type=int, default=0, help="each process seeds seed + rank")
    flag(
        g,
        "dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="auto: float16 on CUDA (as official), float32 on CPU",
    )
    flag(
        g,
        "fast",
        action="store_true",
        help="faster kernels chosen for this device and --dtype (not bit-equal to the official): linear layers by "
        "oneDNN (float32 CPU), attention kernel and patch embedding, fused AdamW; the choices are printed",
    )
    flag(g, "compile", action="store_true", help="torch.compile the model")
    g = parser.add_argument_group("distributed (launch with torchrun, or srun: one task per process)")
    flag(g, "world_size", type=int, default=1, help="set by torchrun")
    flag(g, "local_rank", type=int, default=-1, help="set by torchrun")
    flag(g, "dist_on_itp", action="store_true", help="read ranks from OpenMPI variables")
    flag(g, "dist_url", default="env://")
    flag(
        g,
        "dist_timeout",
        type=positive(float),
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long a process waits for the others, at the start and in every collective, before it fails "
        f"(default {DEFAULT_TIMEOUT_S:g}: more than rank 0 takes to save a large checkpoint; nccl notices a lost "
        "process only then, gloo at once)",
    )
    flag(g, "overwrite", action="store_true", help="start afresh even if OUTPUT holds checkpoints")


def add_channel_flags(group: Any, *, in_chans_default: int | None = 3, auto: bool = True) -> None:
    """The data's channels and statistics (`image_formats`, `norm_stats`): ``--in_chans`` and ``--mean``/``--std``
    (one value per channel), with ``--norm_stats auto`` to compute them from the training images."""
    flag(
        group,
        "in_chans",
        type=positive(int),
        default=in_chans_default,
        metavar="C",
        help="image channels: 1 reads grayscale and 16-bit images, any count reads .npy arrays (C, H, W) or "
        "(H, W, C); 3 reads images as RGB"
        + (" (default 3)" if in_chans_default == 3 else " (default: the checkpoint's, else 3)"),
    )
    where = "default: ImageNet's for 3 channels" if auto else "default: the checkpoint's"
    flag(group, "mean", type=float, nargs="+", default=None, metavar="M", help=f"per-channel mean ({where})")
    flag(group, "std", type=float, nargs="+", default=None, metavar="S", help="per-channel std, with --mean")
    if auto:
        flag(
            group,
            "norm_stats",
            choices=["auto"],
            default=None,
            help="auto: compute --mean/--std over a seeded 1,000 of the training images before training",
        )
