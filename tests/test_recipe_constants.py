"""Every constant of the three training recipes, held to values written here from the paper (He et al., 2022,
§4, Appendix A) and the official scripts' defaults (read in facebookresearch/mae at commit efb2a80:
main_pretrain.py, main_finetune.py, main_linprobe.py, util/datasets.py, util/crop.py, util/lars.py,
util/lr_decay.py), each through the path the command line takes: the flags are parsed by `mae.cli`'s own parser
and the command's trainer runs until its first epoch (`recipe_helpers.build`), and what it was about to train
with — the transforms, the optimizer, the schedule, the head, the criterion and mixup — is inspected.

- `mae pretrain` (main_pretrain.py): RandomResizedCrop(scale (0.2, 1), ratio (3/4, 4/3), bicubic), flip 0.5,
  ImageNet mean/std; AdamW betas (0.9, 0.95), weight decay 0.05 except 1-D tensors and biases; blr 1e-3 scaled
  by batch / 256; warmup 40 of 400 epochs down to lr 0; mask ratio 0.75.
- `mae finetune` (main_finetune.py, util/datasets.py): timm's crop (scale (0.08, 1), ratio (3/4, 4/3), bicubic),
  flip 0.5, RandAugment 'rand-m9-mstd0.5-inc1', random erasing 0.25 'pixel' x1 after normalisation; evaluation
  resize to input / (224/256) then centre crop; no mixup by default (mixup 0, cutmix 0), label smoothing 0.1,
  mixup prob 1, switch prob 0.5, mode 'batch' (the official command passes --mixup 0.8 --cutmix 1.0); AdamW
  betas (0.9, 0.999), weight decay 0.05 except 1-D, pos_embed and cls_token, layer decay 0.75; blr 1e-3; warmup
  5 of 50 epochs down to 1e-6; drop path 0.1; the head re-drawn after loading at std 2e-5 by timm's
  trunc_normal_, whose bounds a=-2, b=2 are absolute: at that std it is truncated at 1e5 std (in effect not at
  all), not at 2 std.
- `mae linprobe` (main_linprobe.py, util/crop.py, util/lars.py): the crop without retry (scale (0.08, 1), ratio
  (3/4, 4/3), bicubic, 224 px), flip 0.5, nothing else; evaluation resize 256, centre crop 224; LARS momentum
  0.9, trust coefficient 0.001, weight decay 0, no decay and no adaptation for 1-D parameters; blr 0.1; warmup
  10 of 90 epochs down to 0; the head BatchNorm1d(affine=False, eps=1e-6) + linear at std 0.01; plain
  cross-entropy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision.transforms as T
from recipe_helpers import Built, build
from timm.data.mixup import Mixup
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torchvision.transforms import InterpolationMode
from train_helpers import TINY_ARGS, TINY_CLASSIFIER_ARGS, make_classification_data, make_image_folder

import mae
from mae.train.crop import RandomResizedCropNoRetry
from mae.train.erasing import EraseLater
from mae.train.lars import LARS
from mae.train.normalize import DeviceNormalize

# The paper's and the official scripts' values, written out.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RATIO = (3 / 4, 4 / 3)
BATCH = 4  # the tiny data here: the lr follows the linear scaling rule lr = blr x batch / 256
# 'rand-m9-mstd0.5-inc1': 2 ops per image (timm's default n), magnitude 9 with std 0.5, the "increasing" op set.
INCREASING_OPS = [
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("constants")
    make_image_folder(root / "flat", classes=0, per_class=8)
    make_classification_data(root / "classes")
    # A pre-trained encoder wide enough for the head's statistics (3 classes x 192 = 576 weights).
    torch.manual_seed(0)
    encoder = {"img_size": 32, "patch_size": 8, "embed_dim": 192, "depth": 1, "num_heads": 3}
    model = mae.create_model("mae_vit_base_patch16", **encoder, decoder_embed_dim=16, decoder_depth=1)
    torch.save({"model": model.state_dict()}, root / "pretrained.pth")
    return root


def pretrain(data: Path, *flags: str) -> Built:
    return build(
        "pretrain",
        "--data_path",
        str(data / "flat"),
        *TINY_ARGS,
        "--batch_size",
        str(BATCH),
        "--output_dir",
        "",
        *flags,
    )


def classifier(command: str, data: Path, *flags: str) -> Built:
    """``mae finetune|linprobe`` on the tiny classifier at 32 px, batch 4."""
    return build(command, "--data_path", str(data / "classes"), *TINY_CLASSIFIER_ARGS, "--output_dir", "", *flags)


def with_pretrained(command: str, data: Path, *flags: str) -> Built:
    """``--finetune`` the wide pre-trained encoder (the head re-drawn after loading)."""
    model = ["--model", "vit_base_patch16", "--model_args", "patch_size=8", "embed_dim=192", "depth=1", "num_heads=3"]
    common = ["--input_size", "32", "--batch_size", str(BATCH), "--num_workers", "0", "--device", "cpu"]
    common += ["--output_dir", "", "--log_dir", "", "--finetune", str(data / "pretrained.pth")]
    return build(command, "--data_path", str(data / "classes"), *model, *common, *flags)


def linprobe_224(data: Path) -> Built:
    """``mae linprobe`` at its default input size (224, patch 32)."""
    model = ["--model", "vit_base_patch16", "--model_args", "patch_size=32", "embed_dim=32", "depth=1", "num_heads=4"]
    common = ["--batch_size", str(BATCH), "--num_workers", "0", "--device", "cpu", "--output_dir", "", "--log_dir", ""]
    return build("linprobe", "--data_path", str(data / "classes"), *model, *common)


def steps(transform: Any) -> list[Any]:
    assert isinstance(transform, T.Compose)
    return list(transform.transforms)


def assert_imagenet_normalisation(built: Built, to_integers: Any) -> None:
    """The transform stops at the stored integers; the trainer hands the engine ImageNet's normalisation."""
    assert type(to_integers) is T.PILToTensor
    normalize = built.kwargs["normalize"]
    assert isinstance(normalize, DeviceNormalize)
    assert normalize.mean == IMAGENET_MEAN and normalize.std == IMAGENET_STD


def assert_flip(step: Any) -> None:
    assert type(step) is T.RandomHorizontalFlip and step.p == 0.5


# ---------------------------------------------------------------------------------------- mae pretrain


def test_pretrain_augmentation(data: Path) -> None:
    """A random resized crop of 20-100% of the image (§4: MAE needs little augmentation), bicubic, a flip."""
    built = pretrain(data)
    crop, flip, to_integers = steps(built.loader.dataset.transform)
    assert type(crop) is T.RandomResizedCrop
    assert crop.size == (32, 32) and tuple(crop.scale) == (0.2, 1.0) and tuple(crop.ratio) == RATIO
    assert crop.interpolation == InterpolationMode.BICUBIC
    assert_flip(flip)
    assert_imagenet_normalisation(built, to_integers)


def test_pretrain_optimizer_schedule_and_masking(data: Path) -> None:
    built = pretrain(data)
    optimizer, model = built.optimizer, built.model
    assert type(optimizer) is torch.optim.AdamW
    for group in optimizer.param_groups:
        assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-8  # Table 8: beta2 0.95
        assert group["lr"] == built.args.lr == 1e-3 * BATCH / 256
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(decay) == len(trainable) and "pos_embed" not in dict(trainable)  # the fixed sin-cos table
    for name, p in trainable:
        assert decay[id(p)] == (0.0 if p.ndim <= 1 or name.endswith(".bias") else 0.05), name
    s = built.schedule
    assert (s.lr, s.min_lr, s.warmup_epochs, s.epochs) == (1e-3 * BATCH / 256, 0.0, 40, 400)
    assert built.kwargs["mask_ratio"] == 0.75 and built.kwargs["clip_grad"] is None


def test_pretrain_lr_follows_the_linear_scaling_rule(data: Path) -> None:
    """PRETRAIN.md's --blr 1.5e-4, with --accum_iter 2: lr = blr x (batch x accum x processes) / 256."""
    built = pretrain(data, "--blr", "1.5e-4", "--accum_iter", "2")
    assert built.args.lr == 1.5e-4 * BATCH * 2 / 256 == built.schedule.lr


# ---------------------------------------------------------------------------------------- mae finetune


def test_finetune_augmentation(data: Path) -> None:
    built = classifier("finetune", data)
    assert built.args.aa == "rand-m9-mstd0.5-inc1" and built.args.color_jitter is None
    crop, flip, rand_augment, to_integers, erase_later = steps(built.loader.dataset.transform)
    assert type(crop) is RandomResizedCropAndInterpolation
    assert crop.size == (32, 32) and tuple(crop.scale) == (0.08, 1.0) and tuple(crop.ratio) == RATIO
    assert crop.interpolation == InterpolationMode.BICUBIC
    assert_flip(flip)
    assert rand_augment.num_layers == 2 and rand_augment.choice_weights is None
    assert [op.name for op in rand_augment.ops] == INCREASING_OPS
    assert {(op.prob, op.magnitude, op.magnitude_std) for op in rand_augment.ops} == {(0.5, 9, 0.5)}
    assert_imagenet_normalisation(built, to_integers)
    assert type(erase_later) is EraseLater  # drawn in the worker, applied after the normalisation (device)
    erase = erase_later.erasing
    assert type(erase) is RandomErasing  # after the normalisation: erased pixels are N(0, 1) noise
    assert (erase.probability, erase.mode, erase.min_count, erase.max_count) == (0.25, "pixel", 1, 1)


@pytest.mark.parametrize(("size", "resize"), [(32, int(32 / (224 / 256))), (240, 240)])
def test_evaluation_transform(data: Path, size: int, resize: int) -> None:
    """util/datasets.py: resize the short side to size / crop_pct (crop_pct 224/256 up to 224 px, else 1)."""
    built = classifier("finetune", data, "--input_size", str(size))
    resize_step, centre, to_integers = steps(built.val.transform)
    assert type(resize_step) is T.Resize and resize_step.size == resize
    assert resize_step.interpolation == InterpolationMode.BICUBIC
    assert type(centre) is T.CenterCrop and centre.size == (size, size)
    assert_imagenet_normalisation(built, to_integers)  # the trainer's one normalisation, for evaluation too


def test_finetune_mixup_and_loss(data: Path) -> None:
    """No mixup at the official defaults (mixup 0, cutmix 0): label-smoothing CE at 0.1. With the official
    command's --mixup 0.8 --cutmix 1.0: timm's Mixup at prob 1, switch prob 0.5, per batch, smoothing 0.1."""
    plain = classifier("finetune", data)
    assert plain.mixup_fn is None
    assert type(plain.criterion) is LabelSmoothingCrossEntropy and plain.criterion.smoothing == 0.1
    mixed = classifier("finetune", data, "--mixup", "0.8", "--cutmix", "1.0")
    m = mixed.mixup_fn
    assert type(m) is Mixup and type(mixed.criterion) is SoftTargetCrossEntropy
    assert (m.mixup_alpha, m.cutmix_alpha, m.cutmix_minmax) == (0.8, 1.0, None)
    assert (m.mix_prob, m.switch_prob, m.mode, m.label_smoothing, m.num_classes) == (1.0, 0.5, "batch", 0.1, 3)


def test_finetune_optimizer_schedule_and_depth(data: Path) -> None:
    built = classifier("finetune", data)
    optimizer, model = built.optimizer, built.model
    assert type(optimizer) is torch.optim.AdamW
    depth = len(model.blocks)  # type: ignore[arg-type]
    layer = {"cls_token": 0, "pos_embed": 0}
    seen = 0
    for group in optimizer.param_groups:
        assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
        for p in group["params"]:
            name = next(n for n, q in model.named_parameters() if q is p)
            seen += 1
            assert group["weight_decay"] == (0.0 if p.ndim == 1 or name in ("pos_embed", "cls_token") else 0.05), name
            if name.startswith("patch_embed."):
                at = 0
            elif name.startswith("blocks."):
                at = int(name.split(".")[1]) + 1
            else:
                at = layer.get(name, depth + 1)
            assert group["lr_scale"] == 0.75 ** (depth + 1 - at), name
    assert seen == sum(1 for p in model.parameters() if p.requires_grad)
    s = built.schedule
    assert (s.lr, s.min_lr, s.warmup_epochs, s.epochs) == (1e-3 * BATCH / 256, 1e-6, 5, 50)
    rates = [block.drop_path1.drop_prob for block in model.blocks]  # type: ignore[union-attr]
    assert rates == pytest.approx([0.1 * i / (depth - 1) for i in range(depth)], rel=1e-7)  # float32 linspace
    assert built.kwargs["clip_grad"] is None


def test_finetune_head_is_redrawn_after_loading_at_std_2e5_untruncated(data: Path) -> None:
    """timm's trunc_normal_(std=2e-5) with its default bounds a=-2, b=2, which are absolute: a sample of the
    normal itself (values beyond 2 std at the normal's rate), not one truncated at 2 std; a zero bias."""
    head = with_pretrained("finetune", data).model.head
    weight = head.weight.detach().double().flatten()  # type: ignore[union-attr]
    n, std = weight.numel(), 2e-5
    assert n == 3 * 192 and torch.equal(head.bias, torch.zeros(3))  # type: ignore[union-attr]
    assert abs(weight.std().item() / std - 1) < 5 / math.sqrt(2 * n)  # 5 standard errors of a sample std
    beyond = int((weight.abs() > 2 * std).sum())
    rate = math.erfc(2 / math.sqrt(2))  # P(|z| > 2) = 4.6%
    assert abs(beyond - n * rate) < 5 * math.sqrt(n * rate * (1 - rate)) and beyond > 0
    assert weight.abs().max() <= 2.0


# ---------------------------------------------------------------------------------------- mae linprobe


def test_linprobe_augmentation_and_evaluation(data: Path) -> None:
    built = linprobe_224(data)
    crop, flip, to_integers = steps(built.loader.dataset.transform)
    assert type(crop) is RandomResizedCropNoRetry
    assert crop.size == (224, 224) and tuple(crop.scale) == (0.08, 1.0) and tuple(crop.ratio) == RATIO
    assert crop.interpolation == InterpolationMode.BICUBIC
    assert_flip(flip)
    assert_imagenet_normalisation(built, to_integers)
    resize, centre, to_integers = steps(built.val.transform)
    assert type(resize) is T.Resize and resize.size == 256 and resize.interpolation == InterpolationMode.BICUBIC
    assert type(centre) is T.CenterCrop and centre.size == (224, 224)
    assert_imagenet_normalisation(built, to_integers)


def test_linprobe_lars_head_schedule_and_loss(data: Path) -> None:
    built = with_pretrained("linprobe", data)
    optimizer, head = built.optimizer, built.model.head
    assert type(optimizer) is LARS
    (group,) = optimizer.param_groups
    assert (group["momentum"], group["trust_coefficient"], group["weight_decay"]) == (0.9, 0.001, 0.0)
    assert group["lr"] == built.args.lr == 0.1 * BATCH / 256
    norm, linear = head  # type: ignore[misc]
    assert type(norm) is torch.nn.BatchNorm1d and not norm.affine and norm.eps == 1e-6
    assert group["params"] == [linear.weight, linear.bias]
    assert [n for n, p in built.model.named_parameters() if p.requires_grad] == ["head.1.weight", "head.1.bias"]
    weight = linear.weight.detach().double().flatten()
    assert abs(weight.std().item() / 0.01 - 1) < 5 / math.sqrt(2 * weight.numel()) and torch.equal(
        linear.bias, torch.zeros(3)
    )
    s = built.schedule
    assert (s.lr, s.min_lr, s.warmup_epochs, s.epochs) == (0.1 * BATCH / 256, 0.0, 10, 90)
    assert type(built.criterion) is torch.nn.CrossEntropyLoss and built.criterion.label_smoothing == 0.0
    assert built.mixup_fn is None


def test_linprobe_lars_adapts_matrices_only(data: Path) -> None:
    """Two steps of the LARS `mae linprobe --weight_decay 0.5` builds, at lr 1 from zero momentum: the weight
    matrix moves along d = g + wd w, rescaled to trust x ||w|| (You et al., 2017); the bias by its gradients alone,
    through momentum 0.9 (no decay and no adaptation for 1-D parameters)."""
    built = with_pretrained("linprobe", data, "--weight_decay", "0.5")
    optimizer = built.optimizer
    linear = built.model.head[1]  # type: ignore[index]
    (group,) = optimizer.param_groups
    assert group["weight_decay"] == 0.5
    group["lr"] = 1.0
    w0, b0 = linear.weight.detach().double(), linear.bias.detach().double()
    g = torch.Generator().manual_seed(0)
    grads = [(torch.randn(w0.shape, generator=g), torch.randn(b0.shape, generator=g)) for _ in range(2)]
    linear.weight.grad, linear.bias.grad = grads[0][0].clone(), grads[0][1].clone()
    optimizer.step()
    d = grads[0][0].double() + 0.5 * w0
    w1 = w0 - 0.001 * w0.norm() / d.norm() * d
    torch.testing.assert_close(linear.weight.detach().double(), w1, rtol=1e-5, atol=1e-9)
    assert (w0 - linear.weight.detach().double()).norm().item() == pytest.approx(0.001 * w0.norm().item(), rel=1e-5)
    torch.testing.assert_close(linear.bias.detach().double(), b0 - grads[0][1], rtol=0, atol=1e-7)
    linear.weight.grad, linear.bias.grad = grads[1][0].clone(), grads[1][1].clone()
    optimizer.step()
    bias_mu = 0.9 * grads[0][1].double() + grads[1][1].double()
    torch.testing.assert_close(linear.bias.detach().double(), b0 - grads[0][1] - bias_mu, rtol=0, atol=1e-6)
