"""The benchmark scripts run and print well-formed tables (their numbers are not judged here).

The training benchmark's own arithmetic is checked against an independent computation from its JSON:
images/s from the timed calls, the loss curves' largest relative difference, the goals' verdicts. The
goals of both benchmarks are held to the host's measured ceilings: checked here for an AVX2-like host
(oneDNN's products no faster, bf16 emulated) and an AVX-512-like one (oneDNN 2.2x, native bf16).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mae
from benchmarks import forward, host, train
from mae import cpu
from reference.official import skip_reason


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table_rows(text: str) -> list[list[str]]:
    return [_cells(line) for line in text.splitlines() if line.startswith("| ")]


def _goal_rows(text: str) -> dict[str, list[str]]:
    """The goals table by goal, its text up to the first parenthesis or colon."""
    rows = _table_rows(text[text.index("| goal |") :])[1:]
    return {r[0].split(" (")[0].split(":")[0]: r[1:] for r in rows}


def test_forward_benchmark_times_every_implementation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAE_OFFICIAL_REPO", raising=False)  # the official code is left out: a known table
    out = tmp_path / "forward.json"
    args = ["--variants", "base", "--batches", "1", "--repeats", "1", "--no-extras", "--json", str(out)]
    assert forward.main(args) == 0
    results = json.loads(out.read_text())
    fast = mae.onednn_available()
    expected = {"ours", "transformers"} | ({forward.FAST} if fast else set())
    assert expected <= set(results["forward"][0]["seconds"])
    ceiling = results["forward"][0]["gemm_gflops"]
    assert set(ceiling) == ({"default", "oneDNN"} if fast else {"default"})
    assert all(v > 0 for v in ceiling.values())
    text = capsys.readouterr().out
    assert "CPU instruction sets:" in text.splitlines()[0]
    table = text[: text.index("| goal |")]
    rows = _table_rows(table)
    assert len(rows) == 2 and len({len(r) for r in rows}) == 1  # header and one row, as many cells
    assert rows[1][:2] == ["base", "1"]
    goals = _goal_rows(text)
    assert goals["worst time / official, batch 1"][1] == "not measured"  # no official code
    assert goals["ViT-L batch 8, fraction of the ceiling"][1] == "not measured"  # base only
    if fast:
        assert "The fast path's choices in this run: oneDNN fast path: " in text
        assert goals["fast path"][1] == "-" and goals["fast path"][2].endswith(("met", "missed"))


def _forward_results(onednn_ratio: float, bf16_product: float, warned: bool) -> dict[str, object]:
    """One ViT-L batch-8 row: ours 1.0 s, the fast path 0.5 s, transformers 1.1 s, official 1.05 s; products:
    the default at 200 GFLOP/s, oneDNN at `onednn_ratio` times that; bf16 products `bf16_product` times as fast."""
    seconds = {"ours": 1.0, forward.FAST: 0.5, "transformers": 1.1, "official": 1.05}
    ceiling = {"speedup": bf16_product, "warned": warned, "detail": "made up"}
    return {
        "machine": "test",
        "device": "cpu",
        "dtype": "float32",
        "forward": [
            {
                "variant": "large",
                "batch": 8,
                "seconds": seconds,
                "gflops": 200.0,
                "gemm_gflops": {"default": 200.0, "oneDNN": 200.0 * onednn_ratio},
            }
        ],
        "backward": {"ours": 2.0, forward.FAST: 1.0},
        "bf16": {"variant": "large", "fp32": 1.0, "bf16": 0.5, "loss_rel_diff": 1e-4, "ceiling": ceiling},
        "build": {"variant": "large", "ours": 2.0},
        "fast_path": "made-up choices",
    }


def test_report_with_every_section_is_well_formed() -> None:
    text = forward.report(_forward_results(2.0, 3.0, False))
    header, separator, row = text.splitlines()[2:5]
    assert header.count("|") == separator.count("|") == row.count("|")
    cells = dict(zip(_cells(header), _cells(row), strict=True))
    assert cells[f"{forward.FAST}/official"] == f"{0.5 / 1.05:.3f}"
    assert cells["ceiling GFLOP/s (default, oneDNN)"] == "200, 400"
    assert cells["ours GFLOP/s (% of ceiling)"] == "200 (50 %)"
    assert cells[f"{forward.FAST} GFLOP/s (% of ceiling)"] == "400 (100 %)"
    assert "speed-up 2.00x" in text and "The fast path's choices in this run: made-up choices." in text
    goals = _table_rows(text[text.index("| goal |") :])
    assert len({len(r) for r in goals}) == 1  # every goal row has the header's cells


def _bf16_goal(goals: dict[str, list[str]]) -> list[str]:
    return next(v for k, v in goals.items() if k.startswith("bf16 autocast"))


@pytest.mark.parametrize("kind", ["AVX2-like", "AVX-512-like"])
def test_forward_goals_are_held_to_the_hosts_own_ceilings(kind: str) -> None:
    avx512 = kind == "AVX-512-like"
    # AVX2-like: oneDNN's product 0.9x the default's, bf16 products 6.8x slower (warned);
    # AVX-512-like: oneDNN 2.2x, bf16 products 3x faster.
    results = _forward_results(2.2 if avx512 else 0.9, 3.0 if avx512 else 1 / 6.8, warned=not avx512)
    goals = _goal_rows(forward.report(results))
    # The bounds from the host module's constants: the issue's goal where the host allows the gain, else
    # "not slower" (NOISE). Measured: the default path 1.0 / 1.1 = 0.909, the fast path 0.5 / 1.1 = 0.455.
    bound = 0.90 if avx512 else host.NOISE
    default = "0.909: missed" if avx512 else "0.909: met"
    assert goals["worst time / transformers"] == [f"<= {bound:.3g}", default, "0.455: met"]
    assert goals["worst time / official, batch 8"][0] == ("<= 1" if avx512 else f"<= {host.NOISE:.3g}")
    # The fast path against the default path (2x here): SHARE of oneDNN's gain, or "not slower".
    # Without a gain, "not slower" within the noise the same kernels showed: our default path took 1.1x
    # transformers' time (1 s against 1.1 s), more than NOISE.
    fast_bound = host.SHARE * 2.2 if avx512 else 1 / 1.1
    assert goals["fast path"] == [f">= {fast_bound:.3g}", "-", "2: met"]
    assert goals["ViT-L batch 8, fraction of the ceiling"][0] == ">= 0.85"  # already relative to this host
    if avx512:
        # The issue's 1.5x (below 3x / NOISE); measured 2x.
        assert _bf16_goal(goals)[:2] == [">= 1.5x", "2.00x, loss 1.0e-04: met"]
    else:
        assert _bf16_goal(goals)[:2] == ["warns", "2.00x, loss 1.0e-04, warned: met"]
        results["bf16"]["ceiling"]["warned"] = False  # type: ignore[index]
        assert _bf16_goal(_goal_rows(forward.report(results)))[1].endswith("NOT warned: missed")


def test_forward_noise_allowance_is_what_the_same_kernels_show_in_the_run() -> None:
    """transformers and the official code run the same kernels: where they differ by more than 5 % in a run,
    "not slower" allows that much (on a host without a oneDNN gain)."""
    results = _forward_results(0.9, 1 / 6.8, warned=True)
    row = results["forward"][0]  # type: ignore[index]
    row["seconds"] |= {"transformers": 1.2, "official": 1.0, forward.FAST: 1.1}  # ours 1.0: 0.909x ours
    text = forward.report(results)
    assert "1.2 against the references (transformers vs the official code), 1.2 for the fast path" in text
    goals = _goal_rows(text)
    assert goals["fast path"] == [f">= {1 / 1.2:.3g}", "-", f"{1 / 1.1:.3g}: met"]  # 0.909 >= 0.833
    assert goals["worst time / official, batch 8"] == ["<= 1.2", "1: met", "1.1: met"]
    # The references agree, our default path is 1.15x the official code: the fast path is allowed that spread
    # against the default path, the goals against the references only 5 %.
    row["seconds"] |= {"transformers": 1.0, "ours": 1.15, forward.FAST: 1.3}
    goals = _goal_rows(forward.report(results))
    assert goals["fast path"] == [f">= {1 / 1.15:.3g}", "-", f"{1.15 / 1.3:.3g}: met"]  # 0.885 >= 0.870
    assert goals["worst time / official, batch 8"][:2] == ["<= 1.05", "1.15: missed"]
    row["seconds"] |= {"ours": 1.0}  # the same kernels agree: 5 % is all the noise allowed
    assert _goal_rows(forward.report(results))["fast path"] == [f">= {1 / 1.05:.3g}", "-", f"{1 / 1.3:.3g}: missed"]


def test_options_without_a_benchmark_name_are_refused_with_a_hint() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--repeats", "3"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "python -m benchmarks forward --repeats" in done.stderr


def _train_run(tmp_path: Path, variants: str, rounds: int = 2) -> dict[str, object]:
    out = tmp_path / "train.json"
    args = ["--model", "tiny", "--batch", "2", "--rounds", str(rounds), "--variants", variants,
            "--curve-model", "tiny", "--curve-steps", "3", "--repeat-slow", "--json", str(out)]  # fmt: skip
    assert train.main(args) == 0
    results: dict[str, object] = json.loads(out.read_text())
    return results


# Made-up bf16 product timings (float32 10 ms): 5x slower (an emulating CPU) or 3.3x faster (native bf16).
BF16_COSTS = {"slower": (0.050, 0.050), "faster": (0.003, 0.003)}


@pytest.mark.parametrize("bf16", list(BF16_COSTS))
def test_train_benchmark_times_every_variant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bf16: str
) -> None:
    monkeypatch.delenv("MAE_OFFICIAL_REPO", raising=False)  # ours only: a known table on every machine
    # The bf16 measurement is injected: the goal it decides (a warning, or a speed-up) is checked on both sides of
    # the threshold on every host, and the benchmark's ceiling and the commands' warning read the same figures.
    forward_s, backward_s = BF16_COSTS[bf16]
    monkeypatch.setattr(
        cpu, "measure_product_cost", lambda dtype, **_: cpu.ProductCost(dtype, 0.010, forward_s, 0.010, backward_s)
    )
    results = _train_run(tmp_path, "ours,fast,bf16,fp16,official")
    rows = results["steps"]["rows"]  # type: ignore[index]
    assert set(rows) == {"ours", "bf16", "fp16"} | ({"fast"} if mae.onednn_available() else set())
    for row in rows.values():
        assert len(row["seconds"]) == 2 and not row["warmup_only"]
        assert row["images_per_s"] == pytest.approx(2 / statistics.median(row["seconds"]))  # batch 2, 1 step/call
        assert row["peak_growth_bytes"] is not None and row["peak_growth_bytes"] >= 0
    assert results["ceilings"]["bf16"]["speedup"] == pytest.approx(0.010 / forward_s)  # type: ignore[index]
    curve = results["curve"]  # type: ignore[index]
    reference = curve["curves"]["ours"]
    assert len(reference) == 3 and curve["curves"].keys() == rows.keys()
    for name, losses in curve["curves"].items():
        if name != "ours":
            gap = max(abs(a / b - 1) for a, b in zip(losses, reference, strict=True))
            assert curve["max_rel_diff"][name] == pytest.approx(gap, rel=1e-12, abs=0)
    text = capsys.readouterr().out
    assert "CPU instruction sets:" in text.splitlines()[0]
    assert "The official engine was not run (MAE_OFFICIAL_REPO unset): ours only." in text
    # The best float32 and bf16 steps, profiled once: their products are a part of all their operators' time.
    shares = results["steps"]["products"]  # type: ignore[index]
    assert set(shares) == {train.best_of(rows, train.FLOAT32), train.best_of(rows, train.BF16)}
    for share in shares.values():
        assert 0 < share["products_s"] < share["profiled_s"]
    best_bf16 = train.best_of(rows, train.BF16)
    assert f"Where the {best_bf16} step's time goes (one profiled call): the matrix products" in text
    table = _table_rows(text[: text.index("| goal |")])
    assert len(table) == 1 + len(rows) and len({len(r) for r in table}) == 1
    assert [r[0] for r in table[1:]] == [train.LABELS[n] for n in rows]
    assert all(r[5] == "-" for r in table[1:])  # no "/ official" ratio without the official engine
    goals = _goal_rows(text)
    bf16_goal = goals["bf16 autocast / the official engine, images/s"]
    if bf16 == "slower":  # bf16 products slower on this CPU: the goal is the warning, and it was given
        assert bf16_goal == ["warns", "warned", "met"]
    else:  # faster: a speed goal against the official engine, which did not run
        assert bf16_goal[0] == f">= {min(train.GOALS['bf16'], 0.010 / 0.003 / host.NOISE):.3g}x"
        assert bf16_goal[1].startswith("not measured: MAE_OFFICIAL_REPO unset") and bf16_goal[2] == "-"
    if "fast" in rows:
        gemm = results["ceilings"]["gemm"]  # type: ignore[index]
        bound = host.fast_over_default_bound(gemm["oneDNN"] / gemm["default"])
        value = rows["fast"]["images_per_s"] / rows["ours"]["images_per_s"]
        verdict = "met" if round(value, 2) >= bound else "missed"  # the verdict of the printed, rounded value
        assert goals["float32 fast path / our default path, images/s"] == [f">= {bound:.3g}x", f"{value:.2f}x", verdict]
        assert "The fast path's choices in this run: oneDNN fast path: " in text


def test_products_lines_leave_the_goal_its_room() -> None:
    """Injected: bf16_fast's products are 60 % of its profiled time and its median step 1.0 s; the official
    step 3.0 s. The 3x goal needs 1.0 s; the products take 0.6 s of it: 0.4 s left for the rest (now 0.4 s)."""
    rows = {"bf16_fast": {"seconds_per_step": 1.0}, "official": {"seconds_per_step": 3.0}}
    results = {"steps": {"rows": rows, "products": {"bf16_fast": {"products_s": 0.6, "profiled_s": 1.0}}}}
    (line,) = train.products_lines(results)
    assert (
        "the matrix products 60% of its operators' time, so about 0.60 s of its 1.00 s median, the rest 0.40 s" in line
    )
    assert "Issue 17's 3x needs the step at 1.00 s (the official engine's 3.00 s / 3)" in line
    assert line.endswith("leaves 0.40 s for the rest.")
    rows["official"]["seconds_per_step"] = 2.4
    (line,) = train.products_lines(results)
    assert line.endswith(
        "at 0.80 s (the official engine's 2.40 s / 3): at these products' speed that leaves 0.20 s for the rest."
    )


@pytest.mark.parametrize("kind", ["AVX2-like", "AVX-512-like"])
def test_train_report_ratios_and_verdicts_held_to_the_host(kind: str) -> None:
    avx512 = kind == "AVX-512-like"

    def row(images_per_s: float, warmup_only: bool = False) -> dict[str, object]:
        return {"seconds": [8 / images_per_s], "images_per_s": images_per_s, "seconds_per_step": 8 / images_per_s,
                "peak_growth_bytes": 2.5e9, "warmup_s": 1.0, "warmup_only": warmup_only}  # fmt: skip

    # oneDNN's product 2.2x (AVX-512-like) or 0.9x (AVX2-like) the default's; bf16 products 3x faster or 47x slower.
    gemm = {"default": 200.0, "oneDNN": 440.0 if avx512 else 180.0}
    bf16 = {"speedup": 3.0 if avx512 else 1 / 47, "warned": not avx512, "detail": "made up"}
    results = {
        "host": "test", "device": "cpu", "load_average": [0.1, 0.2],
        "args": {"model": "base", "batch": 8, "steps": 1, "rounds": 1},
        "ceilings": {"gemm": gemm, "bf16": bf16},
        "steps": {
            "rows": {"ours": row(2.0), "fast": row(4.0), "bf16": row(0.1, warmup_only=True), "official": row(2.0)},
            "state_bytes": 1.3e9, "img_size": 224,
        },
        "curve": {"model": "small", "steps": 20, "batch": 8, "curves": {"ours": [1.0, 0.5]},
                  "max_rel_diff": {"bf16": 0.03}},
        "fast_path": "made-up choices",
    }  # fmt: skip
    text = train.report(results)
    table = {r[0]: r[1:] for r in _table_rows(text[: text.index("| goal |")])}
    assert table[train.LABELS["fast"]][3:6] == ["2.00", "2.00", "2.5"]  # / ours, / official, peak GB
    assert table[train.LABELS["bf16"]][-1].startswith("1 (its warm-up")
    goals = _goal_rows(text)
    # Bounds from the host module's constants: the issue's 1.8x where oneDNN gains 2.2x (< 2.2 / NOISE), else
    # "not slower" (1 / NOISE); the fast path over ours: SHARE of the product gain, else 1 / NOISE.
    fast_bound = 1.8 if avx512 else 1 / host.NOISE
    assert goals["float32 fast path"] == [f">= {fast_bound:.3g}x", "2.00x", "met"]  # (`--fast`) / the official
    over_ours = host.SHARE * 2.2 if avx512 else 1 / host.NOISE
    assert goals["float32 fast path / our default path, images/s"] == [f">= {over_ours:.3g}x", "2.00x", "met"]
    bf16_goal = goals["bf16 autocast / the official engine, images/s"]
    assert bf16_goal == ([">= 2.86x", "0.05x", "missed"] if avx512 else ["warns", "0.05x, warned", "met"])  # 3 / 1.05
    assert goals["bf16 loss within 2 % of float32 at every step"] == ["<= 0.02", "3.0e-02", "missed"]
    assert "ours only" not in text and "The fast path's choices in this run: made-up choices." in text
    assert "oneDNN's float32 product 440 GFLOP/s" in text if avx512 else "(0.90x)" in text
    # The same kernels (ours, official) at 2.0 and 1.8 images/s: 1.11x of noise in the run, allowed.
    results["steps"]["rows"]["official"] = row(1.8)  # type: ignore[index]
    goals = _goal_rows(train.report(results))
    assert goals["float32 fast path / our default path, images/s"][0] == (
        f">= {over_ours:.3g}x" if avx512 else f">= {1.8 / 2.0:.3g}x"
    )
    if not avx512:
        bf16["warned"] = False  # a command that stayed silent misses the goal
        goals = _goal_rows(train.report(results))
        assert goals["bf16 autocast / the official engine, images/s"] == [
            "warns",
            f"{0.1 / 1.8:.2f}x, NOT warned",
            "missed",
        ]


def test_train_report_on_cuda_holds_the_gpu_goal_against_the_official_float16_engine() -> None:
    """Injected GPU figures (no GPU here): the official engine at 100 images/s (float16 autocast there); ours in
    float16 140 (default path) and 160 (`--fast`), bf16 120 and 150. Issue 17's GPU goal: >= 1.3x in float16
    and in bf16; the CPU goals (oneDNN, bf16 3x) are not this device's and are left out."""

    def row(images_per_s: float, peak: float) -> dict[str, object]:
        return {"seconds": [64 / images_per_s], "images_per_s": images_per_s, "seconds_per_step": 64 / images_per_s,
                "peak_growth_bytes": peak, "warmup_s": 1.0, "warmup_only": False}  # fmt: skip

    rows = {"ours": row(50.0, 30e9), "fp16": row(140.0, 16e9), "fp16_fast": row(160.0, 16e9),
            "bf16": row(120.0, 16e9), "bf16_fast": row(150.0, 16e9), "official": row(100.0, 20e9)}  # fmt: skip
    results = {
        "host": "test", "device": "cuda:0", "load_average": [0.1, 0.2],
        "args": {"model": "base", "batch": 64, "steps": 5, "rounds": 3},
        "ceilings": {"bf16": {"speedup": None, "warned": False, "detail": "GPU"}},
        "steps": {"rows": rows, "state_bytes": 1.3e9, "img_size": 224},
        "curve": {"model": "small", "steps": 20, "batch": 8, "curves": {"ours": [1.0, 0.5]},
                  "max_rel_diff": {"fp16": 1e-3, "fp16_fast": 2e-3, "bf16": 0.03, "bf16_fast": 0.01}},
    }  # fmt: skip
    text = train.report(results)
    table = {r[0]: r[1:] for r in _table_rows(text[: text.index("| goal |")])}
    assert table["official engine (float16 autocast on CUDA)"][4] == "1.00"  # the official's label on CUDA
    assert table[train.LABELS["fp16"]][4] == "1.40"
    goals = _goal_rows(text)
    assert goals["float16 default-path step"] == [">= 1.3x", "1.40x", "met"]
    assert goals["best float16 step"] == [">= 1.3x", "1.60x", "met"]
    assert goals["best bf16 step"] == [">= 1.3x", "1.50x", "met"]
    assert goals["fp16 loss within 2 % of float32 at every step"] == ["<= 0.02", "1.0e-03", "met"]
    assert goals["bf16 loss within 2 % of float32 at every step"] == ["<= 0.02", "3.0e-02", "missed"]
    assert not any(g.startswith("float32 fast path") or "3x" in g for g in goals)
    assert "fp16 16 GB (0.80x)" in text and "official 20 GB (1.00x)" in text  # peak memory beside the official's
    # Our default path in float16 at 1.25x the official's, bf16 alone (no --fast) at 1.2x: both missed.
    for name in ("fp16_fast", "bf16_fast"):
        del rows[name]
    rows["fp16"] = row(125.0, 16e9)
    goals = _goal_rows(train.report(results))
    assert goals["float16 default-path step"] == [">= 1.3x", "1.25x", "missed"]
    assert "best float16 step" not in goals  # the default path is the best float16 step: one row
    assert goals["best bf16 step"] == [">= 1.3x", "1.20x", "missed"]
    del rows["official"]
    goals = _goal_rows(train.report(results))
    assert goals["best bf16 step"] == [">= 1.3x", "not measured: MAE_OFFICIAL_REPO unset", "-"]


def test_train_benchmark_variants_by_default_follow_the_device() -> None:
    cpu_variants = train.default_variants(torch.device("cpu"))
    assert "fp16" in cpu_variants and "fp16_fast" not in cpu_variants and "official" in cpu_variants
    assert set(cpu_variants) | {"fp16_fast"} == set(train.LABELS)
    assert train.default_variants(torch.device("cuda")) == list(train.CUDA_VARIANTS)
    assert set(train.CUDA_VARIANTS) <= set(train.LABELS) and "fast" not in train.CUDA_VARIANTS


def test_train_benchmark_runs_the_official_engine(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    results = _train_run(tmp_path, "ours,official", rounds=1)
    assert set(results["steps"]["rows"]) == {"ours", "official"}  # type: ignore[index]
    # The official engine and ours train bit for bit alike in float32 (same seed, data and masks).
    curve = results["curve"]  # type: ignore[index]
    assert curve["curves"]["official"] == curve["curves"]["ours"] and curve["max_rel_diff"]["official"] == 0.0
    assert "engine_pretrain" not in sys.modules and not any(n == "util" or n.startswith("util.") for n in sys.modules)


def test_train_benchmark_is_registered_and_checks_its_variants() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "train", "--variants", "ours,nope"], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown variants ['nope']" in done.stderr


def test_timing_rotates_the_order_so_no_implementation_always_runs_first() -> None:
    """A fixed order gave the first implementation (ours, right after the ceiling's 4096x4096 products) a few
    percent more time in every row on the AVX2 host; each repetition now starts one place later."""
    calls: list[str] = []
    functions = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    forward.timed(functions, 3, torch.device("cpu"))  # type: ignore[arg-type]
    warm_up, rounds = calls[:3], [calls[3:6], calls[6:9], calls[9:12]]
    assert warm_up == ["a", "b", "c"]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]  # each first, middle and last once
    assert [name for name, _ in forward.rotated(functions, 4)] == ["b", "c", "a"]
