"""A short `mae pretrain` run in float16 (the official GPU recipe: autocast with a GradScaler): its loss must fall.

Issue 17 asks, where a GPU is available, for a float16 run of `mae pretrain` of a few hundred steps whose loss
falls. This runs the command itself, in a subprocess as a user would, over ImageNet-sized JPEGs re-encoded from
the photographs installed packages ship (`benchmarks.data.make_jpegs`), and reads the run's ``log.txt``: each
epoch's loss, skipped steps and loss scale. It passes where the command exits with status 0, every epoch's loss
is finite, and the last epoch's loss is at most FALL times the first's.

The learning rate: ``--blr 1e-3`` by default, so lr = 2.5e-4 at batch 64 (the paper's recipe is blr 1.5e-4 at
batch 4096, lr 2.4e-3): a run of a few hundred steps must move. Warmup: the first ``--warmup_epochs`` epochs.
On the CPU, ``--model tiny`` (a 32 px, two-block MAE) makes the same check in seconds (the tests run it).

    python -m benchmarks pretrain_run [--device cuda|cpu] [--dtype float16] [--model base|large|tiny]
                                      [--images 1024] [--batch 64] [--epochs 20] [--warmup-epochs 2]
                                      [--blr 1e-3] [--workers 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .data import make_jpegs, photographs
from .train import SMALL

FALL = 0.9  # the last epoch's mean loss at most this times the first's
MODELS = {"base": "mae_vit_base_patch16", "large": "mae_vit_large_patch16", "tiny": "mae_vit_base_patch16"}
TINY = SMALL["tiny"]  # the train benchmark's tiny model (32 px, patch 8): the same command in seconds on a CPU


def command(args: argparse.Namespace, data: Path, out: Path) -> list[str]:
    """The `mae pretrain` command line of this run."""
    line = [sys.executable, "-m", "mae", "pretrain", "--data_path", str(data), "--output_dir", str(out),
            "--log_dir", "", "--model", MODELS[args.model], "--batch_size", str(args.batch),
            "--epochs", str(args.epochs), "--warmup_epochs", str(args.warmup_epochs), "--blr", str(args.blr),
            "--dtype", args.dtype, "--device", args.device, "--num_workers", str(args.workers)]  # fmt: skip
    if args.model == "tiny":
        line += ["--input_size", str(TINY["img_size"])]
        line += ["--model_args", *(f"{k}={v}" for k, v in TINY.items() if k != "img_size")]
    return line


def verdict(records: list[dict[str, Any]], returncode: int) -> dict[str, Any]:
    """What the run's log says: losses per epoch, their fall, skipped steps and the scale; passed or not (why)."""
    losses = [float(r["train_loss"]) for r in records]
    finite = all(math.isfinite(v) for v in losses)
    ratio = losses[-1] / losses[0] if len(losses) >= 2 and finite and losses[0] > 0 else None
    why = []
    if returncode != 0:
        why.append(f"the command ended with exit status {returncode}")
    if len(losses) < 2:
        why.append(f"{len(losses)} epoch(s) logged: at least 2 are needed to see the loss fall")
    elif not finite:
        why.append("a loss is not finite")
    elif ratio is None:
        why.append(f"the first epoch's loss is {losses[0]:g}: nothing to fall from")
    elif ratio > FALL:
        why.append(f"the last epoch's loss is {ratio:.3f} of the first's (at most {FALL:g} asked)")
    return {
        "losses": losses,
        "ratio": ratio,
        "skipped_steps": [r.get("train_skipped_steps") for r in records],
        "loss_scale": [r.get("train_loss_scale") for r in records],
        "passed": not why,
        "why": "; ".join(why),
    }


def report(results: dict[str, Any]) -> str:
    v, a = results["verdict"], results["args"]
    lines = [
        f"Machine: {results['host']}; `mae pretrain --dtype {a['dtype']} --device {a['device']}`, model {a['model']}, "
        f"{a['images']} images, batch {a['batch']}, {a['epochs']} epochs = {results['steps']} steps, "
        f"blr {a['blr']:g}; {results['seconds']:.0f} s.",
        "",
        "| epoch | loss | skipped steps | loss scale at its end |",
        "|---|---|---|---|",
    ]
    for i, loss in enumerate(v["losses"]):
        skipped, scale = v["skipped_steps"][i], v["loss_scale"][i]
        lines.append(
            f"| {i} | {loss:.4f} | {'-' if skipped is None else skipped} | {'-' if scale is None else f'{scale:g}'} |"
        )
    fell = "-" if v["ratio"] is None else f"{v['ratio']:.3f}"
    lines += [
        "",
        f"Last epoch's loss / first's: {fell} (at most {FALL:g}): "
        + ("passed" if v["passed"] else f"FAILED: {v['why']}"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pretrain_run", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32", "auto"])
    parser.add_argument("--model", choices=list(MODELS), default="base")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--warmup-epochs", dest="warmup_epochs", type=int, default=2)
    parser.add_argument("--blr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.images < args.batch:
        parser.error(f"--images {args.images} is fewer than one batch of --batch {args.batch}")
    sources = photographs()
    if not sources:
        parser.error("no photographs found: install matplotlib (its sample data holds some)")
    from .host import describe

    with tempfile.TemporaryDirectory() as tmp:
        data, out = make_jpegs(sources, Path(tmp) / "data", args.images), Path(tmp) / "out"
        start = time.perf_counter()
        done = subprocess.run(command(args, data, out), capture_output=True, text=True)
        seconds = time.perf_counter() - start
        log = out / "log.txt"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if done.returncode != 0:
        print(done.stdout[-4000:] + done.stderr[-4000:], file=sys.stderr)
    results = {
        "host": describe(torch.device(args.device)),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "steps": args.epochs * (args.images // args.batch),
        "seconds": seconds,
        "verdict": verdict(records, done.returncode),
    }
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["verdict"]["passed"] else 1
