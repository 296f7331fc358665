"""Every registered variant, held to the same checks, and proof that a newly registered one is covered.

The per-variant checks here and in `test_mae.py` are parametrised from the registry when the module is
collected (`helpers.variant_params`): key order, shapes, eps, initialisation statistics and draw order,
the forward against transformers, `mae verify`'s table, the models table of `mae/models/README.md`. The
last tests register throwaway variants (one sound, one broken), run pytest on those two files for them,
and check which checks ran and which failed.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import helpers
import mae
import mae.cli
from helpers import full_model, small_config, variant_params
from mae import verify
from mae.models import get_variant, list_variants, register_model, unregister_model
from mae.pos_embed import get_2d_sincos_pos_embed
from reference import official

TESTS = Path(__file__).resolve().parent
MODELS_README = TESTS.parent / "mae" / "models" / "README.md"


def meta_model(name: str) -> mae.MaskedAutoencoderViT:
    with torch.device("meta"):
        return mae.create_model(name)


# ------------------------------------------------------------------------------------------------- keys


@pytest.mark.parametrize("variant", variant_params())
def test_keys_in_the_official_order(variant: str) -> None:
    """Every key in the official module's order, as transformers' model of the same configuration gives it
    back through the reference adapter (its q/k/v folded into qkv), and the parameters under those names."""
    from transformers import ViTMAEForPreTraining

    from reference.hf import hf_config, hf_to_official

    model = meta_model(variant)
    with torch.device("meta"):
        theirs = hf_to_official(ViTMAEForPreTraining(hf_config(model.config)).state_dict())
    assert list(model.state_dict()) == list(theirs)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert [n for n, _ in model.named_parameters()] == list(theirs)  # no renaming layer


# ------------------------------------------------------------------------------------- initialisation


SAMPLE = 1 << 16  # draws whose spread is measured per tensor: i.i.d., so the first ones are a fair sample


def _uniform_spread_ok(w: torch.Tensor, bound: float) -> bool:
    """Every |w| <= bound, and the std of (up to) SAMPLE draws within 6 standard errors of U(-bound, bound)'s
    bound / sqrt(3): the sample std of n uniform draws has relative standard error sqrt((kurtosis - 1) / 4n)
    = sqrt(0.2 / n). (A sample keeps ViT-H's 630M weights cheap; the bound is checked on all of them.)"""
    low, high = torch.aminmax(w.detach())
    sample = w.detach().flatten()[:SAMPLE]
    expected = bound / math.sqrt(3)
    spread = abs(sample.std().item() - expected) <= 6 * math.sqrt(0.2 / sample.numel()) * expected
    return bool(-low <= bound and high <= bound) and spread


@pytest.mark.parametrize("variant", variant_params())
def test_initialisation_statistics(variant: str) -> None:
    """The official recipe on the built model (seed 0): sin-cos tables, xavier-uniform Linears with zero
    bias, LayerNorms 1/0, the patch projection xavier on its flattened view, tokens N(0, 0.02)."""
    model = full_model(variant)
    c = model.config
    assert torch.equal(model.pos_embed[0], get_2d_sincos_pos_embed(c.embed_dim, c.grid_size, cls_token=True))
    assert torch.equal(
        model.decoder_pos_embed[0], get_2d_sincos_pos_embed(c.decoder_embed_dim, c.grid_size, cls_token=True)
    )
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {"pos_embed", "decoder_pos_embed"}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            assert _uniform_spread_ok(m.weight, math.sqrt(6.0 / (m.in_features + m.out_features))), name
            assert torch.all(m.bias == 0), name
        elif isinstance(m, nn.LayerNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name
    # Patch projection: xavier on the flattened [D, C*p*p] view (fan_out = D, not D*p*p).
    w = model.patch_embed.proj.weight
    assert _uniform_spread_ok(w, math.sqrt(6.0 / (w.shape[0] + w[0].numel())))
    assert w.abs().max() > math.sqrt(6.0 / (w.shape[0] * c.patch_size**2 + w[0].numel()))  # not the conv fans
    # Its bias keeps Conv2d's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in the official model.
    b = model.patch_embed.proj.bias
    assert b.abs().max() <= 1 / math.sqrt(w[0].numel()) and b.abs().min() > 0
    for token in (model.cls_token, model.mask_token):  # N(0, 0.02): within 6 standard errors
        n = token.numel()
        assert abs(token.mean().item()) <= 6 * 0.02 / math.sqrt(n)
        assert abs(token.std().item() - 0.02) <= 6 * 0.02 / math.sqrt(2 * n)


DRAWS = ("kaiming_uniform_", "uniform_", "xavier_uniform_", "normal_")


@pytest.mark.parametrize("variant", variant_params())
def test_random_draws_in_the_official_order(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The order of every random draw, construction and recipe, as in the official model (models_mae.py):
    without it, the same seed would not give the official weights. The draws are recorded, not made, so a
    full-size model costs no more than its allocation."""
    calls: list[tuple[str, int]] = []
    for draw in DRAWS:

        def record(tensor: torch.Tensor, *args: object, _draw: str = draw, **kwargs: object) -> torch.Tensor:
            calls.append((_draw, tensor.data_ptr()))
            return tensor

        monkeypatch.setattr(nn.init, draw, record)
    model = mae.create_model(variant)
    monkeypatch.undo()
    names = {p.data_ptr(): n for n, p in model.named_parameters()}
    drawn = [(f, names[ptr]) for f, ptr in calls]

    c = model.config

    def linears(prefix: str, depth: int) -> list[str]:
        return [f"{prefix}.{i}.{m}" for i in range(depth) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]

    layers = [*linears("blocks", c.depth), "decoder_embed", *linears("decoder_blocks", c.decoder_depth), "decoder_pred"]
    construction = [("kaiming_uniform_", "patch_embed.proj.weight"), ("uniform_", "patch_embed.proj.bias")]
    for layer in layers:
        construction += [("kaiming_uniform_", f"{layer}.weight"), ("uniform_", f"{layer}.bias")]
    recipe = [("xavier_uniform_", "patch_embed.proj.weight"), ("normal_", "cls_token"), ("normal_", "mask_token")]
    recipe += [("xavier_uniform_", f"{layer}.weight") for layer in layers]
    assert drawn == construction + recipe


# ------------------------------------------------------------------------------------ verify and docs


@pytest.mark.parametrize("variant", variant_params())
def test_mae_verify_lists_the_variant(variant: str) -> None:
    """`mae verify --variant NAME` (and `all`) runs every registered variant, under its short key if official."""
    key = verify.resolve_variant(variant)
    assert verify.VARIANTS[key] == (variant, get_variant(variant).display)
    official_key = {name: k for k, name in helpers.VARIANTS.items()}.get(variant)
    assert key == (official_key or variant)


def _models_table() -> dict[str, list[str]]:
    """The first table of mae/models/README.md: row label -> cells, one per variant column."""
    rows: dict[str, list[str]] = {}
    for line in MODELS_README.read_text().splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
        elif rows:
            break
    return rows


def _table_column(model: mae.MaskedAutoencoderViT, name: str) -> dict[str, str]:
    """The cells a variant's column must hold, computed from the built (meta) model."""
    c = model.config
    sd = model.state_dict()
    decoder = {k for k in sd if k.startswith("decoder_") or k == "mask_token"}
    total = sum(t.numel() for t in sd.values())
    encoder = sum(t.numel() for k, t in sd.items() if k not in decoder)
    fixed = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    grid = 224 // c.patch_size
    return {
        "class": f"`{type(model).__name__}`",
        "short name": f"`{name}`",
        "encoder dim / blocks / heads": f"{c.embed_dim} / {c.depth} / {c.num_heads}",
        "head dim": f"{c.embed_dim // c.num_heads}",
        "patch, grid at 224": f"{c.patch_size}, {grid}x{grid}",
        "patches L / visible at 75%": f"{grid * grid} / {int(grid * grid * (1 - 0.75))}",
        "decoder dim / blocks / heads": f"{c.decoder_embed_dim} / {c.decoder_depth} / {c.decoder_num_heads}",
        "pixel head (p*p*3)": f"{c.patch_size**2 * c.in_chans}",
        "parameters, total": f"{total:,}",
        "of which encoder": f"{encoder:,}",
        "of which decoder": f"{total - encoder:,}",
        "of which fixed (pos tables)": f"{fixed:,}",
        "state_dict keys (total / encoder / decoder)": f"{len(sd)} / {len(sd) - len(decoder)} / {len(decoder)}",
    }


@pytest.mark.parametrize("variant", variant_params())
def test_listed_in_the_models_table(variant: str) -> None:
    """Its column in mae/models/README.md, with the sizes and counts of the built model."""
    table = _models_table()
    expected = _table_column(meta_model(variant), variant)
    wanted = "\n".join(f"| {row} | {cell} |" for row, cell in expected.items())
    assert f"`{variant}`" in table["short name"], (
        f"{variant} is registered but has no column in {MODELS_README}; add one with:\n{wanted}"
    )
    column = table["short name"].index(f"`{variant}`")
    found = {row: table[row][column] for row in expected}
    assert found == expected, f"the {variant} column of {MODELS_README} should read:\n{wanted}"


# ------------------------------------------------------------------------- a throwaway variant, end to end

SOUND = "mae_vit_throwaway_patch8"
BROKEN = "mae_vit_broken_throwaway_patch8"
TINY = small_config(img_size=32, patch_size=8, embed_dim=64, num_heads=4, decoder_embed_dim=32)

# Every check that must run on a newly registered variant (file, test function).
PER_VARIANT_CHECKS = {
    ("test_mae.py", "test_shapes_equal_transformers"),
    ("test_mae.py", "test_every_layernorm_has_eps_1e6"),
    ("test_mae.py", "test_forward_equals_transformers_bit_for_bit"),
    ("test_mae.py", "test_manual_attention_path_within_1e5"),
    ("test_variants.py", "test_keys_in_the_official_order"),
    ("test_variants.py", "test_initialisation_statistics"),
    ("test_variants.py", "test_random_draws_in_the_official_order"),
    ("test_variants.py", "test_mae_verify_lists_the_variant"),
    ("test_variants.py", "test_listed_in_the_models_table"),
}


class DecoderInitialisedFirst(mae.MaskedAutoencoderViT):
    """A variant whose recipe initialises the decoder's layers before the encoder's: every statistic is
    right, yet the same seed no longer gives the official weights."""

    def initialize_weights(self) -> None:
        self._init_encoder_tokens()
        self._init_decoder_tokens()
        self._init_decoder_layers()
        self._init_encoder_layers()


def _sound(**overrides: Any) -> mae.MaskedAutoencoderViT:
    return mae.MaskedAutoencoderViT(TINY, **overrides)


def _broken(**overrides: Any) -> mae.MaskedAutoencoderViT:
    return DecoderInitialisedFirst(TINY, **{"norm_eps": 1e-5, **overrides})


@pytest.fixture
def throwaways() -> Iterator[Callable[[str, Callable[..., mae.MaskedAutoencoderViT]], None]]:
    """Register variants for one test; they are unregistered (and their cached models dropped) after it."""
    registered: list[str] = []

    def register(name: str, factory: Callable[..., mae.MaskedAutoencoderViT]) -> None:
        register_model(name, factory, label=f"throwaway {name}")
        registered.append(name)

    yield register
    for name in registered:
        unregister_model(name)
        helpers._built.pop(name, None)


class _Reports:
    """A pytest plugin that keeps the test reports of a run."""

    def __init__(self) -> None:
        self.reports: list[pytest.TestReport] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.append(report)


def test_a_registered_variant_is_checked_by_every_per_variant_test(
    throwaways: Callable[[str, Callable[..., mae.MaskedAutoencoderViT]], None],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    throwaways(SOUND, _sound)
    throwaways(BROKEN, _broken)
    assert {SOUND, BROKEN} <= set(mae.list_models()) and SOUND not in mae.list_models(official=True)
    assert SOUND in [p.values[0] for p in variant_params()]
    # `pytest -k throwaway` on the two files, in this process (where the throwaways are registered): the
    # test modules are imported anew, so their parametrisation reads the registry as it is now. (Not
    # pytester's inline run: it drops the modules a run imports first, and torch cannot import some twice.)
    for module in ("test_mae", "test_variants"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    collected = _Reports()
    args = [str(TESTS / "test_mae.py"), str(TESTS / "test_variants.py"), "-k", "throwaway", "-q"]
    args += ["-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}"]
    pytest.main(args, plugins=[collected])
    outcomes: dict[str, dict[tuple[str, str], str]] = {SOUND: {}, BROKEN: {}}
    for report in collected.reports:
        if report.when == "call" or report.outcome != "passed":
            path, test = report.nodeid.split("::")
            function, variant = re.fullmatch(r"(\w+)\[(\w+)\]", test).groups()  # type: ignore[union-attr]
            outcomes[variant][(Path(path).name, function)] = report.outcome
    # Every per-variant check ran on both, and nothing else was selected.
    assert set(outcomes[SOUND]) == set(outcomes[BROKEN]) == PER_VARIANT_CHECKS
    # The sound one passes them all but the models table: it is not documented, and that check says so.
    assert {check for check, outcome in outcomes[SOUND].items() if outcome != "passed"} == {
        ("test_variants.py", "test_listed_in_the_models_table")
    }
    # The broken one fails exactly where it is wrong: its eps and its order of draws.
    assert {check for check, outcome in outcomes[BROKEN].items() if outcome != "passed"} == {
        ("test_mae.py", "test_every_layernorm_has_eps_1e6"),
        ("test_variants.py", "test_random_draws_in_the_official_order"),
        ("test_variants.py", "test_listed_in_the_models_table"),
    }


def test_mae_verify_runs_a_registered_variant(
    throwaways: Callable[[str, Callable[..., mae.MaskedAutoencoderViT]], None], tmp_path: Path
) -> None:
    """`mae verify --variant NAME` for two throwaways: the sound one passes, the broken one fails its eps."""
    throwaways(SOUND, _sound)
    throwaways(BROKEN, _broken)
    assert {SOUND, BROKEN} <= set(verify.VARIANTS)  # `mae verify --variant all` includes them
    report = tmp_path / "report.json"
    assert verify.run([SOUND, BROKEN], report) == 1
    rows = json.loads(report.read_text())
    assert {r["variant"] for r in rows} == {SOUND, BROKEN}
    sound = {(r["check"], r["reference"]): r for r in rows if r["variant"] == SOUND}
    assert {r["status"] for r in sound.values()} <= {"pass", "skip", "info"}
    assert sound[("keys: counts", "official layout")]["status"] == "pass"
    assert sound[("keys: all shapes", "transformers")]["status"] == "pass"
    assert sound[("LayerNorm eps", "official")]["status"] == "pass"
    for target in ("pixel", "norm-pix"):
        row = sound[(f"forward, {target} target", "transformers")]
        assert row["status"] == "pass" and "bit-equal" in row["detail"], row
    broken = [r for r in rows if r["variant"] == BROKEN]
    failed = {(r["check"], r["reference"]): r["detail"] for r in broken if r["status"] == "FAIL"}
    assert failed.pop(("LayerNorm eps", "official")) == "8 LayerNorms, eps 1e-6; found [1e-05]"
    if official.skip_reason() is None:  # the official class of the same configuration draws in its own order
        assert failed.pop(("same-seed weights", "official")) == "weights differ"
        assert failed.pop(("forward", "official")) == "outputs differ"
    assert not failed


def test_mae_verify_refuses_an_unknown_variant_before_any_work() -> None:
    with pytest.raises(ValueError, match=r"unknown variant 'mae_vit_giant'; valid: base, .*mae_vit_small_patch16"):
        verify.run(["mae_vit_giant"])


def test_the_official_variants_are_the_pinned_ones() -> None:
    """The registry's official variants are exactly those whose facts the tests and `mae verify` pin."""
    official = {v.name for v in list_variants(official=True)}
    assert official == set(helpers.VARIANTS.values()) == set(verify.OFFICIAL_VARIANTS.values())
    assert helpers.VARIANTS == verify.OFFICIAL_VARIANTS


def test_inspect_names_a_file_of_a_registered_variant(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    throwaways: Callable[[str, Callable[..., mae.MaskedAutoencoderViT]], None],
) -> None:
    """`mae inspect` names a registered non-official variant's file (the checkpoint layer knows only the official
    names) by its encoder and decoder sizes, and the `create_model` line it prints loads the file."""
    sizes = dict(img_size=32, patch_size=8, embed_dim=40, depth=3, num_heads=4, decoder_embed_dim=24, decoder_depth=2)
    throwaways("mae_vit_inspect_me", lambda **o: mae.MaskedAutoencoderViT(small_config(**{**sizes, **o})))
    torch.manual_seed(0)
    state = mae.MaskedAutoencoderViT(small_config(**sizes)).state_dict()
    other = mae.MaskedAutoencoderViT(small_config(**{**sizes, "decoder_depth": 1})).state_dict()
    files = {
        "full": {"model": state},
        "encoder": {"model": {k: v for k, v in state.items() if not k.startswith(("decoder_", "mask_token"))}},
        "other_decoder": {"model": other},  # mọi kích thước khớp trừ số khối decoder: không được đặt tên
    }
    printed = {}
    for name, content in files.items():
        torch.save(content, tmp_path / f"{name}.pth")
        assert mae.cli.main(["inspect", str(tmp_path / f"{name}.pth")]) == 0
        printed[name] = capsys.readouterr().out
    for name in ("full", "encoder"):
        line = f"load with:     mae.create_model('mae_vit_inspect_me', checkpoint_path='{tmp_path / name}.pth')"
        assert line in printed[name] and "architecture:  throwaway mae_vit_inspect_me, 3 blocks" in printed[name]
    assert "load with" not in printed["other_decoder"] and "a custom ViT/8" in printed["other_decoder"]
    loaded = mae.create_model("mae_vit_inspect_me", checkpoint_path=tmp_path / "full.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert mae.cli.main(["inspect", "--json", str(tmp_path / "full.pth")]) == 0
    assert json.loads(capsys.readouterr().out)["model_name"] == "mae_vit_inspect_me"
