"""Pretrained-load benchmark: `mae.create_model(name, checkpoint_path=...)` against the official recipe.

The official recipe (the demo notebook and the fine-tuning script): build the model with its random
initialisation, `torch.load` the file, `load_state_dict`. With $MAE_OFFICIAL_REPO set, the official code
itself is built; otherwise our model, which draws the same random numbers in the same order. Ours loads
the same weights twice: from the official `.pth` file (torch.load, memory-mapped) and from a
`.safetensors` file (the `safetensors` library, memory-mapped).

Each measurement runs in a fresh Python process, alternating the methods, after `import torch, mae`:
wall time of the load alone, and the growth of peak RSS (VmHWM) over the RSS before the load, against
the file size. The page cache is warm (the file was just written or read), as in repeated use.

    python -m benchmarks load [--variant large] [--repeats 3] [--json out.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

VARIANTS = {"base": "mae_vit_base_patch16", "large": "mae_vit_large_patch16", "huge": "mae_vit_huge_patch14"}
GOAL_TIME, GOAL_RSS = 0.15, 1.2  # ours / official recipe wall time; our peak RSS growth / file size

_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    import mae

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    method, name, path, variant = sys.argv[1:5]
    before = status("VmRSS")
    start = time.perf_counter()
    if method.startswith("ours"):
        model = mae.create_model(name, checkpoint_path=path)
    elif method == "official recipe":
        if os.environ.get("MAE_OFFICIAL_REPO"):
            from reference.official import build_official
            model = build_official(variant)
        else:
            model = mae.create_model(name)
        checkpoint = torch.load(path, map_location="cpu")
        model.load_state_dict(checkpoint["model"], strict=False)
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    assert not any(p.is_meta for p in model.parameters())
    print(json.dumps({"seconds": seconds, "rss_before": before, "peak": status("VmHWM")}))
    """
)


def _measure(method: str, variant: str, path: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, method, VARIANTS[variant], str(path), variant],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


METHODS = {"official recipe": ".pth", "ours": ".pth", "ours, safetensors": ".safetensors"}  # method -> file


def _write_checkpoints(variant: str, folder: Path) -> dict[str, Path]:
    """The same weights as an official `.pth` file and as a `.safetensors` file, by suffix."""
    import torch

    import mae
    from mae.safetensors_io import save_file

    paths = {suffix: folder / f"mae_visualize_vit_{variant}{suffix}" for suffix in (".pth", ".safetensors")}
    if not all(p.exists() for p in paths.values()):
        torch.manual_seed(0)
        state_dict = mae.create_model(VARIANTS[variant]).state_dict()
        torch.save({"model": state_dict}, paths[".pth"])
        save_file(state_dict, paths[".safetensors"])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks load", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=list(VARIANTS), default="large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the measurements as JSON")
    parser.add_argument("--keep", type=Path, help="folder for the checkpoint files (kept); default: a temporary one")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = _write_checkpoints(args.variant, folder)
        size = paths[".pth"].stat().st_size
        sizes = {method: paths[suffix].stat().st_size for method, suffix in METHODS.items()}
        runs: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
        for i in range(args.repeats):
            for method in runs:  # alternate the methods
                runs[method].append(_measure(method, args.variant, paths[METHODS[method]]))
                print(
                    f"[load] run {i + 1}/{args.repeats} {method}: {runs[method][-1]['seconds']:.2f} s", file=sys.stderr
                )

    def median(method: str, key: str) -> float:
        values = [r[key] if key == "seconds" else r["peak"] - r["rss_before"] for r in runs[method]]
        return statistics.median(values)

    t_off, r_off = median("official recipe", "seconds"), median("official recipe", "rss")
    official_source = "official code" if os.environ.get("MAE_OFFICIAL_REPO") else "same recipe, our model"
    labels = {
        "official recipe": f"official recipe ({official_source}), .pth",
        "ours": "`mae.create_model(..., checkpoint_path=)`, .pth",
        "ours, safetensors": "`mae.create_model(..., checkpoint_path=)`, .safetensors",
    }
    rows = [
        "| method | load time (s) | peak RSS growth (GB) | RSS growth / file size |",
        "|---|---|---|---|",
    ]
    for method in METHODS:
        t, r = median(method, "seconds"), median(method, "rss")
        rows.append(f"| {labels[method]} | {t:.2f} | {r / 1e9:.2f} | {r / sizes[method]:.2f} |")
    print(f"\nViT-{args.variant} full checkpoint, {size / 1e9:.2f} GB, median of {args.repeats} fresh processes\n")
    print("\n".join(rows))
    verdict = {True: "met", False: "MISSED"}
    ratios: dict[str, dict[str, float]] = {}
    for method in ("ours", "ours, safetensors"):
        time_ratio, rss_ratio = median(method, "seconds") / t_off, median(method, "rss") / sizes[method]
        ratios[method] = {"time_ratio": time_ratio, "rss_ratio": rss_ratio}
        print(
            f"\n{method}: time / official recipe {time_ratio:.3f} (goal <= {GOAL_TIME}): "
            f"{verdict[time_ratio <= GOAL_TIME]}; peak RSS growth / file size {rss_ratio:.2f} "
            f"(goal <= {GOAL_RSS}): {verdict[rss_ratio <= GOAL_RSS]}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"variant": args.variant, "file_bytes": sizes, "runs": runs, "ratios": ratios,
                 "official_recipe_rss_ratio": r_off / size, "official_source": official_source},
                indent=2,
            )
            + "\n"
        )  # fmt: skip
    return 0
