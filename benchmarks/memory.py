"""Gradient-checkpointing benchmark: peak activation memory and step time of a training step, with and without
`--grad_checkpointing` (`mae.grad_checkpointing`), for pre-training and fine-tuning.

Each variant runs in a fresh process (``python -m benchmarks memory --worker PART:0|1 ...``), so that no
variant inherits another's heap: the model of the paper's recipe (pre-training: `mae_vit_large_patch16` with
the norm-pix target, mask ratio 0.75, AdamW over the official weight-decay groups; fine-tuning:
`vit_large_patch16` with 1000 classes, stochastic depth 0.2, AdamW over the layer-decay groups, a label-smoothed
cross-entropy; mixup is left out, it holds no activations), seed 0, one batch of fixed random images. A warm-up
step allocates the gradients and the optimizer state (kept: ``zero_grad(set_to_none=False)``); then each of
``--steps`` steps is forward + backward, measured, and the optimizer step.

- Activation memory: the peak growth during forward + backward over what was resident before it (weights,
  gradients, optimizer state): on the CPU the growth of the resident set (VmHWM after a reset, freed heap
  returned first with `malloc_trim`, as `benchmarks/train.py` measures), on CUDA `max_memory_allocated`
  growth. It holds the activations kept for the backward and the backward's own temporaries.
- Step time: forward + backward + optimizer step, the median over the steps: wall-clock, and the process's
  CPU time (all its threads), which other processes on a shared machine move less.

The goal (issue 19): checkpointing keeps at least 40 % less activation memory, for at most 40 % more step time.
Ratios are taken between the two variants of the same run; the processes run one after the other, so on a
shared machine the load (printed) can move the time ratio.

    python -m benchmarks memory [--model large] [--batch 8] [--steps 2] [--parts pretrain,finetune]
                                [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import mae
from benchmarks import finetune, host, train
from mae.classifier import param_groups_lrd
from mae.encoder import MAEEncoder
from mae.train.optim import build_adamw
from mae.train.precision import DTYPES, autocast, grad_scaler

PARTS = ("pretrain", "finetune")
MODELS = ("base", "large", "huge", "tiny")
GOAL_MEMORY, GOAL_TIME = 0.40, 0.40  # at least 40 % less activation memory, at most 40 % more step time
MASK_RATIO, WEIGHT_DECAY, CLASSES = 0.75, 0.05, 1000
GB = 1e9


def build(part: str, model: str) -> tuple[MAEEncoder, torch.optim.Optimizer]:
    """The recipe's model of ``part`` and its optimizer, from seed 0."""
    torch.manual_seed(0)
    if part == "pretrain":
        net: MAEEncoder = (
            train.build_ours(model) if model == "tiny" else mae.create_model(train.VARIANTS[model], norm_pix_loss=True)
        )
        return net, build_adamw(net, 1.5e-4, WEIGHT_DECAY)
    classifier = finetune.build_classifier(model)
    groups = param_groups_lrd(classifier, WEIGHT_DECAY, finetune.recipe_of(model).layer_decay)
    return classifier, torch.optim.AdamW(groups, lr=1e-3)


def measure(
    part: str, model: str, batch: int, steps: int, checkpointed: bool, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """One variant in this process: per step its activation memory (bytes) and seconds; what was resident."""
    net, optimizer = build(part, model)
    net.to(device).train()
    net.set_grad_checkpointing(checkpointed)
    size = net.config.img_size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g).to(device)
    labels = torch.randint(0, CLASSES, (batch,), generator=g).to(device)
    scaler, run_autocast = grad_scaler(device, dtype), autocast(device, dtype)

    def forward_backward() -> None:
        with run_autocast():
            if part == "pretrain":
                loss = net(images, mask_ratio=MASK_RATIO)[0]
            else:
                loss = F.cross_entropy(net(images).float(), labels, label_smoothing=0.1)
        scaler.scale(loss).backward()

    def optimizer_step() -> None:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=False)  # the gradients stay allocated: not part of the growth

    forward_backward()  # warm-up: allocates the gradients, then the optimizer state
    optimizer_step()
    resident = train._reset_peak(device)
    activation, seconds, cpu_seconds = [], [], []
    for _ in range(steps):
        cpu_start = time.process_time()
        fb_seconds, growth = train.timed_call(forward_backward, device)
        step_seconds, _ = train.timed_call(optimizer_step, device)
        cpu_seconds.append(time.process_time() - cpu_start)
        activation.append(growth)
        seconds.append(fb_seconds + step_seconds)
    return {
        "part": part, "checkpointed": checkpointed, "activation_bytes": activation, "seconds": seconds,
        "cpu_seconds": cpu_seconds, "resident_bytes": resident, "parameters": sum(p.numel() for p in net.parameters()),
    }  # fmt: skip


def worker_argv(args: argparse.Namespace, part: str, checkpointed: bool) -> list[str]:
    return [
        "--worker", f"{part}:{int(checkpointed)}", "--model", args.model, "--batch", str(args.batch),
        "--steps", str(args.steps), "--device", args.device, "--dtype", args.dtype,
    ]  # fmt: skip


def run_variant(argv: list[str], in_process: bool) -> dict[str, Any]:
    """The worker's result: in a fresh process (the benchmark), or in this one (``--in-process``: smoke tests)."""
    if in_process:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(argv)
        text = out.getvalue()
    else:
        command = [sys.executable, "-m", "benchmarks", "memory", *argv]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        text = done.stdout
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per part: each variant's peak activation memory (the largest over its steps) and median step time,
    and the two ratios of the goal."""
    parts: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = parts.setdefault(row["part"], {})
        name = "checkpointed" if row["checkpointed"] else "plain"
        memory = [b for b in row["activation_bytes"] if b is not None]
        entry[name] = {
            "activation_bytes": max(memory) if memory else None,
            "seconds": statistics.median(row["seconds"]),
            "cpu_seconds": statistics.median(row["cpu_seconds"]),
            "resident_bytes": row["resident_bytes"],
        }
    for entry in parts.values():
        if "plain" in entry and "checkpointed" in entry:
            plain, ours = entry["plain"], entry["checkpointed"]
            if plain["activation_bytes"] and ours["activation_bytes"] is not None:
                entry["memory_saved"] = 1.0 - ours["activation_bytes"] / plain["activation_bytes"]
            entry["time_added"] = ours["seconds"] / plain["seconds"] - 1.0
            entry["cpu_time_added"] = ours["cpu_seconds"] / plain["cpu_seconds"] - 1.0
    return parts


def _gb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / GB:.2f}"


def report(results: dict[str, Any]) -> str:
    memory = "peak CUDA memory growth" if results["device"].startswith("cuda") else "peak RSS growth"
    a = results["args"]
    lines = [
        f"Gradient checkpointing, {a['model']} batch {a['batch']}, {a['dtype']}, {a['steps']} step(s) per variant, "
        f"each variant in a fresh process; {results['device']}; load average {results['load_average'][0]:.1f} "
        f"-> {results['load_average'][1]:.1f}",
        "",
        f"| part | variant | activation memory: {memory}, forward + backward (GB) | resident before (GB) | s/step "
        "| CPU s/step |",
        "|---|---|---|---|---|---|",
    ]
    for part, entry in results["summary"].items():
        for name in ("plain", "checkpointed"):
            if name in entry:
                v = entry[name]
                lines.append(
                    f"| {part} | {name} | {_gb(v['activation_bytes'])} | {_gb(v['resident_bytes'])} | "
                    f"{v['seconds']:.2f} | {v['cpu_seconds']:.2f} |"
                )
    lines += ["", "| goal | bound | measured | verdict |", "|---|---|---|---|"]
    for line in goals(results["summary"]):
        lines.append(line)
    return "\n".join(lines)


def goals(parts: dict[str, dict[str, Any]]) -> list[str]:
    """The goal's table rows: activation memory saved >= GOAL_MEMORY, step time added <= GOAL_TIME, per part."""
    lines = []
    for part, entry in parts.items():
        saved, added, cpu = entry.get("memory_saved"), entry.get("time_added"), entry.get("cpu_time_added")
        for goal, bound, value, met in (
            ("activation memory saved", f">= {GOAL_MEMORY:.0%}", saved, saved is not None and saved >= GOAL_MEMORY),
            ("step time added", f"<= {GOAL_TIME:.0%}", added, added is not None and added <= GOAL_TIME),
            ("step CPU time added (less moved by other processes)", f"<= {GOAL_TIME:.0%}", cpu, cpu is not None
             and cpu <= GOAL_TIME),
        ):  # fmt: skip
            measured = "n/a" if value is None else f"{value:.1%}" if goal.startswith("activation") else f"{value:+.1%}"
            verdict = "not measured" if value is None else "met" if met else "MISSED"
            lines.append(f"| {part}: {goal} | {bound} | {measured} | {verdict} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks memory", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="large")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="measured steps per variant, after one warm-up step")
    parser.add_argument("--parts", default=",".join(PARTS), type=lambda s: s.split(","))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--in-process", action="store_true", help="every variant in this process (smoke tests)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # PART:0|1, one variant, its result as a JSON line
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; valid: {', '.join(PARTS)}")
    device = torch.device(args.device)
    if args.worker:
        part, checkpointed = args.worker.split(":")
        result = measure(part, args.model, args.batch, args.steps, checkpointed == "1", device, DTYPES[args.dtype])
        print(json.dumps(result))
        return 0
    print(f"[memory] {host.describe(device)}", file=sys.stderr)
    start_load = os.getloadavg()[0]
    rows = []
    for part in args.parts:
        for checkpointed in (False, True):
            rows.append(run_variant(worker_argv(args, part, checkpointed), args.in_process))
            print(f"[memory] {part}, checkpointed={checkpointed}: done", file=sys.stderr)
    results: dict[str, Any] = {
        "host": host.describe(device), "device": str(device),
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "worker")},
        "rows": rows, "summary": summary(rows), "load_average": [start_load, os.getloadavg()[0]],
    }  # fmt: skip
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0
