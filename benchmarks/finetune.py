"""Fine-tuning-step benchmark: images/s of ViT classifier fine-tuning steps, ours against the official engine.

Every variant trains the classifier of the paper's fine-tuning recipe (`mae.vit_base_patch16(num_classes=1000,
drop_path_rate=0.1)` for ViT-B) through its engine's own `train_one_epoch`: timm's Mixup/CutMix (mixup 0.8,
cutmix 1.0, label smoothing 0.1, from the official flags), `SoftTargetCrossEntropy`, backward, AdamW over the
layer-wise lr-decay groups (weight decay 0.05, layer decay 0.65), the per-iteration schedule on each group's
`lr_scale`. The loader gives fixed random images (a fresh copy per batch: Mixup mixes them in place). Each
call is `--steps` steps of epoch 10 of the recipe (past warmup, so the learning rate is not 0). Variants:
- "ours": `mae.train.engine_finetune.train_one_epoch`, float32, the default path;
- "fast": the same after `mae.set_onednn_linear(model, True)` (`mae finetune --fast`; float32 CPU only);
- "bf16": the same under `mae.train.precision.autocast(device, torch.bfloat16)` (`--dtype bfloat16`);
- "bf16_attn", "bf16_adamw", "bf16_fast", "fast_adamw": `--fast`'s choices one at a time and together, as in
  the pre-training benchmark (`benchmarks/routes.py`);
- "compile": the same through `torch.compile(model)` (`--compile`), warmed up by two calls;
  "bf16_fast_compile" and "fast_compile": bf16_fast and fast_adamw through the same compiled wrapper;
- "official" (with $MAE_OFFICIAL_REPO): the official `engine_finetune.train_one_epoch` with OUR classifier
  (a second copy, the same weights), the official `util.lr_decay` groups, AdamW as `main_finetune.py` builds
  it and its `NativeScalerWithGradNormCount`, under the shims of `reference.official`.
Our variants share one model and one optimizer (the fused-AdamW ones their own over the same weights). The
best bf16 and float32 steps are profiled once each: the report says the products' share of them and what
issue 17's goals (3x, 1.2x; "fine-tuning the same") would leave for the rest (`train.products_lines`).
The timing (round-robin after one warm-up call each, medians), the peak-memory measure, the slow-variant
rule and the host's ceilings are those of the pre-training benchmark (`benchmarks/train.py`, `benchmarks/host.py`).

The goal (issue 10): the best of our variants >= 2x the official float32 engine's images/s, held to what
this host's measured ceilings allow (a oneDNN or bf16 product gain; none where both run no faster than the
official engine's MKL products): the issue's figure is reported too.

    python -m benchmarks finetune [--model base] [--batch 8] [--rounds 5] [--steps 1]
                                  [--variants ours,fast,bf16,bf16_attn,bf16_adamw,bf16_fast,fast_adamw,compile,
                                              bf16_fast_compile,fast_compile,official] [--device cpu|cuda]
                                  [--repeat-slow] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import mae
from benchmarks import host, routes, train
from benchmarks.train import SLOW_FACTOR, _quiet, fast_applies
from mae.onednn import fast_path_summary
from mae.train.distributed import Dist
from mae.train.engine_finetune import train_one_epoch
from mae.train.fast_path import classifier_tokens
from mae.train.mixup import build_criterion, build_mixup
from mae.train.optim import set_fused_adamw
from mae.train.precision import autocast, grad_scaler
from mae.train.schedule import CosineSchedule, base_learning_rate


@dataclass(frozen=True)
class Recipe:
    """The paper's fine-tuning recipe of one model (its Table 9 and the official README)."""

    factory: str  # `mae.classifier` name, the official `--model`
    drop_path: float
    layer_decay: float
    blr: float
    epochs: int


RECIPES = {
    "base": Recipe("vit_base_patch16", 0.1, 0.65, 5e-4, 100),
    "large": Recipe("vit_large_patch16", 0.2, 0.75, 1e-3, 50),
    "huge": Recipe("vit_huge_patch14", 0.3, 0.75, 1e-3, 50),
}
# Smoke tests: the ViT-B recipe on a tiny encoder (32 px, patch 8, width 32, depth 2).
TINY = {k: v for k, v in train.SMALL["tiny"].items() if not k.startswith("decoder_")}
MODELS = [*RECIPES, "tiny"]
CLASSES, WEIGHT_DECAY, MIN_LR, WARMUP_EPOCHS, EPOCH = 1000, 0.05, 1e-6, 5, 10
# The official flags of the recipe's data mixing (main_finetune.py's names and defaults).
MIXING = argparse.Namespace(
    mixup=0.8, cutmix=1.0, cutmix_minmax=None, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch",
    smoothing=0.1,
)  # fmt: skip
LABELS = {
    "ours": "ours, float32 (default path)",
    "fast": "ours, oneDNN linear layers only (MKL or oneDNN per product shape, float32)",
    "bf16": "ours, bf16 autocast",
    **routes.FAST_VARIANTS,
    "compile": "ours, torch.compile (float32)",
    **train.COMPILED_LABELS,
    "official": "official engine, our classifier (float32 on the CPU)",
}
GOAL = 2.0  # the best of ours over the official float32 engine, images/s (issue 10)
Stats = dict[str, float]


def recipe_of(model: str) -> Recipe:
    return RECIPES.get(model, RECIPES["base"])


def build_classifier(model: str) -> mae.VisionTransformer:
    r = recipe_of(model)
    extra = TINY if model == "tiny" else {}
    built: mae.VisionTransformer = getattr(mae, r.factory)(num_classes=CLASSES, drop_path_rate=r.drop_path, **extra)
    return built


class FixedImages:
    """`steps` batches of the same random images and labels; each batch a fresh copy of the images."""

    def __init__(self, batch: int, size: int, steps: int, device: torch.device) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch, 3, size, size, generator=g).to(device)
        self.labels = torch.randint(0, CLASSES, (batch,), generator=g).to(device)
        self.steps = steps

    def __len__(self) -> int:  # the official engine's per-iteration schedule divides by it
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(self.steps):
            yield self.images.clone(), self.labels  # Mixup overwrites the images of its batch


def ours_call(
    model: mae.VisionTransformer,
    forward: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: CosineSchedule,
    loader: FixedImages,
    device: torch.device,
    *,
    fast: bool = False,
    dtype: torch.dtype = torch.float32,
    route: routes.Route | None = None,
) -> Callable[[], Stats]:
    """One epoch over `loader` by our engine (through `forward`, the model or its compiled wrapper); `route`
    (`benchmarks/routes.py`), when given, in place of `fast` and `dtype`."""
    route = route or routes.Route(dtype=dtype, onednn=fast)
    scaler = grad_scaler(device, route.dtype)
    criterion, mixup_fn = build_criterion(MIXING), build_mixup(MIXING, CLASSES)

    def go() -> Stats:
        with routes.taken(model, route):  # one model object, switched for this call only
            return train_one_epoch(
                forward, criterion, loader, optimizer, scaler, schedule, EPOCH, steps=len(loader),
                mixup_fn=mixup_fn, autocast=autocast(device, route.dtype), dist=Dist(device=device),
            )  # fmt: skip

    return go


def official_call(
    model: mae.VisionTransformer,
    loader: FixedImages,
    device: torch.device,
    schedule: CosineSchedule,
    layer_decay: float,
) -> Callable[[], Stats]:
    """One epoch over `loader` by the official engine, with the official groups, optimizer and loss scaler."""
    from reference.official import official_finetune_engine, official_module, training_shims

    found = official_finetune_engine()
    lr_decay = official_module("util.lr_decay")
    _assert_official_optimizer()
    groups = lr_decay.param_groups_lrd(
        model, WEIGHT_DECAY, no_weight_decay_list=model.no_weight_decay(), layer_decay=layer_decay
    )
    optimizer = torch.optim.AdamW(groups, lr=schedule.lr)
    with training_shims(), _quiet():
        scaler = found.misc.NativeScalerWithGradNormCount()
    criterion, mixup_fn = build_criterion(MIXING), build_mixup(MIXING, CLASSES)  # main_finetune.py's choices
    args = argparse.Namespace(
        accum_iter=1, lr=schedule.lr, min_lr=schedule.min_lr, warmup_epochs=schedule.warmup_epochs,
        epochs=schedule.epochs,
    )  # fmt: skip

    def go() -> Stats:
        with training_shims(), _quiet():
            stats: Stats = found.engine.train_one_epoch(
                model, criterion, loader, optimizer, device, EPOCH, scaler, None, mixup_fn, log_writer=None, args=args
            )  # max_norm None: main_finetune.py's --clip_grad default
        return stats

    return go


def _assert_official_optimizer() -> None:
    """main_finetune.py builds `torch.optim.AdamW(param_groups, lr=args.lr)` (default betas): hold it so."""
    from reference.official import official_repo

    source = (Path(str(official_repo())) / "main_finetune.py").read_text().replace(" ", "")
    assert "torch.optim.AdamW(param_groups,lr=args.lr)" in source, "the official fine-tuning optimizer changed"


def build_calls(
    args: argparse.Namespace, device: torch.device, plans: dict[str, str] | None = None
) -> tuple[dict[str, Callable[[], Stats]], nn.Module, torch.optim.Optimizer, int]:
    """The variants' calls, our model and optimizer, and the image size; `--fast`'s choices, described, into
    `plans` by variant."""
    plans = {} if plans is None else plans
    recipe = recipe_of(args.model)
    torch.manual_seed(0)
    model = build_classifier(args.model).to(device)
    schedule = CosineSchedule(base_learning_rate(recipe.blr, args.batch), MIN_LR, WARMUP_EPOCHS, recipe.epochs)
    groups = mae.param_groups_lrd(model, WEIGHT_DECAY, recipe.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=schedule.lr)  # `mae finetune`'s optimizer (betas 0.9, 0.999)
    fused = torch.optim.AdamW(mae.param_groups_lrd(model, WEIGHT_DECAY, recipe.layer_decay), lr=schedule.lr)
    set_fused_adamw(fused, True)  # the fused-AdamW variants' own (`--fast` fuses the optimizer itself)
    loader = FixedImages(args.batch, model.config.img_size, args.steps, device)
    tokens = classifier_tokens(model.patch_embed.num_patches)
    calls: dict[str, Callable[[], Stats]] = {}
    compiled: Any = None  # one torch.compile wrapper for the compiled variants (a graph per route)
    for name in args.variants:
        if name in routes.FAST_VARIANTS or name in train.COMPILED:
            route, plan = routes.route_of(train.COMPILED.get(name, name), model, device, args.batch, tokens)
            if plan is not None:
                plans[name] = plan.describe().removeprefix("; --fast: ")
            chosen = routes.optimizer_for(route, optimizer, fused)
            if name in train.COMPILED and compiled is None:
                compiled = torch.compile(model)
            forward = compiled if name in train.COMPILED else model
            calls[name] = ours_call(model, forward, chosen, schedule, loader, device, route=route)
        elif name == "ours":
            calls[name] = ours_call(model, model, optimizer, schedule, loader, device)
        elif name == "fast":
            calls[name] = ours_call(model, model, optimizer, schedule, loader, device, fast=True)
        elif name == "bf16":
            calls[name] = ours_call(model, model, optimizer, schedule, loader, device, dtype=torch.bfloat16)
        elif name == "compile":
            compiled = torch.compile(model) if compiled is None else compiled
            calls[name] = ours_call(model, compiled, optimizer, schedule, loader, device)
        elif name == "official":
            theirs = build_classifier(args.model).to(device)
            theirs.load_state_dict(model.state_dict(), strict=True)
            calls[name] = official_call(theirs, loader, device, schedule, recipe.layer_decay)
    return calls, model, optimizer, model.config.img_size


def bench_steps(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    plans: dict[str, str] = {}
    calls, model, optimizer, img_size = build_calls(args, device, plans)
    last: dict[str, Stats] = {}

    def call(name: str) -> Callable[[], None]:
        def go() -> None:
            last[name] = calls[name]()

        return go

    rows, state = train.time_rounds({name: call(name) for name in calls}, model, optimizer, args, device, "finetune")
    for name, row in rows.items():
        row["lr"] = float(last[name]["lr"])  # the engine's average over its last call's steps (largest group's)
        row["loss"] = float(last[name]["loss"])
    shares = train.best_step_shares(rows, calls, device)
    return {"rows": rows, "state_bytes": state, "img_size": img_size, "plans": plans, "products": shares}


# --- the report ---------------------------------------------------------------------------------------


def host_gain(found: dict[str, Any]) -> tuple[float, str]:
    """The largest speed-up this host's products allow over the official float32 engine's (which runs the
    default library's float32 products), and where it comes from."""
    gains = {"none (float32 products by the default library, as the official engine)": 1.0}
    gemm = found.get("gemm", {})
    if "oneDNN" in gemm:
        gains[f"oneDNN float32 products ({gemm['oneDNN'] / gemm['default']:.2f}x)"] = host.fast_gain(
            gemm["oneDNN"] / gemm["default"]
        )
    product = found.get("bf16", {}).get("speedup", 1.0)
    if product is None:  # a GPU: bf16 is native, its gain is not measured here
        return float("inf"), "bf16 on a GPU (not measured)"
    if product >= host.GAIN:
        gains[f"bf16 products ({product:.2f}x float32)"] = product
    source = max(gains, key=gains.__getitem__)
    return gains[source], source


def goals(results: dict[str, Any]) -> list[str]:
    """The issue's goal and the fast path's and bf16's, each held to this host's measured ceilings."""
    rows, found = results["steps"]["rows"], results.get("ceilings", {})
    official = rows.get("official", {}).get("images_per_s")
    ours = rows.get("ours", {}).get("images_per_s")
    gain, source = host_gain(found)
    ours_rows = {n: r["images_per_s"] for n, r in rows.items() if n != "official" and not r["warmup_only"]}
    best = max(ours_rows, key=ours_rows.__getitem__) if ours_rows else None
    lines = ["| goal | bound on this host | measured | verdict |", "|---|---|---|---|"]

    def add(goal: str, bound: float, value: float | None, missing: str) -> None:
        verdict = "-" if value is None else "met" if round(value, 2) >= bound else "missed"
        lines.append(f"| {goal} | >= {bound:.3g}x | {missing if value is None else f'{value:.2f}x'} | {verdict} |")

    value = ours_rows[best] / official if best and official else None
    missing = "not measured: MAE_OFFICIAL_REPO unset" if "official" not in rows else "not measured (ours not run)"
    add(f"best of ours ({best or '-'}) / the official float32 engine, images/s (issue: >= {GOAL:g}x)",
        host.speed_ratio_bound(GOAL, gain), value, missing)  # fmt: skip
    gemm = found.get("gemm", {})
    ratio = gemm["oneDNN"] / gemm["default"] if "oneDNN" in gemm else None
    fast = rows.get("fast", {}).get("images_per_s")
    add("float32 fast path / our default path, images/s", host.fast_over_default_bound(ratio),
        fast / ours if fast and ours else None, "not measured (fast or ours not run)")  # fmt: skip
    precision = found.get("bf16")
    if host.warning_is_the_goal(precision):
        assert precision is not None
        said, verdict = ("warned", "met") if precision["warned"] else ("NOT warned", "missed")
        lines.append(
            f"| bf16: its products take {1 / precision['speedup']:.1f}x float32's time here, so `mae finetune "
            f"--dtype bfloat16` must warn before the run | warns | {said} | {verdict} |"
        )
    noise = host.noise_floor([ours / official] if ours and official else [])
    lines += train.best_step_goals(rows, official, precision, host.fast_gain(ratio), noise)
    lines += ["", f"This host's largest product gain over the official engine's: {source}."]
    if value is not None:
        stated = "met" if round(value, 2) >= GOAL else "missed"
        lines.append(f"The issue's {GOAL:g}x as stated, whatever the host: {stated} ({value:.2f}x, {best}).")
    return lines


def report(results: dict[str, Any]) -> str:
    steps, a = results["steps"], results["args"]
    r = recipe_of(a["model"])
    setup = (
        f"{a['model']} classifier ({CLASSES} classes, drop path {r.drop_path}), batch {a['batch']} at "
        f"{steps['img_size']} px, mixup {MIXING.mixup} / cutmix {MIXING.cutmix}, smoothing {MIXING.smoothing}, "
        f"SoftTargetCrossEntropy, AdamW over layer-decay {r.layer_decay} groups"
    )
    return train.steps_report(results, LABELS, setup, goals(results), train.products_lines(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="base")
    parser.add_argument("--batch", type=int, default=8, help="images per step (even: Mixup mixes pairs)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1, help="training steps per timed call")
    parser.add_argument("--variants", default=",".join(LABELS), type=lambda s: s.split(","))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat-slow", action="store_true", help=f"time variants > {SLOW_FACTOR:g}x slower too")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    unknown = set(args.variants) - set(LABELS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; valid: {', '.join(LABELS)}")
    if args.batch < 2 or args.batch % 2:
        parser.error(f"--batch must be even and >= 2 (Mixup/CutMix mix pairs of images); got {args.batch}")
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be >= 1")
    device, results = train.start(args, "finetune")
    start_load = os.getloadavg()[0]
    # Both ceilings, whatever the variants: the goal against the official engine is held to the larger gain.
    every = argparse.Namespace(model=args.model, variants=["bf16", *(["fast"] if fast_applies(device) else [])])
    results["ceilings"] = train.ceilings(every, device)
    results["steps"] = bench_steps(args, device)
    if "fast" in args.variants:
        results["fast_path"] = fast_path_summary()
    results["load_average"] = [start_load, os.getloadavg()[0]]
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0
