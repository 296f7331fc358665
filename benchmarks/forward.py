"""Forward benchmark: ours against transformers and (with $MAE_OFFICIAL_REPO) the official code.

Measured in one process, the implementations alternating inside every repetition, medians reported:
- pretraining forward (loss, pred, mask) under `torch.inference_mode`, per variant and batch size, with
  the same weights and masking noise for all implementations; ours twice on float32 CPUs: the default
  path (bit-equal to the references) and the fast path (`mae.set_onednn_linear`: each product shape by
  MKL or oneDNN, whichever timed faster here); achieved GFLOP/s (matrix products counted from the
  configuration, `benchmarks.flops`) against the ceiling: a 4096x4096 product by PyTorch's default and by
  oneDNN, timed inside each row's alternation, the faster;
- the host's instruction sets, and a goals table: each goal of the performance issues with the bound this
  host's own ceilings allow (`benchmarks/host.py`), the measured value and a verdict;
- forward + backward at batch 8 for ViT-B (train mode, same weights and noise);
- bf16 autocast against fp32 for ours (speed and loss difference);
- optionally (`--compile`) torch.compile against eager for ours at batch 1;
- model build time with random initialisation, each in a fresh process.

    python -m benchmarks forward [--variants base,large,huge] [--batches 1,8] [--repeats 5]
                                 [--device cpu|cuda] [--dtype float32|bfloat16] [--compile] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import mae
from benchmarks import host
from benchmarks.flops import forward_flops
from mae.cpu import warn_if_reduced_precision_is_slow
from mae.onednn import fast_path_summary

VARIANTS = {"base": "mae_vit_base_patch16", "large": "mae_vit_large_patch16", "huge": "mae_vit_huge_patch14"}
GOALS = {"official_b1": 0.90, "official_b8": 1.00, "transformers": 0.90, "gemm_fraction": 0.85, "bf16_speedup": 1.5}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rotated(functions: dict[str, Callable[[], Any]], shift: int) -> list[tuple[str, Callable[[], Any]]]:
    """The functions in their order started ``shift`` places later (wrapping around)."""
    items = list(functions.items())
    k = shift % len(items) if items else 0
    return items[k:] + items[:k]


def timed(functions: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each function; one warm-up each, then the functions alternate per repetition.

    The order rotates by one each repetition, so that no function always runs first (right after the
    ceiling's large products) or last: a fixed order gave the first one a few percent more time."""
    for f in functions.values():
        f()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for r in range(repeats):
        for name, f in rotated(functions, r):
            _sync(device)
            start = time.perf_counter()
            f()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


FAST = "ours+fast"  # the fast path: set_onednn_linear(model, True), MKL or oneDNN per product shape


def fast_path_applies(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype == torch.float32 and mae.onednn_available()


GEMM_SIZE = 4096
GEMM_FLOPS = 2 * GEMM_SIZE**3


def gemm_products(device: torch.device, dtype: torch.dtype, size: int = GEMM_SIZE) -> dict[str, Callable[[], Any]]:
    """size^2 matrix products, by PyTorch's default (`a @ b`) and, for float32 on the CPU, by oneDNN: the
    faster one's rate is the practical ceiling of these forwards. Each costs 2 * size^3 FLOPs (GEMM_FLOPS at
    the default GEMM_SIZE)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    products: dict[str, Callable[[], Any]] = {"gemm default": lambda: a @ b}
    if fast_path_applies(device, dtype):
        products["gemm oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")  # a @ b.T
    return products


def _implementations(variant: str, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Ours, and the references available, all holding the same weights, in eval mode."""
    torch.manual_seed(0)
    ours = mae.create_model(VARIANTS[variant]).eval()
    models: dict[str, Any] = {"ours": ours}
    try:
        from reference.hf import build_hf

        models["transformers"] = build_hf(ours.config, ours.state_dict())
    except ImportError:
        print("[forward] transformers not installed: skipped", file=sys.stderr)
    if os.environ.get("MAE_OFFICIAL_REPO"):
        from reference.official import build_official

        official = build_official(variant)
        official.load_state_dict(ours.state_dict(), strict=True)
        models["official"] = official.eval()
    models = {name: model.to(device) for name, model in models.items()}
    if fast_path_applies(device, dtype):
        models = {"ours": ours, FAST: ours, **{k: v for k, v in models.items() if k != "ours"}}
    return models


def _call(name: str, model: Any, imgs: torch.Tensor, noise: torch.Tensor) -> Any:
    if name in ("ours", FAST):
        mae.set_onednn_linear(model, name == FAST)  # one model object, switched for this call only
        try:
            return model(imgs, mask_ratio=0.75, noise=noise)
        finally:
            mae.set_onednn_linear(model, False)
    if name == "transformers":
        from reference.hf import hf_forward

        return hf_forward(model, imgs, 0.75, noise)
    torch.manual_seed(0)  # the official forward draws its own noise: one torch.rand(N, L), as ours would
    return model(imgs, mask_ratio=0.75)


def bench_forward(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[dict[str, Any]]:
    rows = []
    for variant in args.variants:
        models = _implementations(variant, device, dtype)
        config = models["ours"].config
        for batch in args.batches:
            imgs = torch.randn(batch, 3, 224, 224, device=device)
            noise = torch.rand(batch, config.num_patches, device=device)

            def run(name: str, model: Any, imgs: torch.Tensor = imgs, noise: torch.Tensor = noise) -> Callable[[], Any]:
                def go() -> Any:
                    with (
                        torch.inference_mode(),
                        torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32),
                    ):
                        return _call(name, model, imgs, noise)

                return go

            # The ceiling is timed inside the same alternation, so that it sees the same machine state.
            functions = {name: run(name, m) for name, m in models.items()} | gemm_products(device, dtype)
            seconds = timed(functions, args.repeats, device)
            ceiling = {name.removeprefix("gemm "): GEMM_FLOPS / seconds.pop(name) / 1e9 for name in list(seconds)
                       if name.startswith("gemm ")}  # fmt: skip
            flops = forward_flops(config, 0.75, batch)
            rows.append(
                {"variant": variant, "batch": batch, "seconds": seconds, "gflops": flops / 1e9, "gemm_gflops": ceiling}
            )
            line = ", ".join(f"{n} {s * 1e3:.0f} ms" for n, s in seconds.items())
            print(f"[forward] {variant} batch {batch}: {line}", file=sys.stderr)
        del models
    return rows


def bench_backward(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    models = _implementations("base", device, torch.float32)
    imgs = torch.randn(8, 3, 224, 224, device=device)
    noise = torch.rand(8, models["ours"].config.num_patches, device=device)

    def run(name: str, model: Any) -> Callable[[], None]:
        def go() -> None:
            model.train()
            model.zero_grad(set_to_none=True)
            _call(name, model, imgs, noise)[0].backward()

        return go

    seconds = timed({name: run(name, m) for name, m in models.items()}, args.repeats, device)
    print(f"[forward] base batch 8 forward+backward: {seconds}", file=sys.stderr)
    return seconds


def bench_bf16(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    variant = "large" if "large" in args.variants else args.variants[0]
    torch.manual_seed(0)
    model = mae.create_model(VARIANTS[variant]).eval().to(device)
    imgs = torch.randn(8, 3, 224, 224, device=device)
    noise = torch.rand(8, model.config.num_patches, device=device)
    results: dict[bool, float] = {}

    def run(enabled: bool) -> Callable[[], Any]:
        def go() -> Any:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
                results[enabled] = model(imgs, mask_ratio=0.75, noise=noise)[0].float().item()

        return go

    seconds = timed({"fp32": run(False), "bf16": run(True)}, args.repeats, device)
    loss_rel = abs(results[True] / results[False] - 1)
    ceiling = host.precision_ceiling(torch.bfloat16, device, training=False)
    return {"variant": variant, "fp32": seconds["fp32"], "bf16": seconds["bf16"], "loss_rel_diff": loss_rel,
            "ceiling": ceiling}  # fmt: skip


def bench_compile(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = mae.create_model("mae_vit_base_patch16").eval().to(device)
    imgs = torch.randn(1, 3, 224, 224, device=device)
    noise = torch.rand(1, model.config.num_patches, device=device)
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.inference_mode():
        eager_out, compiled_out = model(imgs, noise=noise), compiled(imgs, noise=noise)
    compile_seconds = time.perf_counter() - start

    def run(m: Any) -> Callable[[], Any]:
        def go() -> Any:
            with torch.inference_mode():
                return m(imgs, noise=noise)

        return go

    seconds = timed({"eager": run(model), "compiled": run(compiled)}, args.repeats, device)
    diff = float((eager_out[1] - compiled_out[1]).abs().max())
    return {"eager": seconds["eager"], "compiled": seconds["compiled"], "compile_s": compile_seconds, "max_diff": diff}


_BUILD = textwrap.dedent(
    """
    import sys, time, torch, mae
    method, variant, name = sys.argv[1:4]
    start = time.perf_counter()
    torch.manual_seed(0)
    if method == "ours":
        mae.create_model(name)
    elif method == "official":
        from reference.official import build_official
        build_official(variant)
    else:
        from transformers import ViTMAEForPreTraining
        from reference.hf import hf_config
        with torch.device("meta"):
            config = mae.create_model(name).config
        start = time.perf_counter()  # the configuration above is not part of the build
        torch.manual_seed(0)
        ViTMAEForPreTraining(hf_config(config))
    print(time.perf_counter() - start)
    """
)


def bench_build(args: argparse.Namespace) -> dict[str, Any]:
    variant = "large" if "large" in args.variants else args.variants[0]
    methods = ["ours", "transformers"] + (["official"] if os.environ.get("MAE_OFFICIAL_REPO") else [])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    samples: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(max(1, args.repeats // 2)):
        for method in methods:
            out = subprocess.run(
                [sys.executable, "-c", _BUILD, method, variant, VARIANTS[variant]],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            samples[method].append(float(out.stdout.strip().splitlines()[-1]))
    return {"variant": variant, **{m: statistics.median(v) for m, v in samples.items()}}


machine = host.machine  # where it used to live


def product_ratio(rows: list[dict[str, Any]]) -> float | None:
    """oneDNN's 4096x4096 product rate over the default's, median over the rows (None: oneDNN not timed)."""
    ratios = [r["gemm_gflops"]["oneDNN"] / r["gemm_gflops"]["default"] for r in rows if "oneDNN" in r["gemm_gflops"]]
    return statistics.median(ratios) if ratios else None


def goals(results: dict[str, Any], names: list[str]) -> list[str]:
    """The issues' goals, each with the bound this host's measured ceilings allow, the measured value per path
    and a verdict."""
    rows = results["forward"]
    ratio = product_ratio(rows)
    gain = host.fast_gain(ratio)

    def worst(name: str, other: str, batch: int | None = None) -> float | None:
        s = [r["seconds"] for r in rows if batch is None or r["batch"] == batch]
        values = [t[name] / t[other] for t in s if other in t and name in t]
        return max(values) if values else None

    def same(names: tuple[str, ...]) -> list[float]:
        """Time ratios between implementations that run the same kernels, every pair in every row."""
        return [r["seconds"][a] / r["seconds"][b] for r in rows for i, a in enumerate(names) for b in names[i + 1 :]
                if a in r["seconds"] and b in r["seconds"]]  # fmt: skip

    # The noise of this run, from implementations that run the same kernels: the references' spread for the
    # goals against them; that of the default path and the references for the fast path against the default.
    noise = host.noise_floor(same(("transformers", "official")))
    fast_noise = host.noise_floor(same(("ours", "transformers", "official")))
    if ratio is None:
        intro = "no oneDNN product was timed, so the goals are held to the default path's ceiling"
    elif gain > 1:
        intro = f"oneDNN's product ran at {ratio:.2f}x the default's here: the fast path can gain up to that"
    else:
        intro = (
            f"oneDNN's product ran at {ratio:.2f}x the default's here, no gain: the fast path can only match "
            f"the default path, and the goals against the references become 'not slower' ({noise:.3g})"
        )
    if same(("transformers", "official")):
        intro += (
            f". Noise allowed, from the same kernels' spread in this run: {noise:.3g} against the references "
            f"(transformers vs the official code), {fast_noise:.3g} for the fast path (also our default path)"
        )
    lines = [
        f"Goals held to this host's ceilings (benchmarks/host.py): {intro}.",
        "",
        "| goal | bound on this host | " + " | ".join(names) + " |",
        "|---" * (2 + len(names)) + "|",
    ]

    def add(
        goal: str, bound: float, measure: Callable[[str], float | None], above: bool = False, only: str | None = None
    ) -> None:
        cells = []
        for name in names:
            if only is not None and name != only:
                cells.append("-")
                continue
            value = measure(name)
            ok = value is not None and (value >= bound if above else value <= bound)
            cells.append("not measured" if value is None else f"{value:.3g}: {'met' if ok else 'missed'}")
        lines.append(f"| {goal} | {'>=' if above else '<='} {bound:.3g} | " + " | ".join(cells) + " |")

    official_b1 = host.time_ratio_bound(GOALS["official_b1"], gain, noise)
    official_b8 = host.time_ratio_bound(GOALS["official_b8"], gain, noise)
    add(f"worst time / official, batch 1 (issue: <= {GOALS['official_b1']:g})", official_b1,
        lambda n: worst(n, "official", 1))  # fmt: skip
    add(f"worst time / official, batch 8 (issue: <= {GOALS['official_b8']:g})", official_b8,
        lambda n: worst(n, "official", 8))  # fmt: skip
    add(f"worst time / transformers (issue: <= {GOALS['transformers']:g})",
        host.time_ratio_bound(GOALS["transformers"], gain, noise), lambda n: worst(n, "transformers"))  # fmt: skip
    if FAST in names:

        def speedup(name: str) -> float | None:
            values = [r["seconds"]["ours"] / r["seconds"][name] for r in rows if name in r["seconds"]]
            return min(values) if values else None

        bound = host.fast_over_default_bound(ratio, fast_noise)
        add("fast path: worst speed-up over the default path", bound, speedup, above=True, only=FAST)
    large8 = [r for r in rows if r["variant"] == "large" and r["batch"] == 8]
    add(
        "ViT-L batch 8, fraction of the ceiling (the faster product)",
        GOALS["gemm_fraction"],
        lambda n: large8[0]["gflops"] / large8[0]["seconds"][n] / _ceiling(large8[0]) if large8 else None,
        above=True,
    )
    if "bf16" in results:
        lines.append(_bf16_goal(results["bf16"], len(names)))
    return lines


def _bf16_goal(b: dict[str, Any], columns: int) -> str:
    """bf16 autocast: the stated speed-up where this host's bf16 products are faster than float32's; where
    they are slower, the goal is that `mae` warns before a bf16 run. The loss within 1 % either way."""
    speedup, loss_ok = b["fp32"] / b["bf16"], b["loss_rel_diff"] <= 0.01
    ceiling = b["ceiling"]
    product = ceiling["speedup"]
    measured = f"{speedup:.2f}x, loss {b['loss_rel_diff']:.1e}"
    if not host.warning_is_the_goal(ceiling):
        bound = host.speed_ratio_bound(GOALS["bf16_speedup"], product if product is not None else float("inf"))
        goal = f"bf16 autocast speed-up over float32 (issue: >= {GOALS['bf16_speedup']:g}x), loss within 1 %"
        ok = speedup >= bound and loss_ok
        cells = [f"{measured}: {'met' if ok else 'missed'}"]
        bound_text = f">= {bound:.3g}x"
    else:
        goal = (
            f"bf16 autocast: its products take {1 / product:.1f}x float32's time here, so no speed-up is possible; "
            "`mae` warns before a bf16 run; loss within 1 %"
        )
        ok = ceiling["warned"] and loss_ok
        cells = [f"{measured}, {'warned' if ceiling['warned'] else 'NOT warned'}: {'met' if ok else 'missed'}"]
        bound_text = "warns"
    return f"| {goal} | {bound_text} | " + " | ".join(cells + [""] * (columns - 1)) + " |"


def _ceiling(row: dict[str, Any]) -> float:
    return float(max(row["gemm_gflops"].values()))


def report(results: dict[str, Any]) -> str:
    fast = any(FAST in row["seconds"] for row in results["forward"])
    names = ["ours", FAST] if fast else ["ours"]
    ceilings = sorted({k for row in results["forward"] for k in row["gemm_gflops"]})
    lines = [
        f"Machine: {results['machine']}; device {results['device']}, dtype {results['dtype']}. The ceiling is a "
        f"4096x4096 product ({', '.join(ceilings)}) timed in each row's alternation; % is of the faster.",
        "",
        "| variant | batch | "
        + " | ".join(f"{n} (ms)" for n in names)
        + " | transformers (ms) | official (ms) | "
        + " | ".join(f"{n}/transformers | {n}/official" for n in names)
        + " | ceiling GFLOP/s ("
        + ", ".join(ceilings)
        + ") | "
        + " | ".join(f"{n} GFLOP/s (% of ceiling)" for n in names)
        + " |",
        "|---" * (5 + 4 * len(names)) + "|",
    ]

    def ms(value: float | None) -> str:
        return f"{value * 1e3:.0f}" if value else "-"

    def ratio(ours: float, other: float | None) -> str:
        return f"{ours / other:.3f}" if other else "-"

    for row in results["forward"]:
        s, top = row["seconds"], _ceiling(row)
        hf, off = s.get("transformers"), s.get("official")
        cells = [row["variant"], str(row["batch"]), *(ms(s[n]) for n in names), ms(hf), ms(off)]
        cells += [f"{ratio(s[n], hf)} | {ratio(s[n], off)}" for n in names]
        cells.append(", ".join(f"{row['gemm_gflops'][k]:.0f}" for k in ceilings))
        cells += [f"{row['gflops'] / s[n]:.0f} ({100 * row['gflops'] / s[n] / top:.0f} %)" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    if "fast_path" in results:
        lines += ["", f"The fast path's choices in this run: {results['fast_path']}."]
    lines += ["", *goals(results, names)]
    if "backward" in results:
        b = results["backward"]
        lines += ["", "Forward + backward, ViT-B batch 8: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in b.items())]
    if "bf16" in results:
        b = results["bf16"]
        lines += [
            "",
            f"bf16 autocast, ViT-{b['variant']} batch 8: fp32 {b['fp32'] * 1e3:.0f} ms, bf16 {b['bf16'] * 1e3:.0f} ms, "
            f"speed-up {b['fp32'] / b['bf16']:.2f}x, loss relative difference {b['loss_rel_diff']:.1e}; this "
            f"host's products: {b['ceiling']['detail']}",
        ]
    if "compile" in results:
        c = results["compile"]
        lines += [
            "",
            f"torch.compile, ViT-B batch 1: eager {c['eager'] * 1e3:.0f} ms, compiled {c['compiled'] * 1e3:.0f} ms "
            f"(speed-up {c['eager'] / c['compiled']:.2f}x, compile {c['compile_s']:.0f} s, "
            f"max abs diff {c['max_diff']:.1e})",
        ]
    if "build" in results:
        b = results["build"]
        lines += ["", f"Build with random init, ViT-{b['variant']}, fresh process: "
                  + ", ".join(f"{k} {v:.2f} s" for k, v in b.items() if k != "variant")]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks forward", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="base,large,huge", type=lambda s: s.split(","))
    parser.add_argument("--batches", default="1,8", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
        help="autocast dtype (warned about where it is slower than float32 on this CPU)",
    )  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--no-extras", action="store_true", help="only the forward table")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; valid: {', '.join(VARIANTS)}")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    results: dict[str, Any] = {"machine": host.describe(device), "device": str(device), "dtype": args.dtype}
    print(f"[forward] {results['machine']}", file=sys.stderr)
    warn_if_reduced_precision_is_slow(dtype, device, "--dtype", training=False)
    results["forward"] = bench_forward(args, device, dtype)
    if any(FAST in row["seconds"] for row in results["forward"]):
        results["fast_path"] = fast_path_summary()
    if not args.no_extras:
        results["backward"] = bench_backward(args, device)
        results["bf16"] = bench_bf16(args, device)
        results["build"] = bench_build(args)
    if args.compile:
        results["compile"] = bench_compile(args, device)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0
