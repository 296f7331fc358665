"""Issue 17's GPU measurements in one command, sized for a short lease of a GPU machine.

One run of each, in this order, each report printed as it ends and its JSON written to ``--results``:
- ``train --model base`` and ``train --model large`` on CUDA: images/s and peak memory of our pre-training steps in
  float32, float16 and bf16 (default path and ``--fast``) against the official engine on the same GPU (float16
  autocast there), with the GPU goal (ours >= 1.3x in float16 and in bf16) and each precision's loss curve;
- ``pretrain_run``: `mae pretrain --dtype float16` of ViT-B for a few hundred steps (20 epochs of 16 batches
  of 64): its loss must fall;
- ``data``: the pre-training loader per core, ours against the official, and the device-side normalisation's cost
  on the GPU.
A benchmark that fails (an error, or its verdict) is reported and the next one still runs; the exit status is 1
if any failed. The official engine runs where ``MAE_OFFICIAL_REPO`` points at a checkout (see the benchmarks'
README for carrying one to a GPU machine); without it, ours only.

On an H200 the whole check was sized to take a few minutes (unmeasured until a GPU is lent: each benchmark prints
its own time). ``--smoke`` runs the same sequence with tiny models and sizes, on any device (the tests run it on
the CPU).

    python -m benchmarks cuda_check [--device cuda] [--results DIR] [--smoke] [--only train_base,...]
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from . import data, pretrain_run, train

Plan = list[tuple[str, Callable[[list[str]], int], list[str]]]


def plan(device: str, smoke: bool) -> Plan:
    """(name, benchmark's main, its arguments but --json) of each measurement, in order."""
    if smoke:  # the same sequence, tiny: seconds on a CPU
        small = ["--model", "tiny", "--batch", "2", "--steps", "1", "--rounds", "1", "--curve-model", "tiny",
                 "--curve-steps", "2", "--repeat-slow", "--variants", ",".join(train.CUDA_VARIANTS)]  # fmt: skip
        run = ["--model", "tiny", "--images", "64", "--batch", "8", "--epochs", "10", "--warmup-epochs", "1",
               "--blr", "5e-2", "--workers", "1"]  # fmt: skip
        return [
            ("train_base", train.main, ["--device", device, *small]),
            ("pretrain_run", pretrain_run.main, ["--device", device, *run]),
            ("data", data.main, ["--device", device, "--images", "32", "--batch", "8", "--workers", "1",
                                 "--rounds", "1"]),
        ]  # fmt: skip
    return [
        ("train_base", train.main, ["--device", device, "--model", "base", "--batch", "64", "--steps", "5",
                                    "--rounds", "3"]),
        ("train_large", train.main, ["--device", device, "--model", "large", "--batch", "64", "--steps", "3",
                                     "--rounds", "3", "--curve-steps", "0"]),
        ("pretrain_run", pretrain_run.main, ["--device", device, "--model", "base", "--dtype", "float16"]),
        ("data", data.main, ["--device", device, "--workers", "1,2", "--rounds", "2"]),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks cuda_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--results", type=Path, default=Path("benchmarks-cuda"), help="folder for the JSON files")
    parser.add_argument("--smoke", action="store_true", help="tiny models and sizes (any device)")
    parser.add_argument("--only", type=lambda s: s.split(","), help="these measurements only, by name")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    steps = plan(args.device, args.smoke)
    names = [name for name, _, _ in steps]
    unknown = set(args.only or []) - set(names)
    if unknown:
        parser.error(f"unknown measurements {sorted(unknown)}; valid: {', '.join(names)}")
    steps = [step for step in steps if not args.only or step[0] in args.only]
    args.results.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, run, arguments in steps:
        line = " ".join(arguments)
        print(f"\n## {name}: python -m benchmarks {run.__module__.rsplit('.', 1)[-1]} {line}\n", flush=True)
        start = time.perf_counter()
        try:
            status = run([*arguments, "--json", str(args.results / f"{name}.json")])
        except (Exception, SystemExit) as e:  # the next measurement still runs
            traceback.print_exc()
            status = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1
        took = time.perf_counter() - start
        print(f"\n[{name}] exit status {status}, {took:.0f} s", flush=True)
        if status:
            failed.append(name)
    print(
        f"\ncuda_check: {len(steps) - len(failed)} of {len(steps)} passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0
