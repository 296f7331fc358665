"""`python -m benchmarks features` runs its code path and writes a well-formed table and JSON (its numbers are
not judged here: speed lives in the benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import features
from benchmarks.__main__ import COMMANDS


def test_features_benchmark_times_every_method(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "bench.json"
    model = ["img_size=32", "patch_size=8", "embed_dim=32", "depth=1", "num_heads=2", "decoder_embed_dim=16"]
    argv = ["--model_args", *model, "decoder_depth=1", "decoder_num_heads=2"]
    assert (
        features.main(
            [
                *argv,
                "--images",
                "4",
                "--batch",
                "4",
                "--workers",
                "0",
                "--rounds",
                "1",
                "--warmup",
                "0",
                "--size",
                "48x40",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    record = json.loads(out.read_text())
    methods = [
        "ours: features",
        "ours: features + kNN",
        "plain loop: features",
        "plain loop: features + kNN",
        "model alone",
    ]
    assert list(record["images_per_s"]) == methods and all(v > 0 for v in record["images_per_s"].values())
    assert set(record["ratios"]) == {"features", "features + kNN"} and len(record["rounds"]) == 1
    for method in methods:
        assert f"| {method} | " in text
    assert COMMANDS["features"] is features.main
