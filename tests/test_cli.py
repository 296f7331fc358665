"""`mae verify` end to end: a subprocess writing a report, and a failing check turning the exit code."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mae import verify
from mae.onednn import onednn_available


@pytest.mark.xdist_group("base")
def test_verify_base_passes_and_writes_a_json_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "mae", "verify", "--variant", "base", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| ViT-B/16 | forward, pixel target | transformers | pass | ratios 0.75/0.0/0.9: bit-equal" in done.stdout
    assert "[mae verify] ViT-B/16: built" in done.stderr  # progress goes to stderr
    rows = json.loads(report.read_text())
    statuses = {(r["check"], r["reference"]): r["status"] for r in rows}
    assert statuses[("keys: official counts", "official")] == "pass"
    assert statuses[("encoder features", "timm")] == "pass"
    assert statuses[("forward, norm-pix target", "transformers")] == "pass"
    fast_path = statuses[("forward, oneDNN fast path", "transformers")]
    assert fast_path == ("pass" if onednn_available() else "skip")
    assert {r["status"] for r in rows} <= {"pass", "skip", "info"}


@pytest.mark.xdist_group("base")
def test_a_failing_check_fails_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(verify.PARAM_COUNTS, "base", 1)
    forward = verify._onednn_forward

    def off_by_1e4(*args: Any) -> tuple[torch.Tensor, ...]:
        loss, pred, mask = forward(*args)
        return loss, pred + 1e-4, mask

    monkeypatch.setattr(verify, "_onednn_forward", off_by_1e4)
    report = tmp_path / "report.md"
    assert verify.run(["base"], report) == 1
    assert "| ViT-B/16 | keys: official counts | official | FAIL |" in report.read_text()
    if onednn_available() and importlib.util.find_spec("transformers"):
        assert "| ViT-B/16 | forward, oneDNN fast path | transformers | FAIL |" in report.read_text()


def test_help_lists_verify() -> None:
    done = subprocess.run([sys.executable, "-m", "mae", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "verify" in done.stdout


FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "tiny_rgb.pth"


def run_mae(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mae", *args], capture_output=True, text=True, timeout=300)


def test_inspect_says_what_a_file_holds(tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "mae_pretrain_vit_large_full.pth"  # an official name: the target is known
    shutil.copy(FIXTURE, path)
    done = run_mae("inspect", str(path))
    assert done.returncode == 0, done.stderr
    assert "holds:         encoder + decoder" in done.stdout
    assert "tensors:       50 (39,616 values; float32)" in done.stdout
    assert "official file: mae_pretrain_vit_large_full.pth, pretrain-full family" in done.stdout
    assert "target:        norm_pix_loss=True (from the official file name)" in done.stdout
    record = json.loads(run_mae("inspect", "--json", str(path)).stdout)
    assert (record["kind"], record["num_tensors"], record["embed_dim"], record["depth"]) == ("full", 50, 32, 2)


def test_inspect_refuses_a_malicious_file(tmp_path: Path) -> None:
    import os

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    torch.save({"model": Payload()}, tmp_path / "evil.pth")
    done = run_mae("inspect", str(tmp_path / "evil.pth"))
    assert done.returncode == 1 and "refused to load" in done.stderr
    assert not (tmp_path / "PWNED").exists()


def test_convert_round_trip_through_the_command(tmp_path: Path) -> None:
    done = run_mae("convert", str(FIXTURE), str(tmp_path / "w.safetensors"))
    assert done.returncode == 0 and "wrote" in done.stdout, done.stderr
    done = run_mae("convert", str(tmp_path / "w.safetensors"), str(tmp_path / "back.pth"))
    assert done.returncode == 0, done.stderr
    a = torch.load(FIXTURE, weights_only=True)["model"]
    b = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    again = run_mae("convert", str(FIXTURE), str(tmp_path / "back.pth"))
    assert again.returncode == 1 and "exists" in again.stderr


def test_download_through_the_command_from_a_loopback_server(tmp_path: Path) -> None:
    import functools
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    payload = FIXTURE.read_bytes()
    (served / "mae_visualize_vit_large.pth").write_bytes(payload)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mae_visualize_vit_large.pth"
        md5 = hashlib.md5(payload).hexdigest()[:6]
        done = run_mae("download", "mae_visualize_vit_large.pth", "--url", url, "--dir", str(tmp_path / "d"),
                       "--md5", md5, "--quiet")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "d" / "mae_visualize_vit_large.pth").read_bytes() == payload
        assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["mae_visualize_vit_large.pth"]
        bad = run_mae("download", "other.pth", "--url", url, "--dir", str(tmp_path / "e"), "--md5", "000000", "--quiet")
        assert bad.returncode == 1 and "md5" in bad.stderr
        assert not (tmp_path / "e" / "other.pth").exists()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    listing = run_mae("download", "--list")
    assert listing.returncode == 0 and "mae_pretrain_vit_large.pth" in listing.stdout and "b8b06e" in listing.stdout


@pytest.mark.xdist_group("base")
def test_verify_in_bfloat16_autocast(tmp_path: Path) -> None:
    report = tmp_path / "bf16.json"
    assert verify.run(["base"], report, verify.Setting(torch.device("cpu"), torch.bfloat16)) == 0
    rows = {(r["check"], r["reference"]): r for r in json.loads(report.read_text())}
    assert rows[("forward, pixel target", "transformers")]["status"] == "pass"  # measured: even bit-equal
    assert rows[("bfloat16 loss vs float32", "ours, float32")]["status"] == "pass"
    assert rows[("encoder features", "timm")]["status"] == "pass"
    fast_path = rows[("forward, oneDNN fast path", "transformers")]
    assert fast_path["status"] == "skip" and fast_path["detail"] == "the fast path concerns float32 on the CPU"


def test_unavailable_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run_mae("verify", "--variant", "base", "--device", "cuda")
    assert done.returncode == 1 and "CUDA is not available on this machine" in done.stderr


def test_reconstruct_onednn_outside_float32_cpu_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mae.cli import main

    out = tmp_path / "r.png"
    assert main(["reconstruct", "--onednn", "--dtype", "bfloat16", "-o", str(out)]) == 1
    assert "--onednn is a float32 CPU fast path" in capsys.readouterr().err
    assert not out.exists()
