"""The official training recipe's figures, kept as data in fixtures/official/recipe/ (made by
`make_fixtures.py --official`, see `fixtures/official_recipe.py`), reproduced by OUR command-line path where the
official code is absent, as in CI:

- the augmentations: for stored images and seeds, the output of the transform `mae pretrain` trains with
  (`main_pretrain.py`'s transform_train), of `mae finetune`'s training and evaluation transforms (timm's
  `create_transform` at the `main_finetune.py` defaults) and of `mae linprobe`'s crop and evaluation transform
  (`main_linprobe.py`, `util/crop.py`) — each taken from the trainer the command line runs (`recipe_helpers`);
- the head `mae finetune` / `mae linprobe` draw after loading `--finetune`, from the same flags and seed as the
  official scripts (`trunc_normal_` std 2e-5 / 0.01 after the official set-up order);
- LARS as `mae linprobe` builds it (its own defaults: the flags give only lr and weight decay), step by step;
- the lr schedule the trainers build from each command's defaults, at fractional epochs, on groups with and
  without an lr_scale;
- the layer-decay groups `mae finetune` builds (scales, weight decays, members).

Every file records the official commit, the library versions and torch's CPU kernel level it was made with.
On that kind of CPU every figure must be bit-equal; elsewhere within the bound stated beside each comparison.
With $MAE_OFFICIAL_REPO set, the official code re-computes every file and must find it unchanged (same rule).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from recipe_helpers import Built, build, model_input, official_recipe
from train_helpers import TINY_ARGS, TINY_CLASSIFIER_ARGS, make_classification_data, make_image_folder

import mae.cli
from helpers import make_fixtures
from mae.classifier import VisionTransformer
from mae.train.finetune import FINETUNE, redraw_head
from mae.train.linprobe import LINPROBE, add_probe_head
from reference import official

recipe = official_recipe()
RECIPE = recipe.RECIPE_DIR


def load(name: str) -> dict[str, Any]:
    record: dict[str, Any] = torch.load(RECIPE / f"{name}.pt", weights_only=True, map_location="cpu")
    return record


FILES = {name: load(name) for name in recipe.NAMES}
COMMIT: str = FILES["transforms"]["official"]["commit"]
HELD_TO = f"official facebookresearch/mae commit {COMMIT}"
MADE_ON: str = FILES["transforms"]["versions"]["cpu_capability"]
SAME_KERNELS = torch.backends.cpu.get_cpu_capability() == MADE_ON
HOST = "" if SAME_KERNELS else f" (made on {MADE_ON}, this host runs {torch.backends.cpu.get_cpu_capability()})"

# Bounds off the kind of CPU the files were made on (bit equality there). Measured here by forcing torch's other
# kernel levels (ATEN_CPU_CAPABILITY=default / avx2 on an AVX-512 Xeon), and derived:
# - pixels: Pillow resamples 8-bit images in fixed point with weights computed in double precision, so a build
#   whose weights differ in a last bit may round a pixel to the next level; ToTensor's division and Normalize's
#   subtraction and division are correctly rounded element by element (the same bits on every instruction set).
#   Random erasing fills with torch's normal draws, whose vectorised Box-Muller differs per kernel level by a
#   few float32 ulps (measured: 1.8e-6). One 8-bit level after normalisation (the smallest std, 0.224) bounds both.
LEVEL = 1 / (255 * 0.224)
# - the head: trunc_normal_ is uniform_ (a serial kernel: the same bits everywhere), erfinv_, a product and a
#   clamp, each within an ulp or two (measured: equal at every kernel level): 4 float32 ulps relative.
HEAD_RTOL = 4 * torch.finfo(torch.float32).eps
# - LARS: the two norms of each weight update are vectorised reductions (their order follows the kernel level),
#   and momentum carries their rounding on: measured 1.4e-6 over the 4 steps (DEFAULT against AVX-512).
LARS_TOL = 1e-5
# - the schedule and the layer-decay scales are Python floats: math.cos and ** come from the C library, whose
#   variants per instruction set (glibc's FMA ones) agree to within an ulp; a few operations follow.
FLOAT64_RTOL = 4 * torch.finfo(torch.float64).eps


def assert_official(ours: torch.Tensor, theirs: torch.Tensor, what: str, *, atol: float, rtol: float = 0.0) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, f"{what}: {ours.shape} {ours.dtype} ({HELD_TO})"
    if SAME_KERNELS:
        assert torch.equal(ours, theirs), f"{what}: max diff {(ours - theirs).abs().max()} ({HELD_TO})"
    else:
        torch.testing.assert_close(ours, theirs, atol=atol, rtol=rtol, msg=f"{what}{HOST}: {HELD_TO}")


def assert_same_float(ours: float, theirs: float, what: str) -> None:
    if SAME_KERNELS:
        assert ours == theirs, f"{what}: {ours!r} != {theirs!r} ({HELD_TO})"
    else:
        assert math.isclose(ours, theirs, rel_tol=FLOAT64_RTOL, abs_tol=1e-300), f"{what}{HOST}: {HELD_TO}"


needs_official = pytest.mark.skipif(official.skip_reason() is not None, reason=str(official.skip_reason()))


def test_every_file_records_the_commit_versions_and_instruction_set() -> None:
    assert sorted(p.stem for p in RECIPE.glob("*.pt")) == sorted(recipe.NAMES)
    assert len(COMMIT) == 40 and all(c in "0123456789abcdef" for c in COMMIT)
    for name, record in FILES.items():
        assert record["official"] == FILES["transforms"]["official"], f"{name}: not the {HELD_TO}"
        assert sorted(record["official"]["git_blobs"]) == sorted(recipe.RECIPE_FILES), name
        assert record["versions"] == FILES["transforms"]["versions"], name
        assert {"torch", "timm", "numpy", "python", "cpu_capability"} <= set(record["versions"]), name
    # The same official commit as the model's fixtures.
    assert json.loads((RECIPE.parent / "init_digests.json").read_text())["official"]["commit"] == COMMIT


# ------------------------------------------------------------------------------ what the commands build


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA (a flat folder, for pre-training) and DATA/train + DATA/val (3 classes, for the classifiers)."""
    root = tmp_path_factory.mktemp("recipe")
    make_image_folder(root / "flat", classes=0, per_class=8)
    make_classification_data(root / "classes")
    return root


@pytest.fixture(scope="module")
def head_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The data and pre-trained checkpoint the heads were drawn with (`official_recipe.make_run_inputs`)."""
    data, checkpoint = recipe.make_run_inputs(tmp_path_factory.mktemp("heads"))
    return data, checkpoint


def pretrain_built(data: Path, *flags: str) -> Built:
    return build(
        "pretrain", "--data_path", str(data / "flat"), *TINY_ARGS, "--batch_size", "4", "--output_dir", "", *flags
    )


def classifier_built(command: str, data: Path, *flags: str) -> Built:
    return build(command, "--data_path", str(data / "classes"), *TINY_CLASSIFIER_ARGS, "--output_dir", "", *flags)


def linprobe_built(data: Path, *flags: str) -> Built:
    """`mae linprobe` at its default 224 px (patch 32: 49 tokens), as the official linear probe crops."""
    model = ["--model", "vit_base_patch16", "--model_args", "patch_size=32", "embed_dim=32", "depth=1", "num_heads=4"]
    common = ["--num_workers", "0", "--device", "cpu", "--batch_size", "4", "--output_dir", "", "--log_dir", ""]
    return build("linprobe", "--data_path", str(data / "classes"), *model, *common, *flags)


def build_args(command: str, *flags: str) -> argparse.Namespace:
    """``mae COMMAND FLAGS`` parsed by the command line's own parser."""
    return mae.cli.build_parser().parse_args([command, "--data_path", "unused", *flags])


# ----------------------------------------------------------------------------------------- transforms

T = FILES["transforms"]
IMAGES = [Image.fromarray(image.numpy()) for image in T["images"]]


def apply(transform: Any, index: int, seed: int) -> Any:
    recipe.seed_all(seed)
    return transform(IMAGES[index])


def test_stored_images_are_the_generated_ones() -> None:
    assert all(torch.equal(a, b) for a, b in zip(T["images"], recipe.make_images(), strict=True))


def test_pretrain_augmentation_equals_the_official(data: Path) -> None:
    """`mae pretrain --input_size 32`'s training transform on the stored images: main_pretrain.py's outputs."""
    built = pretrain_built(data)
    transform = built.loader.dataset.transform
    assert T["input_size"] == 32
    for (index, seed), expected in zip(T["cases"], T["pretrain"], strict=True):
        ours = model_input(built, apply(transform, index, seed))
        assert_official(ours, expected, f"image {index}, seed {seed}", atol=LEVEL)


def test_finetune_augmentation_and_evaluation_equal_the_official(data: Path) -> None:
    """`mae finetune`'s defaults (RandAugment, random erasing...) at 32 px, and its evaluation transform."""
    built = classifier_built("finetune", data)
    for (index, seed), expected in zip(T["cases"], T["finetune_train"], strict=True):
        ours = model_input(built, apply(built.loader.dataset.transform, index, seed))
        assert_official(ours, expected, f"training transform, image {index}, seed {seed}", atol=LEVEL)
    for index, expected in enumerate(T["finetune_eval"]):
        ours = model_input(built, apply(built.val.transform, index, 0))
        assert_official(ours, expected, f"evaluation transform, image {index}", atol=LEVEL)


def digest(tensor: torch.Tensor) -> str:
    return str(recipe.digest(tensor))


def test_linprobe_crop_and_evaluation_equal_the_official(data: Path) -> None:
    """`mae linprobe`'s crop (one draw, no retry) and evaluation at 224 px: the uint8 image before ToTensor
    (Pillow's integer resampling: equal wherever Pillow's build is) and, on the recorded kind of CPU, the
    whole output's digest."""
    built = linprobe_built(data)
    for name, transform, cases in (
        ("linprobe_train", built.loader.dataset.transform, T["linprobe_cases"]),
        ("linprobe_eval", built.val.transform, [(0, 0)]),
    ):
        for (index, seed), png, expected in zip(cases, T[f"{name}_png"], T[f"{name}_digest"], strict=True):
            what = f"{name}, image {index}, seed {seed}"
            ours = apply(recipe.pil_stage(transform), index, seed)
            theirs = recipe.from_png(png)
            assert_official(ours.int(), theirs.int(), f"{what} (uint8)", atol=1)
            if SAME_KERNELS:
                output = model_input(built, apply(transform, index, seed))
                assert digest(output) == expected, f"{what}: output digest ({HELD_TO})"


# ------------------------------------------------------------------------------------------------ heads

H = FILES["heads"]


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
def test_head_drawn_after_loading_equals_the_official(command: str, head_inputs: tuple[Path, Path]) -> None:
    """The same flags and seed as the official script: after the official set-up order and the pre-trained
    weights, the head weight is drawn by timm's trunc_normal_ at the official std; equal to the official draw."""
    data, checkpoint = head_inputs
    fields = [f"{k}={v}" for k, v in H["classifier"].items() if k != "img_size"]
    argv = [command, "--data_path", str(data), "--finetune", str(checkpoint), *H["flags"], "--model_args", *fields]
    built = build(*argv, "--input_size", str(H["classifier"]["img_size"]), "--output_dir", "", "--log_dir", "")
    head = built.model.head if command == "finetune" else built.model.head[1]
    expected = H["heads"][f"main_{command}"]
    assert_official(head.weight.detach(), expected["head"], f"{command} head", atol=0.0, rtol=HEAD_RTOL)
    # Where the two part, this tells which: the draw alone (`redraw_head` with the official std) from the
    # generator state the official script had just before it.
    holder = VisionTransformer(None, num_classes=expected["head"].shape[0], **H["classifier"] | {"depth": 1})
    torch.set_rng_state(expected["rng_state"])
    redraw_head(holder, std=expected["draw"]["std"])
    drawn = holder.head.weight.detach()  # type: ignore[union-attr]
    assert_official(drawn, expected["head"], f"{command} head from the official state", atol=0.0, rtol=HEAD_RTOL)


# ------------------------------------------------------------------------------------------------- LARS

L = FILES["lars"]


@pytest.mark.parametrize("case", sorted(recipe.LARS_CASES))
def test_lars_as_linprobe_builds_it_equals_the_official_steps(case: str) -> None:
    """`mae linprobe --lr LR --weight_decay WD` builds LARS over the probe head with its own momentum and trust
    coefficient (the flags give only lr and weight decay, as main_linprobe.py): the official steps."""
    record = L["cases"][case]
    weight, bias = record["initial"]
    probe = {"img_size": 32, "patch_size": 8, "embed_dim": weight.shape[1], "depth": 1, "num_heads": 2}
    model = add_probe_head(VisionTransformer(None, num_classes=weight.shape[0], global_pool=False, **probe))
    args = build_args("linprobe", "--lr", str(record["lr"]), "--weight_decay", str(record["weight_decay"]))
    optimizer = LINPROBE.optimizer(args, model)
    linear = model.head[1]
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    params = [linear.weight, linear.bias]
    assert [p for g in optimizer.param_groups for p in g["params"]] == params
    for i, (grads, expected) in enumerate(zip(record["grads"], record["steps"], strict=True)):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        for name, p, theirs, mu in zip(("weight", "bias"), params, expected["params"], expected["mu"], strict=True):
            assert_official(p.detach(), theirs, f"{case}: {name} after step {i + 1}", atol=LARS_TOL, rtol=LARS_TOL)
            assert_official(optimizer.state[p]["mu"], mu, f"{case}: mu of {name} after step {i + 1}", atol=LARS_TOL)


# --------------------------------------------------------------------------------------------- schedule

S = FILES["schedule"]


@pytest.mark.parametrize("command", ["pretrain", "finetune", "linprobe"])
def test_schedule_the_trainer_builds_equals_the_official(command: str, data: Path) -> None:
    """Each command with only ``--lr`` given: the trainer's schedule (warmup, epochs, min_lr: its defaults) gives
    the official lrs at the stored fractional epochs, on a group without and one with an lr_scale."""
    setting = S["settings"][f"main_{command}"]
    lr = ["--lr", repr(setting["args"]["lr"])]
    if command == "pretrain":
        built = pretrain_built(data, *lr)
    elif command == "finetune":
        built = classifier_built("finetune", data, *lr)
    else:
        built = linprobe_built(data, *lr)
    schedule = built.schedule
    optimizer = torch.optim.SGD(
        [{"params": [torch.zeros(1)]}, {"params": [torch.zeros(1)], "lr_scale": S["group_scale"]}], lr=0.0
    )
    for t, expected, groups in zip(setting["epochs"], setting["lr"], setting["group_lr"], strict=True):
        assert_same_float(schedule.apply(optimizer, t), expected, f"{command}: lr at epoch {t}")
        for i, (group, theirs) in enumerate(zip(optimizer.param_groups, groups, strict=True)):
            assert_same_float(group["lr"], theirs, f"{command}: group {i} lr at epoch {t}")


# ------------------------------------------------------------------------------------------ layer decay

D = FILES["layer_decay"]


@pytest.mark.parametrize("case", sorted(recipe.LAYER_DECAY_CASES))
def test_layer_decay_groups_equal_the_official(case: str) -> None:
    """`mae finetune --layer_decay X --weight_decay W`'s optimizer groups: the official scales, decays, members."""
    record = D["cases"][case]
    torch.manual_seed(0)
    model = VisionTransformer(None, num_classes=D["classes"], global_pool=record["global_pool"], **D["model"])
    flags = ["--layer_decay", str(record["layer_decay"]), "--weight_decay", str(record["weight_decay"])]
    optimizer = FINETUNE.optimizer(build_args("finetune", "--lr", "1e-3", *flags), model)
    names = {id(p): n for n, p in model.named_parameters()}
    ours = [(g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in optimizer.param_groups]
    assert ours == [(g["weight_decay"], g["params"]) for g in record["groups"]], f"{case}: {HELD_TO}"
    for i, (group, theirs) in enumerate(zip(optimizer.param_groups, record["groups"], strict=True)):
        assert_same_float(group["lr_scale"], theirs["lr_scale"], f"{case}: lr_scale of group {i}")


# ------------------------------------------------------------------------ the official code, re-run


@needs_official
def test_official_checkout_holds_the_recorded_files() -> None:
    repo = official.official_repo()
    assert repo is not None
    make = make_fixtures()
    for name, blob in FILES["transforms"]["official"]["git_blobs"].items():
        assert make.git_blob_hash(repo / name) == blob, f"{repo / name} is not the file of the {HELD_TO}"


def assert_same_record(fresh: Any, stored: Any, where: str) -> None:
    """Fresh official figures against the stored ones: tensors by `assert_official` (floats), equal otherwise."""
    if isinstance(fresh, dict):
        assert list(fresh) == list(stored), where
        for key in fresh:
            assert_same_record(fresh[key], stored[key], f"{where}.{key}")
    elif isinstance(fresh, (list, tuple)):
        assert len(fresh) == len(stored), where
        for i, (a, b) in enumerate(zip(fresh, stored, strict=True)):
            assert_same_record(a, b, f"{where}[{i}]")
    elif isinstance(fresh, torch.Tensor) and fresh.is_floating_point():
        assert_official(fresh, stored, where, atol=max(LEVEL, LARS_TOL), rtol=LARS_TOL)
    elif isinstance(fresh, torch.Tensor):
        assert torch.equal(fresh, stored), f"{where} ({HELD_TO})"
    elif isinstance(fresh, float):
        assert_same_float(fresh, stored, where)
    else:
        assert fresh == stored, f"{where}: {fresh!r} != {stored!r} ({HELD_TO})"


@needs_official
@pytest.mark.parametrize("name", recipe.NAMES)
def test_official_code_recomputes_the_file(name: str) -> None:
    fresh, stored = recipe.compute(name), FILES[name]
    assert set(fresh) == set(stored) - {"official", "versions"}
    if name == "transforms" and not SAME_KERNELS:  # the digests are of this kind of CPU's bits
        fresh = {k: v for k, v in fresh.items() if not k.endswith("_digest")}
        stored = {k: stored[k] for k in fresh}
    assert_same_record(fresh, {k: stored[k] for k in fresh}, name)
