"""Pretrained-load benchmark: `mae.create_model(name, checkpoint_path=...)` against the official recipe.

The official recipe (the demo notebook and the fine-tuning script): build the model with its random
initialisation, `torch.load` the file, `load_state_dict`. With $MAE_OFFICIAL_REPO set, the official code
itself is built; otherwise our model, which draws the same random numbers in the same order.

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
    if method == "ours":
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


def _write_checkpoint(variant: str, folder: Path) -> Path:
    import torch

    import mae

    path = folder / f"mae_visualize_vit_{variant}.pth"
    if not path.exists():
        torch.manual_seed(0)
        torch.save({"model": mae.create_model(VARIANTS[variant]).state_dict()}, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks load", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=list(VARIANTS), default="large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the measurements as JSON")
    parser.add_argument("--keep", type=Path, help="folder for the checkpoint file (kept); default: a temporary one")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = _write_checkpoint(args.variant, folder)
        size = path.stat().st_size
        runs: dict[str, list[dict[str, float]]] = {"official recipe": [], "ours": []}
        for i in range(args.repeats):
            for method in runs:  # alternate the methods
                runs[method].append(_measure(method, args.variant, path))
                print(
                    f"[load] run {i + 1}/{args.repeats} {method}: {runs[method][-1]['seconds']:.2f} s", file=sys.stderr
                )

    def median(method: str, key: str) -> float:
        values = [r[key] if key == "seconds" else r["peak"] - r["rss_before"] for r in runs[method]]
        return statistics.median(values)

    t_off, t_ours = median("official recipe", "seconds"), median("ours", "seconds")
    r_off, r_ours = median("official recipe", "rss"), median("ours", "rss")
    official_source = "official code" if os.environ.get("MAE_OFFICIAL_REPO") else "same recipe, our model"
    rows = [
        "| method | load time (s) | peak RSS growth (GB) | RSS growth / file size |",
        "|---|---|---|---|",
        f"| official recipe ({official_source}) | {t_off:.2f} | {r_off / 1e9:.2f} | {r_off / size:.2f} |",
        f"| `mae.create_model(..., checkpoint_path=)` | {t_ours:.2f} | {r_ours / 1e9:.2f} | {r_ours / size:.2f} |",
    ]
    time_ratio, rss_ratio = t_ours / t_off, r_ours / size
    print(f"\nViT-{args.variant} full checkpoint, {size / 1e9:.2f} GB, median of {args.repeats} fresh processes\n")
    print("\n".join(rows))
    verdict = {True: "met", False: "MISSED"}
    print(f"\ntime ours / official: {time_ratio:.3f} (goal <= {GOAL_TIME}): {verdict[time_ratio <= GOAL_TIME]}")
    print(f"peak RSS growth / file size: {rss_ratio:.2f} (goal <= {GOAL_RSS}): {verdict[rss_ratio <= GOAL_RSS]}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"variant": args.variant, "file_bytes": size, "runs": runs, "time_ratio": time_ratio,
                 "rss_ratio": rss_ratio, "official_source": official_source},
                indent=2,
            )
            + "\n"
        )  # fmt: skip
    return 0
