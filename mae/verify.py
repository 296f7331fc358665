"""`mae verify`: prove this implementation equal to the independent references on this machine.

For each variant it checks, against every reference that is installed:
- keys: the official key counts (pinned for the official variants; the layout's counts for any other),
  the encoder's keys against timm's MAE encoder (official variants), every key's order and shape against
  transformers' `ViTMAEForPreTraining` built from the same configuration; LayerNorm eps 1e-6 everywhere;
- forward: under a shared seed, mask and pred (and loss) bit-equal to transformers for mask ratios
  0.75 / 0 / 0.9 and both reconstruction targets; the opt-in oneDNN fast path (float32, CPU; every
  product by oneDNN) with the same masks and loss and pred within 1e-5 + 1e-5 x |value|, and, as
  information, which library the fast path chooses for each product shape on this CPU;
- encoder: full-image features against timm, bit-equal (the same kernels on the same shapes);
- random-init loss: ViT-L on a noise image lands in [1.6, 1.95] (about 1.74) and equals transformers';
- official: with $MAE_OFFICIAL_REPO set, the same seed gives bit-identical weights and outputs (the
  official factory for the official variants, the official class with the same configuration otherwise);
- checkpoints in data/ ($MAE_HOME): the loss of the official ViT-L files on the same noise image,
  encoder-only about 1.87 (the decoder is random) and full about 1.0; skipped, with the download
  command, when the files are absent.

The variants are those of the registry (`mae.models.register_model`): the official ones under their short
keys (`--variant base`), every other under its model name (`--variant mae_vit_small_patch16`).

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from .checkpoint import is_decoder_key
from .config import MAEConfig
from .cpu import warn_if_reduced_precision_is_slow
from .files import data_dir
from .mae import MaskedAutoencoderViT
from .models import create_model, get_variant, list_variants
from .onednn import fast_path_summary, onednn_available, recording_choices, set_onednn_linear

# The official variants: short key -> model name. Their facts below are those of the official release,
# pinned here, never derived; every other registered variant is verified under its model name.
OFFICIAL_VARIANTS = {"base": "mae_vit_base_patch16", "large": "mae_vit_large_patch16", "huge": "mae_vit_huge_patch14"}
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


class _VariantTable(Mapping[str, tuple[str, str]]):
    """`--variant` key -> (model name, label) for every registered variant, read from the registry at each
    use: a variant registered after this module was imported is verified like the others."""

    def _table(self) -> dict[str, tuple[str, str]]:
        keys = {name: key for key, name in OFFICIAL_VARIANTS.items()}
        return {keys.get(v.name, v.name): (v.name, v.display) for v in list_variants()}

    def __getitem__(self, key: str) -> tuple[str, str]:
        return self._table()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


VARIANTS: Mapping[str, tuple[str, str]] = _VariantTable()


def resolve_variant(variant: str) -> str:
    """The `--variant` key of a key ("base") or of any registered name or alias ("mae_vit_base_patch16_dec512d8b").

    An unknown one raises ValueError listing the valid keys.
    """
    if variant in VARIANTS:
        return variant
    try:
        name = get_variant(variant).name
    except ValueError:
        raise ValueError(
            f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}, any registered model name "
            "(mae.list_models()), or all"
        ) from None
    return {n: key for key, n in OFFICIAL_VARIANTS.items()}.get(name, name)


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


def _layout_key_counts(config: MAEConfig) -> tuple[int, int, int]:
    """(total, encoder, decoder) key counts of the official layout for any configuration: 12 tensors a
    block; the encoder adds cls_token, pos_embed, the patch projection and its norm (6), the decoder
    mask_token, decoder_pos_embed, decoder_embed, decoder_norm and decoder_pred (8)."""
    encoder, decoder = 6 + 12 * config.depth, 8 + 12 * config.decoder_depth
    return encoder + decoder, encoder, decoder


def _check_counts(variant: str, model: MaskedAutoencoderViT) -> Check:
    sd = model.state_dict()
    n_dec = sum(is_decoder_key(k) for k in sd)
    counts = (len(sd), len(sd) - n_dec, n_dec)
    params = sum(t.numel() for t in sd.values())
    detail = f"{counts[0]}/{counts[1]}/{counts[2]} keys, {params:,} parameters"
    if variant in KEY_COUNTS:
        ok = counts == KEY_COUNTS[variant] and params == PARAM_COUNTS[variant]
        return Check(variant, "keys: official counts", "official", "pass" if ok else "FAIL", detail)
    if get_variant(VARIANTS[variant][0]).official:
        return Check(
            variant, "keys: official counts", "official", "FAIL", f"{detail}; no official counts are pinned for it"
        )
    expected = _layout_key_counts(model.config)
    ok = counts == expected
    return Check(
        variant,
        "keys: counts",
        "official layout",
        "pass" if ok else "FAIL",
        detail + ("" if ok else f"; expected {expected[0]}/{expected[1]}/{expected[2]} keys"),
    )


def _check_keys(variant: str, model: MaskedAutoencoderViT) -> list[Check]:
    rows = [_check_counts(variant, model)]
    sd = model.state_dict()
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
    if _installed("timm") and variant in OFFICIAL_VARIANTS:
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

        from reference.hf import hf_config, hf_to_official, official_to_hf

        with torch.device("meta"):
            hf = ViTMAEForPreTraining(hf_config(model.config))
            hf_sd = hf.state_dict()
            official_order = list(hf_to_official(hf_sd))  # the official registration order, from their keys
        theirs_shapes = {k: tuple(v.shape) for k, v in hf_sd.items()}
        ours_shapes = {k: tuple(v.shape) for k, v in official_to_hf(sd).items()}
        ok = ours_shapes == theirs_shapes and list(sd) == official_order
        rows.append(
            Check(
                variant,
                "keys: all shapes",
                "transformers",
                "pass" if ok else "FAIL",
                f"{len(theirs_shapes)} tensors after the q/k/v split; {len(sd)} keys in the official order",
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
        rows.append(_fast_path_choice(variant, model, imgs))
        rows.append(
            Check(
                variant,
                name,
                "transformers",
                "pass" if fast_ok else "FAIL",
                f"every product by oneDNN (mode='always'), both targets, ratios {'/'.join(map(str, RATIOS))}: "
                f"mask equal, max abs diff {fast_worst:.1e} "
                f"(tolerance {FAST_PATH_ATOL:g} abs + {FAST_PATH_RTOL:g} rel)",
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
    set_onednn_linear(model, True, mode="always")  # every product by oneDNN: the route whose tolerance is held
    try:
        with torch.no_grad():
            torch.manual_seed(0)
            return tuple(model(imgs, mask_ratio=ratio))
    finally:
        set_onednn_linear(model, False)


def _fast_path_choice(variant: str, model: MaskedAutoencoderViT, imgs: torch.Tensor) -> Check:
    """What `set_onednn_linear(model, True)` chooses on this CPU for this forward (timed at first use)."""
    set_onednn_linear(model, True)
    try:
        with torch.no_grad(), recording_choices() as chosen:
            torch.manual_seed(0)
            model(imgs, mask_ratio=0.75)
    finally:
        set_onednn_linear(model, False)
    return Check(variant, "fast path: its choice on this CPU", "-", "info", fast_path_summary(chosen))


def _within_fast_path_tolerance(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    """(loss, pred, mask): masks bit-equal; loss and pred within FAST_PATH_ATOL + FAST_PATH_RTOL x |b|
    (NaN where the other has NaN: the loss at ratio 0)."""
    close = all(
        torch.allclose(x, y, rtol=FAST_PATH_RTOL, atol=FAST_PATH_ATOL, equal_nan=True)
        for x, y in zip(a[:2], b[:2], strict=True)
    )
    return close and _same(a[2], b[2])


def _check_timm(variant: str, model: MaskedAutoencoderViT, imgs: torch.Tensor, setting: Setting) -> Check:
    if variant not in OFFICIAL_VARIANTS:
        return Check(
            variant, "encoder features", "timm", "skip", "timm names MAE encoders for the official variants only"
        )
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
    if variant not in OFFICIAL_VARIANTS and model.config.in_chans != 3:
        return [Check(variant, "weights and forward", "official", "skip", "the official patchify needs 3 channels")]
    torch.manual_seed(0)
    if variant in OFFICIAL_VARIANTS:
        theirs = official.build_official(variant).eval()
    else:  # the official class, built from this variant's configuration
        theirs = official.build_official_custom(**_official_kwargs(model.config)).eval()
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


def _official_kwargs(config: MAEConfig) -> dict[str, object]:
    """The official `MaskedAutoencoderViT` keyword arguments of a configuration."""
    return dict(
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        decoder_embed_dim=config.decoder_embed_dim,
        decoder_depth=config.decoder_depth,
        decoder_num_heads=config.decoder_num_heads,
        mlp_ratio=config.mlp_ratio,
        norm_layer=partial(nn.LayerNorm, eps=config.norm_eps),
        norm_pix_loss=config.norm_pix_loss,
    )


def noise_image(config: MAEConfig | None = None) -> torch.Tensor:
    """The verification input: a standard-normal image, seed 0; 1x3x224x224, or the size of `config`."""
    chans, size = (3, 224) if config is None else (config.in_chans, config.img_size)
    return torch.randn(1, chans, size, size, generator=torch.Generator().manual_seed(0))


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
    imgs = noise_image(model.config).to(setting.device)
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


# The rows of `_check_official` that ran the official code (its other "official" rows are pinned facts).
_OFFICIAL_CODE_CHECKS = ("same-seed weights", "forward")


def _ran_a_reference(row: Check) -> bool:
    """Whether a row compared against a reference's code: transformers, timm, or the official checkout. The
    pinned official facts (key counts, LayerNorm eps) hold without any reference installed, so they do not count."""
    if row.status not in ("pass", "FAIL"):
        return False
    return row.reference in ("transformers", "timm") or (
        row.reference == "official" and row.check in _OFFICIAL_CODE_CHECKS
    )


def run(variants: list[str], report: Path | None = None, setting: Setting | None = None) -> int:
    """Run the checks, print the table, write the report; exit status 0 only if nothing failed and at least one
    reference ran (without any, it says so and returns 1)."""
    setting = setting or Setting()
    variants = [resolve_variant(v) for v in variants]  # an unknown name fails before any work
    warn_if_reduced_precision_is_slow(setting.dtype, setting.device, "--dtype", training=False)

    def progress(message: str) -> None:
        print(f"[mae verify] {message}", file=sys.stderr, flush=True)

    rows: list[Check] = []
    for variant in variants:
        rows += verify_variant(variant, progress, setting)
    table = format_table(rows)
    print(table)
    failed = [r for r in rows if r.status == "FAIL"]
    parity_ran = any(_ran_a_reference(r) for r in rows)
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
