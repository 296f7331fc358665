"""`mae verify`: prove this implementation equal to the independent references on this machine.

For each variant it checks, against every reference that is installed:
- keys: the official key counts and order, the encoder's keys against timm's MAE encoder, every shape
  against transformers' `ViTMAEForPreTraining`; LayerNorm eps 1e-6 everywhere;
- forward: under a shared seed, mask and pred (and loss) bit-equal to transformers for mask ratios
  0.75 / 0 / 0.9 and both reconstruction targets; the opt-in oneDNN fast path (float32, CPU) with
  the same masks and loss and pred within 1e-5 + 1e-5 x |value|;
- encoder: full-image features against timm, bit-equal (the same kernels on the same shapes);
- random-init loss: ViT-L on a noise image lands in [1.6, 1.95] (about 1.74) and equals transformers';
- official: with $MAE_OFFICIAL_REPO set, the same seed gives bit-identical weights and outputs;
- checkpoints in data/ ($MAE_HOME): the loss of the official ViT-L files on the same noise image,
  encoder-only about 1.87 (the decoder is random) and full about 1.0; skipped, with the download
  command, when the files are absent.

The references live in the repository's `reference/` package and need the `verify` extra
(transformers, timm); they are imported here only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import is_decoder_key
from .files import data_dir
from .mae import MaskedAutoencoderViT
from .models import create_model
from .onednn import onednn_available, set_onednn_linear

VARIANTS = {
    "base": ("mae_vit_base_patch16", "ViT-B/16"),
    "large": ("mae_vit_large_patch16", "ViT-L/16"),
    "huge": ("mae_vit_huge_patch14", "ViT-H/14"),
}
# Official key counts (total, encoder, decoder) and parameter counts.
KEY_COUNTS = {"base": (254, 150, 104), "large": (398, 294, 104), "huge": (494, 390, 104)}
PARAM_COUNTS = {"base": 111_907_840, "large": 329_541_888, "huge": 657_074_508}
LOSS_RANGE = (1.6, 1.95)  # random-init ViT-L on a noise image, ratio 0.75, pixel target: about 1.74
# The official ViT-L files on the same noise image (the project's loss table):
# file -> (row label, expected range, model name).
CHECKPOINT_LOSSES = {
    "mae_pretrain_vit_large.pth": ("encoder-only checkpoint loss", (1.7, 2.05), "mae_vit_large_patch16"),  # ~1.87
    "mae_visualize_vit_large.pth": ("full checkpoint loss", (0.85, 1.15), "mae_vit_large_patch16"),  # ~1.0
}
RATIOS = (0.75, 0.0, 0.9)
CPU = torch.device("cpu")
REDUCED_PRECISION_LOSS = 0.01  # in bf16/fp16 autocast, losses must agree within 1 % (relative)
# The oneDNN fast path (mae/onednn.py) sums in another order: loss and pred within atol + rtol x |value|.
FAST_PATH_ATOL, FAST_PATH_RTOL = 1e-5, 1e-5


@dataclass(frozen=True)
class Setting:
    """Where and in which precision the forwards run. float32 is held to bit equality; a reduced
    precision (autocast) to losses within 1 % and identical masks."""

    device: torch.device = CPU
    dtype: torch.dtype = torch.float32

    @property
    def exact(self) -> bool:
        return self.dtype == torch.float32

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=not self.exact)

    def describe(self) -> str:
        return f"{self.device.type}, {str(self.dtype).removeprefix('torch.')}"

    def agree(self, a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
        """(loss, pred, mask) pairs agree: bit for bit in float32, else same mask and loss within 1 %."""
        if self.exact:
            return all(_same(x, y) for x, y in zip(a, b, strict=True))
        loss_a, loss_b = float(a[0]), float(b[0])
        close = (math.isnan(loss_a) and math.isnan(loss_b)) or abs(loss_a - loss_b) <= REDUCED_PRECISION_LOSS * abs(
            loss_b
        )
        return close and _same(a[2], b[2])

    def criterion(self) -> str:
        return "bit-equal" if self.exact else "mask equal, loss within 1 %"


@dataclass
class Check:
    """One row of the verification table."""

    variant: str
    check: str
    reference: str
    status: str  # "pass", "FAIL", "skip", or "info" (a measurement with no stated bound)
    detail: str


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit equality, where NaN equals NaN (the loss at mask ratio 0 is 0/0 in every implementation)."""
    if torch.equal(a, b):
        return True
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan])


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().nan_to_num(0.0).max()) if a.numel() else 0.0


def _check_keys(variant: str, model: MaskedAutoencoderViT) -> list[Check]:
    rows = []
    sd = model.state_dict()
    n_dec = sum(is_decoder_key(k) for k in sd)
    counts = (len(sd), len(sd) - n_dec, n_dec)
    params = sum(t.numel() for t in sd.values())
    ok = counts == KEY_COUNTS[variant] and params == PARAM_COUNTS[variant]
    rows.append(
        Check(
            variant,
            "keys: official counts",
            "official",
            "pass" if ok else "FAIL",
            f"{counts[0]}/{counts[1]}/{counts[2]} keys, {params:,} parameters",
        )
    )
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    bad = [m.eps for m in norms if m.eps != 1e-6]
    rows.append(
        Check(
            variant,
            "LayerNorm eps",
            "official",
            "FAIL" if bad else "pass",
            f"{len(norms)} LayerNorms, eps 1e-6" + (f"; found {sorted(set(bad))}" if bad else ""),
        )
    )
    if _installed("timm"):
        from reference.timm_encoder import timm_encoder_keys

        theirs = timm_encoder_keys(variant)
        ours = {k: tuple(v.shape) for k, v in sd.items() if not is_decoder_key(k)}
        ok = list(ours.items()) == list(theirs.items())
        rows.append(
            Check(
                variant, "keys: encoder", "timm", "pass" if ok else "FAIL", f"{len(theirs)} keys and shapes, same order"
            )
        )
    if _installed("transformers"):
        from transformers import ViTMAEForPreTraining

        from reference.hf import hf_config, official_to_hf

        with torch.device("meta"):
            hf = ViTMAEForPreTraining(hf_config(model.config))
        theirs_shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
        ours_shapes = {k: tuple(v.shape) for k, v in official_to_hf(sd).items()}
        ok = ours_shapes == theirs_shapes
        rows.append(
            Check(
                variant,
                "keys: all shapes",
                "transformers",
                "pass" if ok else "FAIL",
                f"{len(theirs_shapes)} tensors after the q/k/v split",
            )
        )
    return rows


def _check_transformers(variant: str, model: MaskedAutoencoderViT, imgs: torch.Tensor, setting: Setting) -> list[Check]:
    from reference.hf import build_hf, hf_forward

    hf = build_hf(model.config, model.state_dict())
    rows = []
    fast = _fast_path_reason(setting)  # None: the oneDNN fast path is checked too
    fast_ok, fast_worst = True, 0.0
    saved = model.config
    try:
        for target in (False, True):
            model.config = dataclasses.replace(saved, norm_pix_loss=target)
            hf.config.norm_pix_loss = target
            worst, equal, bits, losses = 0.0, True, True, []
            for ratio in RATIOS:
                with torch.no_grad(), setting.autocast():
                    torch.manual_seed(0)
                    loss, pred, mask = model(imgs, mask_ratio=ratio)
                    torch.manual_seed(0)
                    h_loss, h_pred, h_mask, _ = hf_forward(hf, imgs, ratio)
                equal &= setting.agree((loss, pred, mask), (h_loss, h_pred, h_mask))
                bits &= all(_same(a, b) for a, b in ((loss, h_loss), (pred, h_pred), (mask, h_mask)))
                worst = max(worst, _max_diff(pred, h_pred), _max_diff(loss, h_loss))
                losses.append(f"{loss.item():.4f}")
                if fast is None:
                    outputs = _onednn_forward(model, imgs, ratio)
                    fast_ok &= _within_fast_path_tolerance(outputs, (h_loss, h_pred, h_mask))
                    fast_worst = max(fast_worst, _max_diff(outputs[1], h_pred), _max_diff(outputs[0], h_loss))
            name = "forward, norm-pix target" if target else "forward, pixel target"
            rows.append(
                Check(
                    variant,
                    name,
                    "transformers",
                    "pass" if equal else "FAIL",
                    f"ratios {'/'.join(map(str, RATIOS))}: "
                    f"{'bit-equal' if bits else setting.criterion() if equal else 'differ'}, "
                    f"max abs diff {worst:.1e}; loss {'/'.join(losses)}",
                )
            )
    finally:
        model.config = saved
    name = "forward, oneDNN fast path"
    if fast is not None:
        rows.append(Check(variant, name, "transformers", "skip", fast))
    else:
        rows.append(
            Check(
                variant,
                name,
                "transformers",
                "pass" if fast_ok else "FAIL",
                f"both targets, ratios {'/'.join(map(str, RATIOS))}: mask equal, "
                f"max abs diff {fast_worst:.1e} (tolerance {FAST_PATH_ATOL:g} abs + {FAST_PATH_RTOL:g} rel)",
            )
        )
    return rows


def _fast_path_reason(setting: Setting) -> str | None:
    """Why the oneDNN fast path is not checked in this setting, or None when it is."""
    if setting.device.type != "cpu" or not setting.exact:
        return "the fast path concerns float32 on the CPU"
    if not onednn_available():
        return "this PyTorch build has no oneDNN"
    return None


def _onednn_forward(model: MaskedAutoencoderViT, imgs: torch.Tensor, ratio: float) -> tuple[torch.Tensor, ...]:
    set_onednn_linear(model, True)
    try:
        with torch.no_grad():
            torch.manual_seed(0)
            return tuple(model(imgs, mask_ratio=ratio))
    finally:
        set_onednn_linear(model, False)


def _within_fast_path_tolerance(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    """(loss, pred, mask): masks bit-equal; loss and pred within FAST_PATH_ATOL + FAST_PATH_RTOL x |b|
    (NaN where the other has NaN: the loss at ratio 0)."""
    close = all(
        torch.allclose(x, y, rtol=FAST_PATH_RTOL, atol=FAST_PATH_ATOL, equal_nan=True)
        for x, y in zip(a[:2], b[:2], strict=True)
    )
    return close and _same(a[2], b[2])


def _check_timm(variant: str, model: MaskedAutoencoderViT, imgs: torch.Tensor, setting: Setting) -> Check:
    from reference.timm_encoder import build_timm_encoder

    encoder = build_timm_encoder(variant, {k: v for k, v in model.state_dict().items() if not is_decoder_key(k)})
    with torch.no_grad(), setting.autocast():
        ours, theirs = model.forward_features(imgs).float(), encoder.forward_features(imgs).float()
    diff = _max_diff(ours, theirs)
    if setting.exact:
        ok, tolerance = torch.equal(ours, theirs), "bit-equal required"
    else:
        relative = float((ours - theirs).norm() / theirs.norm())
        ok, tolerance = relative <= REDUCED_PRECISION_LOSS, f"relative error {relative:.1e}, tolerance 1 %"
    return Check(
        variant, "encoder features", "timm", "pass" if ok else "FAIL", f"max abs diff {diff:.1e} ({tolerance})"
    )


def _check_random_init_loss(
    variant: str, model: MaskedAutoencoderViT, imgs: torch.Tensor, setting: Setting
) -> list[Check]:
    rows = []
    with torch.no_grad(), setting.autocast():
        torch.manual_seed(0)
        loss = model(imgs, mask_ratio=0.75)[0].item()
    if not setting.exact:
        with torch.no_grad():
            torch.manual_seed(0)
            full = model(imgs, mask_ratio=0.75)[0].item()
        relative = abs(loss / full - 1)
        rows.append(
            Check(
                variant,
                f"{str(setting.dtype).removeprefix('torch.')} loss vs float32",
                "ours, float32",
                "pass" if relative <= REDUCED_PRECISION_LOSS else "FAIL",
                f"{loss:.4f} vs {full:.4f}: relative difference {relative:.1e} (tolerance 1 %)",
            )
        )
    lo, hi = LOSS_RANGE
    if variant != "large":
        rows.append(Check(variant, "random-init loss", "-", "info", f"{loss:.4f} (a range is stated for ViT-L only)"))
        return rows
    status = "pass" if lo <= loss <= hi and math.isfinite(loss) else "FAIL"
    rows.append(Check(variant, "random-init loss", "expected range", status, f"{loss:.4f}, expected in [{lo}, {hi}]"))
    return rows


def _check_official(variant: str, model: MaskedAutoencoderViT, imgs: torch.Tensor, setting: Setting) -> list[Check]:
    from reference import official

    reason = official.skip_reason()
    if reason:
        return [Check(variant, "weights and forward", "official", "skip", reason)]
    torch.manual_seed(0)
    theirs = official.build_official(variant).eval()
    sd_t, sd_o = theirs.state_dict(), model.state_dict()
    same_weights = list(sd_t) == list(sd_o) and all(torch.equal(sd_t[k], sd_o[k].cpu()) for k in sd_t)
    theirs.to(setting.device)
    equal = True
    for ratio in RATIOS:
        with torch.no_grad(), setting.autocast():
            torch.manual_seed(0)
            a = model(imgs, mask_ratio=ratio)
            torch.manual_seed(0)
            b = theirs(imgs, mask_ratio=ratio)
        equal &= setting.agree(a, b)
    return [
        Check(
            variant,
            "same-seed weights",
            "official",
            "pass" if same_weights else "FAIL",
            f"{len(sd_t)} tensors bit-identical" if same_weights else "weights differ",
        ),
        Check(
            variant,
            "forward",
            "official",
            "pass" if equal else "FAIL",
            f"{setting.criterion()} at ratios " + "/".join(map(str, RATIOS)) if equal else "outputs differ",
        ),
    ]


def noise_image() -> torch.Tensor:
    """The verification input: a 1x3x224x224 standard-normal image, seed 0."""
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def checkpoint_loss(path: Path, name: str) -> float:
    """Loss of a checkpoint on the noise image (ratio 0.75, seed 0; a missing decoder is drawn with seed 0)."""
    torch.manual_seed(0)
    model = create_model(name, checkpoint_path=path).eval()
    with torch.no_grad():
        torch.manual_seed(0)
        return float(model(noise_image(), mask_ratio=0.75)[0])


def _check_checkpoints(variant: str, progress: Callable[[str], None]) -> list[Check]:
    rows = []
    for file, (label, (lo, hi), model_name) in CHECKPOINT_LOSSES.items():
        path = data_dir() / file
        if not path.is_file():
            rows.append(Check(variant, label, file, "skip", f"{path} not found: mae download {file}"))
            continue
        progress(f"{VARIANTS[variant][1]}: loss of {path}")
        try:
            loss = checkpoint_loss(path, model_name)
        except ValueError as e:  # CheckpointError
            rows.append(Check(variant, label, file, "FAIL", str(e)))
            continue
        ok = lo <= loss <= hi
        rows.append(Check(variant, label, file, "pass" if ok else "FAIL", f"{loss:.4f}, expected in [{lo}, {hi}]"))
    return rows


def verify_variant(variant: str, progress: Callable[[str], None], setting: Setting | None = None) -> list[Check]:
    """Every check for one variant; builds the model with seed 0."""
    setting = setting or Setting()
    name, label = VARIANTS[variant]
    start = time.perf_counter()
    torch.manual_seed(0)
    model = create_model(name).eval().to(setting.device)
    progress(f"{label}: built {name} in {time.perf_counter() - start:.1f} s ({setting.describe()})")
    imgs = noise_image().to(setting.device)
    rows = _check_keys(variant, model)
    if _installed("transformers"):
        progress(f"{label}: forward against transformers")
        rows += _check_transformers(variant, model, imgs, setting)
    else:
        rows.append(Check(variant, "forward", "transformers", "skip", "not installed: pip install 'mae[verify]'"))
    if _installed("timm"):
        progress(f"{label}: encoder against timm")
        rows.append(_check_timm(variant, model, imgs, setting))
    else:
        rows.append(Check(variant, "encoder features", "timm", "skip", "not installed: pip install 'mae[verify]'"))
    rows += _check_random_init_loss(variant, model, imgs, setting)
    progress(f"{label}: official code")
    rows += _check_official(variant, model, imgs, setting)
    if variant == "large":
        del model
        rows += _check_checkpoints(variant, progress)
    progress(f"{label}: done in {time.perf_counter() - start:.1f} s")
    return rows


def format_table(rows: list[Check]) -> str:
    """A Markdown table of the checks."""
    lines = ["| variant | check | reference | result | detail |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {VARIANTS[r.variant][1]} | {r.check} | {r.reference} | {r.status} | {r.detail} |")
    return "\n".join(lines)


def run(variants: list[str], report: Path | None = None, setting: Setting | None = None) -> int:
    """Run the checks, print the table, write the report; exit status 0 only if nothing failed."""
    setting = setting or Setting()

    def progress(message: str) -> None:
        print(f"[mae verify] {message}", file=sys.stderr, flush=True)

    rows: list[Check] = []
    for variant in variants:
        rows += verify_variant(variant, progress, setting)
    table = format_table(rows)
    print(table)
    failed = [r for r in rows if r.status == "FAIL"]
    parity_ran = any(r.reference in ("transformers", "timm", "official") and r.status != "skip" for r in rows)
    if not parity_ran:
        print("no reference is installed, so nothing was compared: pip install 'mae[verify]'", file=sys.stderr)
    summary = (
        f"{sum(r.status == 'pass' for r in rows)} passed, {len(failed)} failed, "
        f"{sum(r.status == 'skip' for r in rows)} skipped"
    )
    print(summary)
    if report is not None:
        if report.suffix == ".json":
            report.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n")
        else:
            report.write_text(f"# mae verify ({setting.describe()})\n\n{table}\n\n{summary}\n")
    return 1 if failed or not parity_ran else 0
