"""The per-channel statistics a run normalises its images with, and where they come from.

``--mean``/``--std`` give one value per channel; ``--norm_stats auto`` computes them before training over a
fixed sample of the training images (`AUTO_SAMPLE` of them, drawn with ``random.Random(0)`` from the dataset's
file list; every file when there are fewer), in float64, on the images as ``ToTensor`` scales them (8-bit ÷ 255,
16-bit ÷ 65535, float arrays as stored), before any augmentation: the mean of every pixel of every sampled image,
per channel, and the population standard deviation (``ddof=0``). Without either, 3-channel runs use ImageNet's
(the official recipe); other channel counts must say which, since ImageNet's has three values.

A run records them in its checkpoints' ``args`` as plain lists (``args.mean``, ``args.std``) and the channel count
as an int (``args.in_chans``), so ``torch.load(weights_only=True)`` and the official loader still read the files.
`stats_from_checkpoint` reads them back (``mae reconstruct``, ``mae evaluate``, ``mae finetune --finetune``); a file
that records none (an official release) gets ImageNet's, as before.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .data import IMAGENET_MEAN, IMAGENET_STD

AUTO_SAMPLE = 1000  # images read by --norm_stats auto (a seeded sample of larger sets)

Stats = tuple[list[float], list[float]]


def resolve_flags(
    in_chans: int, mean: Sequence[float] | None, std: Sequence[float] | None, auto: bool, offer_auto: bool = True
) -> Stats | None:
    """The statistics ``--mean``/``--std`` give (ImageNet's for 3 channels without them); None for
    ``--norm_stats auto`` (computed once the data is read). ValueError, saying what to pass, for a wrong count
    of values, a std that is not positive, both kinds at once, or none for a channel count other than 3 (naming
    ``--norm_stats auto`` only where the command has it: ``offer_auto``)."""
    or_auto = " (or --norm_stats auto)" if offer_auto else ""
    if auto and (mean is not None or std is not None):
        raise ValueError("--norm_stats auto computes --mean and --std from the data: pass one or the other, not both")
    if auto:
        return None
    if (mean is None) != (std is None):
        given, missing = ("--mean", "--std") if mean is not None else ("--std", "--mean")
        raise ValueError(f"{given} needs {missing} too: give one value of each per channel{or_auto}")
    if mean is None or std is None:
        if in_chans == 3:
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        raise ValueError(
            f"--in_chans {in_chans}: ImageNet's mean and std are for 3 channels; give --mean and --std with "
            f"{in_chans} value(s) each"
            + (", or --norm_stats auto to compute them from the training images" if offer_auto else "")
        )
    return check_stats(in_chans, mean, std)


def check_stats(in_chans: int, mean: Sequence[float], std: Sequence[float]) -> Stats:
    """``mean`` and ``std`` as lists of floats; ValueError unless each has ``in_chans`` finite values, std > 0."""
    for name, values in (("--mean", mean), ("--std", std)):
        if len(values) != in_chans:
            raise ValueError(
                f"{name} has {len(values)} value(s) but the data has {in_chans} channel(s) (--in_chans): give one "
                "per channel"
            )
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{name} must be finite numbers; got {', '.join(map(str, values))}")
    if any(s <= 0 for s in std):
        raise ValueError(f"--std must be positive for every channel; got {', '.join(map(str, std))}")
    return [float(m) for m in mean], [float(s) for s in std]


def sample_paths(paths: Sequence[str], size: int = AUTO_SAMPLE) -> list[str]:
    """The files ``--norm_stats auto`` reads: all of ``paths`` (in order) up to ``size``, else a
    ``random.Random(0)`` sample of ``size``."""
    return list(paths) if len(paths) <= size else random.Random(0).sample(list(paths), size)


def compute_stats(paths: Sequence[str], in_chans: int, read: Callable[[str], Any], size: int = AUTO_SAMPLE) -> Stats:
    """Per-channel mean and population std over `sample_paths` (float64), on the images as ``ToTensor``
    scales them, before augmentation. ``read``: the training set's own loader (``dataset.loader``: RGB, or
    `image_formats.Reader` for data in its own mode), so the statistics see the pixels training sees."""
    from .image_formats import as_unit_float, to_stored_tensor

    total = torch.zeros(in_chans, dtype=torch.float64)
    squares = torch.zeros(in_chans, dtype=torch.float64)
    count = 0
    for path in sample_paths(paths, size):
        image = read(path)
        x = as_unit_float(to_stored_tensor(image)).reshape(in_chans, -1)  # [C, H*W], float64
        total += x.sum(dim=1)
        squares += (x * x).sum(dim=1)
        count += x.shape[1]
    # Thống kê của chính dữ liệu: ảnh xám hay ảnh vệ tinh có trung bình/độ lệch khác hẳn ImageNet; chuẩn hoá sai
    # làm đầu vào lệch khỏi (0, 1) và ảnh tái tạo bị ám màu khi đảo chuẩn hoá (facebookresearch/mae #179).
    mean = total / count
    var = (squares / count - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    if bool((std <= 0).any()):
        flat = [i for i, s in enumerate(std.tolist()) if s <= 0]
        raise ValueError(
            f"--norm_stats auto: channel(s) {', '.join(map(str, flat))} have the same value in every sampled pixel "
            "(std 0): give --mean and --std yourself"
        )
    return mean.tolist(), std.tolist()


def _recorded(args: Any) -> dict[str, Any]:
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    return dict(args) if isinstance(args, dict) else {}


def stats_from_args(run_args: dict[str, Any] | None, weights_in_chans: int | None = None) -> tuple[Stats | None, int]:
    """(statistics, channels) a training run recorded: ``args.mean``/``args.std``/``args.in_chans``; channels
    from the weights where the run did not record them, else 3. Statistics None when none are recorded
    and the channels are not 3; ImageNet's for a 3-channel file that records none."""
    args = run_args or {}
    in_chans = args.get("in_chans")
    if not isinstance(in_chans, int):
        in_chans = weights_in_chans or 3
    mean, std = args.get("mean"), args.get("std")
    if isinstance(mean, list | tuple) and isinstance(std, list | tuple) and len(mean) == len(std) == in_chans:
        return ([float(m) for m in mean], [float(s) for s in std]), in_chans
    if in_chans == 3:
        return (list(IMAGENET_MEAN), list(IMAGENET_STD)), 3
    return None, in_chans


def _weights_in_chans(state: Any) -> int | None:
    if not isinstance(state, dict):
        return None
    for key, value in state.items():
        if str(key).endswith("patch_embed.proj.weight") and isinstance(value, torch.Tensor) and value.dim() == 4:
            return int(value.shape[1])
    return None


def stats_from_checkpoint(ckpt: dict[str, Any]) -> tuple[list[float], list[float], int]:
    """(mean, std, in_chans) of the run that wrote ``ckpt`` (a loaded checkpoint: ``{"model", "args", ...}`` or a
    bare state dict). ImageNet's for a 3-channel file that records none (an official release); ValueError for a
    file of other channels that records none (pass ``--mean``/``--std``)."""
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    stats, in_chans = stats_from_args(_recorded(ckpt.get("args")), _weights_in_chans(state))
    if stats is None:
        raise ValueError(
            f"the checkpoint is for {in_chans} channel(s) but records no --mean/--std (not written by `mae pretrain` "
            "or `mae finetune`?): pass --mean and --std, one value per channel"
        )
    return stats[0], stats[1], in_chans


def describe(mean: Sequence[float], std: Sequence[float]) -> str:
    """``mean 0.4850, 0.4560, 0.4060; std 0.2290, 0.2240, 0.2250`` (4 decimals, for the run's log)."""
    return f"mean {', '.join(f'{m:.4f}' for m in mean)}; std {', '.join(f'{s:.4f}' for s in std)}"


def stats_source(auto: bool, mean: Sequence[float], std: Sequence[float], images: int) -> str:
    """Where a run's statistics came from, for its log: auto (over how many of ``images``), the flags, or ImageNet's."""
    if auto:
        return f"--norm_stats auto: over {min(images, AUTO_SAMPLE):,} training image(s), before augmentation"
    if list(mean) == list(IMAGENET_MEAN) and list(std) == list(IMAGENET_STD):
        return "ImageNet's"
    return "--mean/--std"
