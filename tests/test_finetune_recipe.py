"""Properties of the fine-tuning and linear-probing recipes' pieces, against values computed here.

- Layer-wise lr decay: after `CosineSchedule.apply`, every parameter's group has lr = lr(t) x
  layer_decay ** (depth + 1 - layer), the layer read here from the parameter's name (patch embedding,
  class token, position table 0; block i, i + 1; the rest depth + 1), and the official weight decay split.
- Mixup / CutMix (timm's `Mixup` as `mae.train.mixup.build_mixup` builds it from the flags): with a fixed
  numpy seed, the images are lam x + (1 - lam) x.flip(0) (mixup) or x with one box pasted from x.flip(0)
  (cutmix), and the targets are lam on_off(y) + (1 - lam) on_off(y.flip(0)), with the smoothing's on/off
  values and cutmix's lam (1 - box area) computed here.
- The loss the flags choose (soft-target CE with mixup, label smoothing with --smoothing, else CE) and its
  value, written here from log-softmax.
- The linear-probe head: BatchNorm1d without affine parameters (eps 1e-6) before the linear layer, only the
  linear layer trainable; after a `mae linprobe` run the encoder is bit-equal to the --finetune file's
  while the head has learned.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from train_helpers import (
    TINY_CLASSIFIER_CONFIG,
    classification_argv,
    make_classification_data,
    run_quietly,
    tiny_pretrained,
)

import mae.cli
from mae.classifier import VisionTransformer
from mae.train.finetune import FINETUNE
from mae.train.mixup import build_criterion, build_mixup
from mae.train.schedule import CosineSchedule


def flags(*argv: str) -> argparse.Namespace:
    """``mae finetune ARGV`` parsed by the real command line."""
    return mae.cli.build_parser().parse_args(["finetune", "--data_path", "d", *argv])


# ----------------------------------------------------------------------------------------- layer decay


def layer_of(name: str, depth: int) -> int:
    """The layer of a parameter, from its name (the BEiT / official rule)."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed."):
        return 0
    block = re.match(r"blocks\.(\d+)\.", name)
    if block:
        return int(block.group(1)) + 1
    assert name.startswith(("norm.", "fc_norm.", "head.")), name
    return depth + 1


def warmup_cosine(t: float, lr: float, min_lr: float, warmup: int, epochs: int) -> float:
    if t < warmup:
        return lr * t / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (epochs - warmup)))


@pytest.mark.parametrize("global_pool", [True, False])
@pytest.mark.parametrize("layer_decay", [0.65, 0.75])
def test_every_parameter_gets_lr_times_layer_decay_to_its_depth(global_pool: bool, layer_decay: float) -> None:
    depth = 3
    model = VisionTransformer(None, num_classes=5, global_pool=global_pool, **(TINY_CLASSIFIER_CONFIG | {"depth": 3}))
    args = flags(
        "--layer_decay", str(layer_decay), "--weight_decay", "0.05", "--lr", "2e-3", "--min_lr", "1e-5",
        "--warmup_epochs", "2", "--epochs", "7",
    )  # fmt: skip
    optimizer = FINETUNE.optimizer(args, model)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    assert sorted(seen) == sorted(names.values())  # every parameter once
    schedule = CosineSchedule(args.lr, args.min_lr, args.warmup_epochs, args.epochs)
    for t in (0.0, 0.5, 1.999, 2.0, 3.25, 6.9):
        schedule.apply(optimizer, t)
        lr = warmup_cosine(t, 2e-3, 1e-5, 2, 7)
        for group in optimizer.param_groups:
            for p in group["params"]:
                name = names[id(p)]
                expected = lr * layer_decay ** (depth + 1 - layer_of(name, depth))
                assert group["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-300), (name, t)
                no_decay = p.ndim == 1 or name in ("cls_token", "pos_embed")
                assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    # The head learns at the full rate, the patch embedding at layer_decay ** (depth + 1).
    by_name = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert by_name["head.weight"] == pytest.approx(by_name["patch_embed.proj.weight"] / layer_decay**4, rel=1e-12)


# ----------------------------------------------------------------------------------------- mixup, cutmix


def on_off(y: Tensor, classes: int, smoothing: float) -> Tensor:
    """One-hot targets with label smoothing: ``smoothing / classes`` off, ``1 - smoothing + off`` on."""
    off = smoothing / classes
    out = torch.full((len(y), classes), off)
    out[torch.arange(len(y)), y] = 1.0 - smoothing + off
    return out


def batch(seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 3, 4, 2])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_mixes_images_and_smoothed_labels_by_the_same_lambda(smoothing: float) -> None:
    mixup = build_mixup(flags("--mixup", "0.8", "--smoothing", str(smoothing)), 5)
    for seed in range(5):
        x, y = batch(seed)
        np.random.seed(seed)
        mixed, targets = mixup(x.clone(), y)
        # The draws timm makes for one batch with mixup only: "mix this batch?" (prob 1), then lam ~ Beta(a, a).
        np.random.seed(seed)
        assert np.random.rand() < 1.0
        lam = float(np.random.beta(0.8, 0.8))
        assert 0.0 < lam < 1.0
        torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0), rtol=0, atol=1e-6)
        expected = lam * on_off(y, 5, smoothing) + (1 - lam) * on_off(y.flip(0), 5, smoothing)
        torch.testing.assert_close(targets, expected, rtol=0, atol=1e-7)


def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area() -> None:
    smoothing, classes = 0.1, 5
    mixup = build_mixup(flags("--cutmix", "1.0", "--smoothing", str(smoothing)), classes)
    partial_boxes = 0
    for seed in range(8):
        x, y = batch(seed)
        np.random.seed(seed)
        mixed, targets = mixup(x.clone(), y)
        pasted = (mixed != x).any(dim=1)  # [N, H, W]: where the image now holds its partner's pixels
        box = pasted[0]
        assert (pasted == box).all()  # the same box in every image
        rows, cols = box.any(dim=1), box.any(dim=0)
        assert torch.equal(box, rows[:, None] & cols[None, :])  # a rectangle
        torch.testing.assert_close(mixed[:, :, box], x.flip(0)[:, :, box], rtol=0, atol=0)
        lam = 1.0 - float(box.sum()) / box.numel()  # the share of each image that is its own
        partial_boxes += 0.0 < lam < 1.0
        expected = lam * on_off(y, classes, smoothing) + (1 - lam) * on_off(y.flip(0), classes, smoothing)
        torch.testing.assert_close(targets, expected, rtol=0, atol=1e-6)
    assert partial_boxes >= 4


def test_the_mixup_flags_reach_timm_mixup() -> None:
    assert build_mixup(flags(), 5) is None  # the official default: no mixup, no cutmix
    argv = ["--mixup", "0.5", "--cutmix", "0.3", "--mixup_prob", "0.7", "--mixup_switch_prob", "0.4"]
    mixup = build_mixup(flags(*argv, "--mixup_mode", "pair", "--smoothing", "0.2"), 7)
    got = [getattr(mixup, k) for k in ("mixup_alpha", "cutmix_alpha", "cutmix_minmax", "mix_prob", "switch_prob")]
    assert got == [0.5, 0.3, None, 0.7, 0.4]
    assert (mixup.mode, mixup.label_smoothing, mixup.num_classes) == ("pair", 0.2, 7)
    # --cutmix_minmax alone turns cutmix on (timm then draws the box size from the range, not from alpha).
    mixup = build_mixup(flags("--cutmix_minmax", "0.2", "0.8"), 7)
    assert mixup is not None and mixup.cutmix_minmax == [0.2, 0.8] and mixup.mixup_alpha == 0


# ----------------------------------------------------------------------------------------- RandAugment


def test_every_op_of_the_default_randaugment_runs_at_the_largest_magnitude() -> None:
    """``--aa rand-m9-mstd0.5-inc1`` draws each op's magnitude from N(9, 0.5) clipped to 10, so the largest level
    comes up in about 2 % of the draws. At level 10 ``PosterizeIncreasing`` keeps 0 bits: a black image (what
    Pillow's posterize gave when the official recipe was run), not an error that stops the epoch."""
    from timm.data.auto_augment import RandAugment

    train_transform, _ = FINETUNE.transforms(flags("--input_size", "32"))
    randaugment = next(t for t in train_transform.transforms if isinstance(t, RandAugment))
    assert {op.magnitude for op in randaugment.ops} == {9} and {op.magnitude_std for op in randaugment.ops} == {0.5}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    for op in randaugment.ops:
        op = copy.copy(op)
        op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0.0
        out = np.asarray(op(image))
        if op.name == "PosterizeIncreasing":
            assert out.max() == 0  # 4 - int(10 / 10 * 4) = 0 most significant bits kept
    assert "PosterizeIncreasing" in {op.name for op in randaugment.ops}


# ----------------------------------------------------------------------------------------- the loss


def log_softmax(logits: Tensor) -> Tensor:
    z = logits.double()
    return z - z.exp().sum(dim=1, keepdim=True).log()


CRITERIA = {
    "mixup: soft-target CE": (["--mixup", "0.8"], "SoftTargetCrossEntropy"),
    "cutmix_minmax alone: soft-target CE": (["--cutmix_minmax", "0.3", "0.7"], "SoftTargetCrossEntropy"),
    "smoothing: label-smoothing CE": (["--smoothing", "0.2"], "LabelSmoothingCrossEntropy"),
    "no smoothing: CE": (["--smoothing", "0"], "CrossEntropyLoss"),
}


@pytest.mark.parametrize("argv, kind", list(CRITERIA.values()), ids=list(CRITERIA))
def test_the_flags_choose_the_loss_and_its_value(argv: list[str], kind: str) -> None:
    args = flags(*argv)
    criterion = FINETUNE.criterion(args)
    assert type(criterion).__name__ == kind
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(8, 6, generator=g) * 3, torch.randint(0, 6, (8,), generator=g)
    logp = log_softmax(logits)
    nll = -logp[torch.arange(8), y]
    if kind == "SoftTargetCrossEntropy":
        soft = torch.softmax(torch.randn(8, 6, generator=g), dim=1)  # what Mixup hands the loss
        got, expected = criterion(logits, soft), (-(soft.double() * logp).sum(dim=1)).mean()
    elif kind == "LabelSmoothingCrossEntropy":
        s = args.smoothing
        got, expected = criterion(logits, y), ((1 - s) * nll + s * (-logp.mean(dim=1))).mean()
    else:
        got, expected = criterion(logits, y), nll.mean()
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    assert type(build_criterion(args)) is type(criterion)


# ----------------------------------------------------------------------------------------- the probe head


def test_the_probe_head_is_a_plain_batch_norm_then_the_only_trainable_layer() -> None:
    from mae.train.linprobe import add_probe_head

    model = VisionTransformer(None, num_classes=5, global_pool=False, **TINY_CLASSIFIER_CONFIG)
    linear = model.head
    add_probe_head(model)
    assert isinstance(model.head, nn.Sequential) and len(model.head) == 2 and model.head[1] is linear
    bn = model.head[0]
    assert isinstance(bn, nn.BatchNorm1d) and bn.num_features == 32
    assert bn.weight is None and bn.bias is None and bn.track_running_stats
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.1.weight", "head.1.bias"]
    # The official checkpoint keys of the head: the batch norm's statistics, then the linear layer.
    assert [k for k in model.state_dict() if k.startswith("head.")] == [
        "head.0.running_mean", "head.0.running_var", "head.0.num_batches_tracked", "head.1.weight", "head.1.bias",
    ]  # fmt: skip
    # What it computes in training: each feature whitened over the batch, eps 1e-6, no scale or shift.
    features = torch.randn(16, 32) * 0.01 + 3.0  # small variance: eps matters
    mean, var = features.mean(dim=0), features.var(dim=0, unbiased=False)
    bn.train()
    torch.testing.assert_close(bn(features), (features - mean) / torch.sqrt(var + 1e-6), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def linprobe_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-epoch ``mae linprobe`` of a 1-epoch ``mae pretrain`` checkpoint."""
    root = tmp_path_factory.mktemp("linprobe")
    data = make_classification_data(root / "data")
    pretrained = tiny_pretrained(data, root / "pre")
    argv = classification_argv("linprobe", data, root / "out", "--finetune", str(pretrained), epochs=2)
    code, _, err = run_quietly(*argv)
    assert code == 0, err
    return {"data": data, "pretrained": pretrained, "out": root / "out"}


def test_linear_probing_leaves_the_encoder_as_the_file_and_trains_the_head(linprobe_run: dict[str, Path]) -> None:
    file = torch.load(linprobe_run["pretrained"], map_location="cpu", weights_only=False)["model"]
    first, last = (
        torch.load(linprobe_run["out"] / f"checkpoint-{e}.pth", map_location="cpu", weights_only=False) for e in (0, 1)
    )
    encoder = [k for k in last["model"] if not k.startswith("head.")]
    assert "norm.weight" in encoder and "blocks.1.mlp.fc2.weight" in encoder and "pos_embed" in encoder
    for ckpt in (first, last):
        for key in encoder:
            assert torch.equal(ckpt["model"][key], file[key]), key  # frozen: bit-equal to the pre-trained file
    assert not torch.equal(first["model"]["head.1.weight"], last["model"]["head.1.weight"])
    assert not torch.equal(first["model"]["head.1.bias"], last["model"]["head.1.bias"])
    assert last["model"]["head.0.num_batches_tracked"] == 12  # 2 epochs of 6 batches
    # Only the linear layer is optimised, and only it is counted.
    assert len(last["optimizer"]["state"]) == 2
    log = [json.loads(line) for line in (linprobe_run["out"] / "log.txt").read_text().splitlines()]
    assert [r["n_parameters"] for r in log] == [32 * 3 + 3] * 2


def test_the_probe_head_starts_at_std_0_01(linprobe_run: dict[str, Path], tmp_path: Path) -> None:
    """`mae linprobe` re-draws the linear layer at truncated-normal std 0.01 after loading (MoCo v3's choice)."""
    from mae.train.linprobe import LINPROBE

    pretrained = linprobe_run["pretrained"]
    args = mae.cli.build_parser().parse_args(
        classification_argv("linprobe", linprobe_run["data"], tmp_path / "out", "--finetune", str(pretrained))
    )
    model = LINPROBE.build_model(args, 1000)
    LINPROBE.prepare_model(args, model)
    weight = model.head[1].weight.detach()
    assert weight.numel() == 32_000 and float(weight.std()) == pytest.approx(0.01, rel=0.03)
    assert float(weight.abs().max()) < 0.06  # a normal draw, not a uniform one
    assert torch.equal(model.head[1].bias, torch.zeros(1000))
