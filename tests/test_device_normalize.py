"""The loaders yield stored integers; ``ToTensor`` + ``Normalize`` (and fine-tuning's random erasing) run on
the device: the model's input equals the official CPU pipeline's tensors bit for bit.

Each command's loader and normalisation are taken from its own trainer (`recipe_helpers.build`: what it was
about to train with) and run through the engine (`engine.train_one_epoch`, `engine_finetune.evaluate`) with a
spy on the normalisation: it sees what crosses to the device (uint8) and what the model gets. The official
pipelines are built here from torchvision and timm as the official scripts build them — ``main_pretrain.py``'s
``transform_train``, ``util/datasets.py``'s ``build_transform`` (timm's ``create_transform`` with RandAugment
and random erasing at the official defaults, and the evaluation resize + centre crop), ``main_linprobe.py``'s
``transform_train`` — over an ``ImageFolder``, a ``DistributedSampler`` and a ``DataLoader`` as the official
scripts make them, with the same seeds and workers. The linear probe's crop is our `RandomResizedCropNoRetry`
in both (it is held to the official one by ``tests/test_official_recipe_fixtures.py``); what is compared here
is where ``ToTensor`` and ``Normalize`` run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm.data
import torch
import torchvision.transforms as T
from recipe_helpers import Built, build
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler
from torchvision import datasets
from train_helpers import TINY_ARGS, TINY_CLASSIFIER_ARGS, make_classification_data

from mae.train import engine
from mae.train.crop import RandomResizedCropNoRetry
from mae.train.data import build_eval_loader
from mae.train.engine_finetune import evaluate
from mae.train.erasing import ErasedBatch
from mae.train.normalize import DeviceNormalize
from mae.train.schedule import CosineSchedule

BATCH = 4
SEED = 3  # the seed both pipelines draw from (chosen so that fine-tuning erases several images)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA/train (3 classes of 8 images) and DATA/val (3 of 4): pre-training reads DATA/train."""
    return make_classification_data(tmp_path_factory.mktemp("device_normalize"))


class Spy:
    """The trainer's normalisation, noting what it is given (the batch as it reached the device)."""

    def __init__(self, normalize: Callable[[Any], Tensor]) -> None:
        self.normalize = normalize
        self.received: list[Any] = []
        self.outputs: list[Tensor] = []

    def __call__(self, batch: Any) -> Tensor:
        self.received.append(batch)
        out = self.normalize(batch)
        self.outputs.append(out.clone())
        return out

    def dtypes(self) -> set[torch.dtype]:
        return {(b.images if isinstance(b, ErasedBatch) else b).dtype for b in self.received}

    def stored_layout(self) -> bool:
        """Every batch crossed as the images are stored (channels last in memory: the worker stacked them
        without transposing, `collate.stack_images`) and every output is contiguous [N, C, H, W]."""
        received = [b.images if isinstance(b, ErasedBatch) else b for b in self.received]
        crossed = all(b.permute(0, 2, 3, 1).is_contiguous() and not b.is_contiguous() for b in received)
        return bool(received) and crossed and all(out.is_contiguous() for out in self.outputs)


def seed_all(seed: int) -> None:
    """The generators the loader and the transforms draw from (torch, `random`, numpy)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def through_the_engine(built: Built, workers: int) -> Spy:
    """One epoch of `engine.train_one_epoch` over ``built``'s loader with its normalisation under a spy."""
    spy = Spy(built.kwargs["normalize"])
    weight = nn.Parameter(torch.zeros(()))
    model = nn.Linear(1, 1)  # (drawn before the seed: the engine only puts it in training mode)
    optimizer = torch.optim.SGD([weight], lr=0.0)
    loader = built.loader
    assert loader.num_workers == workers
    cast_sampler: Any = loader.sampler
    cast_sampler.set_epoch(0)
    seed_all(SEED)
    engine.train_one_epoch(
        model, loader, optimizer, torch.amp.GradScaler("cpu", enabled=False),
        CosineSchedule(0.0, 0.0, 0, 1), 0, lambda samples, _: weight * samples.mean(), steps=len(loader),
        normalize=spy,
    )  # fmt: skip
    return spy


def official_batches(root: Path, transform: Any, workers: int) -> list[Tensor]:
    """The official training loader: ``ImageFolder``, ``DistributedSampler`` (one process, shuffled, seed 0),
    batches of BATCH, incomplete ones dropped; its first epoch's images."""
    dataset = datasets.ImageFolder(str(root), transform=transform)
    sampler: DistributedSampler[Any] = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True)
    loader = DataLoader(dataset, sampler=sampler, batch_size=BATCH, num_workers=workers, drop_last=True)
    sampler.set_epoch(0)
    seed_all(SEED)
    return [images for images, _ in loader]


def official_normalize() -> Any:
    return T.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)


def assert_equal_batches(ours: list[Tensor], theirs: list[Tensor]) -> None:
    assert len(ours) == len(theirs) > 0
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape, f"batch {i}"
        assert torch.equal(a, b), f"batch {i}: max difference {(a - b).abs().max()}"


def loader_flags(workers: int) -> list[str]:
    return ["--batch_size", str(BATCH), "--num_workers", str(workers), "--output_dir", "", "--log_dir", ""]


@pytest.mark.parametrize("workers", [0, 2])
def test_pretraining_batches_equal_main_pretrain(data: Path, workers: int) -> None:
    built = build("pretrain", "--data_path", str(data), *TINY_ARGS, *loader_flags(workers))
    spy = through_the_engine(built, workers)
    official = T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            official_normalize(),
        ]
    )
    assert spy.dtypes() == {torch.uint8}  # what crossed to the device: a quarter of float32's bytes
    assert spy.stored_layout()
    assert_equal_batches(spy.outputs, official_batches(data / "train", official, workers))


@pytest.mark.parametrize("workers", [0, 2])
def test_finetuning_batches_equal_timms_create_transform(data: Path, workers: int) -> None:
    """RandAugment and random erasing at the official defaults (``--aa rand-m9-mstd0.5-inc1 --reprob 0.25
    --remode pixel --recount 1``): the erased rectangles and their N(0, 1) values too."""
    built = build("finetune", "--data_path", str(data), *TINY_CLASSIFIER_ARGS, *loader_flags(workers))
    spy = through_the_engine(built, workers)
    official = timm.data.create_transform(
        input_size=32, is_training=True, color_jitter=None, auto_augment="rand-m9-mstd0.5-inc1",
        interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
    )  # fmt: skip
    assert spy.dtypes() == {torch.uint8}
    assert spy.stored_layout()
    erased = sum(len(b.boxes) for b in spy.received)
    assert erased >= 2, f"only {erased} images erased: the comparison would not see the erasing"
    assert_equal_batches(spy.outputs, official_batches(data / "train", official, workers))


def test_linear_probing_batches_equal_main_linprobe(data: Path) -> None:
    built = build("linprobe", "--data_path", str(data), *TINY_CLASSIFIER_ARGS, "--input_size", "32", *loader_flags(0))
    spy = through_the_engine(built, 0)
    official = T.Compose(
        [
            RandomResizedCropNoRetry(32, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            official_normalize(),
        ]
    )
    assert spy.dtypes() == {torch.uint8}
    assert spy.stored_layout()
    assert_equal_batches(spy.outputs, official_batches(data / "train", official, 0))


class Recorder(nn.Module):
    """A stand-in classifier: keeps its inputs, scores every class 0."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.clone())
        return torch.zeros(x.shape[0], self.classes)


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_batches_equal_build_transform(data: Path, workers: int) -> None:
    """util/datasets.py at 32 px: resize to int(32 / (224 / 256)) = 36 (bicubic), centre crop 32."""
    built = build("finetune", "--data_path", str(data), *TINY_CLASSIFIER_ARGS, *loader_flags(workers))
    spy = Spy(built.kwargs["normalize"])  # the one normalisation the trainer hands training and evaluation
    model = Recorder(3)
    loader = build_eval_loader(built.val, batch_size=5, num_workers=workers, pin_memory=False)
    evaluate(model, loader, shared=False, normalize=spy)
    official = T.Compose(
        [
            T.Resize(36, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(32),
            T.ToTensor(),
            official_normalize(),
        ]
    )
    dataset = datasets.ImageFolder(str(data / "val"), transform=official)
    theirs = DataLoader(dataset, sampler=SequentialSampler(dataset), batch_size=5, num_workers=workers)
    assert spy.dtypes() == {torch.uint8}
    assert spy.stored_layout() and all(x.is_contiguous() for x in model.inputs)
    assert_equal_batches(model.inputs, [images for images, _ in theirs])


def test_device_normalize_refuses_what_it_cannot_normalise() -> None:
    normalize = DeviceNormalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    with pytest.raises(ValueError, match="channels"):
        normalize(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="int32"):
        normalize(torch.zeros(2, 3, 4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="--std must be positive"):
        DeviceNormalize((0.5,), (0.0,))


def test_uint16_and_float_batches_follow_to_tensor() -> None:
    """ToTensor's other stored types: uint16 / 65535 (16-bit images), float32 arrays as they are."""
    g = torch.Generator().manual_seed(0)
    mean, std = (0.3,), (0.2,)
    sixteen = torch.randint(0, 65536, (2, 1, 3, 3), generator=g, dtype=torch.int32).to(torch.uint16)
    floats = torch.rand(2, 1, 3, 3, generator=g)
    expected16 = (sixteen.to(torch.float32) / 65535 - torch.tensor(0.3)) / torch.tensor(0.2)
    expected_float = (floats - torch.tensor(0.3)) / torch.tensor(0.2)
    assert torch.equal(DeviceNormalize(mean, std)(sixteen), expected16)
    assert torch.equal(DeviceNormalize(mean, std)(floats), expected_float)
