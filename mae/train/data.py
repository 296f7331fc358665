"""The training data: folders of images, the pre-training augmentation, and the loaders.

Pre-training: like the official script, ``--data_path DATA`` reads ``DATA/train`` when that folder
exists, else ``DATA``. A folder whose sub-folders hold the images is read as torchvision's
``ImageFolder`` (same order, same files as the official script); a folder holding the images themselves
is read as a flat list. Labels are not used in pre-training.

Fine-tuning, linear probing and evaluation: ``DATA/train`` and ``DATA/val``, each an ``ImageFolder``
with the same class folders. Evaluation is split between processes without padding, so every image is
counted once, whatever the number of processes.

Every problem that can be seen before training starts is reported then, with the path: a missing or
empty folder, no images, an image that cannot be opened, mismatched class folders.

Departure: ``--num_workers`` is capped at the CPUs this process may use (`loader_workers`), with one line
of ours instead of torch's over-subscription warning.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .collate import collate
from .image_formats import ARRAY_EXTENSIONS, has_data_extension, in_own_modes, unreadable, uses_own_modes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _torchvision() -> Any:
    try:
        import torchvision
    except ImportError as e:
        raise ImportError("training needs torchvision and Pillow: pip install 'mae[train]'") from e
    return torchvision


def pretrain_transform(input_size: int, jpeg_draft: bool = False) -> Callable[[Any], torch.Tensor]:
    """The official augmentation: random resized crop (scale 0.2-1, bicubic), horizontal flip; uint8 [3, H, W].

    Departure: the image's stored integers (``PILToTensor``), not ``ToTensor`` + ``Normalize``: the trainer
    normalises the batch on the device (`normalize.DeviceNormalize`), bit-equal to the official tensors.
    ``jpeg_draft``: the crop over an image not yet decoded (`jpeg_draft.DraftResizedCrop`, opt-in).
    """
    t = _torchvision().transforms
    if jpeg_draft:
        from .jpeg_draft import DraftResizedCrop  # torchvision's subclass: imported with torchvision, when used

    crop = DraftResizedCrop if jpeg_draft else t.RandomResizedCrop
    return t.Compose(
        [
            # MAE chỉ cần tăng cường dữ liệu nhẹ: việc che 75% patch đã là một dạng tăng cường mạnh (§4, Bảng 1e).
            crop(input_size, scale=(0.2, 1.0), interpolation=t.InterpolationMode.BICUBIC),
            t.RandomHorizontalFlip(),
            t.PILToTensor(),
        ]
    )


def load_rgb(path: str) -> Any:
    """Open an image as RGB (torchvision's default loader), naming the file when it cannot be read.

    An image already in RGB (most JPEGs) is returned as decoded: ``convert("RGB")`` would return a copy of
    it (Pillow's ``convert`` to the image's own mode), the same pixels, one pass over the image more.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
            return img if img.mode == "RGB" else img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise unreadable(path, e) from None


class ImageFiles(Dataset[tuple[Any, int]]):
    """A flat folder of images (no class sub-folders), sorted by name; every label is 0."""

    def __init__(self, files: list[Path], transform: Callable[[Any], Any]) -> None:
        self.samples = [(str(f), 0) for f in files]
        self.transform = transform
        self.loader: Callable[[str], Any] = load_rgb  # `image_formats.Reader` for data in its own mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        return self.transform(self.loader(path)), label


def data_root(data_path: str | Path) -> Path:
    """``DATA/train`` when it exists, else ``DATA``; ValueError for a missing, non-folder or empty path."""
    root = Path(data_path).expanduser()
    if not root.exists():
        raise ValueError(f"--data_path {root} does not exist: point it at a folder of images (or of class folders)")
    if not root.is_dir():
        raise ValueError(f"--data_path {root} is a file, not a folder of images")
    if (root / "train").is_dir():
        root = root / "train"
    if not any(root.iterdir()):
        raise ValueError(f"{root} is empty: put the training images in it (or in sub-folders of it)")
    return root


def build_pretrain_dataset(data_path: str | Path, input_size: int, in_chans: int = 3, jpeg_draft: bool = False) -> Any:
    """The training images under ``data_path`` with the official augmentation, checked before any training.

    A map-style dataset of (image tensor, label) with ``samples``: an ``ImageFolder`` or an ``ImageFiles``.
    ``in_chans`` other than 3, or ``.npy`` files: read in their own mode (`image_formats.in_own_modes`).
    ``jpeg_draft``: each image opened lazily and decoded by the crop at a reduced size (`jpeg_draft`; 8-bit
    RGB data only: ValueError for data read in its own mode).
    """
    root = data_root(data_path)
    folder = _torchvision().datasets.folder
    is_image = folder.IMG_EXTENSIONS + ARRAY_EXTENSIONS
    class_dirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    transform = pretrain_transform(input_size, jpeg_draft)
    loader = load_rgb
    if jpeg_draft:
        from .jpeg_draft import open_lazily

        loader = open_lazily
    dataset: Any
    if any(f.is_file() and f.name.lower().endswith(is_image) for d in class_dirs for f in d.rglob("*")):
        dataset = folder.ImageFolder(
            str(root), transform=transform, loader=loader, is_valid_file=has_data_extension, allow_empty=True
        )
    else:
        files = sorted(f for f in root.iterdir() if f.is_file() and f.name.lower().endswith(is_image))
        dataset = ImageFiles(files, transform)
        dataset.loader = loader
    if len(dataset) == 0:
        seen = sorted(p.name for p in root.iterdir())[:5]
        raise ValueError(
            f"{root} holds no images (looked for {', '.join(is_image)}, in it or in its sub-folders); "
            f"it has: {', '.join(seen)}"
        )
    if jpeg_draft and uses_own_modes(in_chans, [p for p, _ in dataset.samples]):
        raise ValueError(
            "--jpeg_draft decodes 8-bit RGB images (JPEGs at a reduced size); this data is read in its own mode "
            "(--in_chans other than 3, or .npy arrays): leave out --jpeg_draft"
        )
    in_own_modes(dataset, in_chans)
    return dataset


def available_cpus() -> int | None:
    """The CPUs this process may run on: its affinity mask where the system has one (Linux; it honours
    ``taskset`` and cgroup cpusets), else ``os.cpu_count()``; None when unknown. torch's loader uses the
    same count for its over-subscription warning."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


_ANNOUNCED: set[tuple[int, int]] = set()  # the (asked, cap) pairs already printed by this process


def capped_workers(requested: int) -> int:
    """The worker processes a loader asked for ``requested`` starts on this machine (`loader_workers`, silent)."""
    cpus = available_cpus()
    return requested if cpus is None or requested <= cpus else max(1, cpus)


def loader_workers(requested: int) -> int:
    """``--num_workers`` capped at `available_cpus` (unchanged when the count is unknown).

    Departure: the official scripts start ``--num_workers`` processes (default 10) whatever the machine,
    and torch then warns that so many may slow the loader or freeze it; here the count is capped and one
    line says so, on stderr (rank 0, once per process). The cap is never below 1 (a process may always use
    at least one CPU), so a run asked for workers keeps them: 0 would load in the training process. The
    crops drawn depend on the number of workers (each has its own random generator): a run resumed where
    the cap differs (another machine) draws other crops than the uninterrupted run would have.
    """
    cap = capped_workers(requested)
    if cap == requested:
        return requested
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    if (requested, cap) not in _ANNOUNCED and (not joined or torch.distributed.get_rank() == 0):
        # Thay cảnh báo của torch (in hai lần: loader huấn luyện và loader đánh giá) bằng một dòng của ta.
        print(f"loader: --num_workers {requested} capped at {cap}, the CPUs available to this process", file=sys.stderr)
    _ANNOUNCED.add((requested, cap))
    return cap


def leave_signals_to_the_trainer(worker_id: int) -> None:
    """A loader worker ignores SIGTERM and SIGUSR1: a scheduler signals every process of a job, and a worker
    killed by it would end the run with "DataLoader worker ... is killed by signal" before the training process
    could write its mid-epoch checkpoint (`preemption`); the training process ends its workers itself. Draws no
    random number (the workers' crops are those of the official loader)."""
    import signal

    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, signal.SIG_IGN)


def build_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
) -> DataLoader[Any]:
    """Batches of ``batch_size`` per process, incomplete last batch dropped, shuffled by ``DistributedSampler``.

    The sampler shuffles by ``seed`` and the epoch (``loader.sampler.set_epoch``). ValueError when no full
    batch can be formed.
    """
    # Mỗi tiến trình nhận một phần rời nhau của dữ liệu; thứ tự xáo trộn đổi theo epoch.
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
    )
    per_process = len(sampler)
    if batch_size > per_process:
        where = f" ({per_process} per process on {world_size} processes)" if world_size > 1 else ""
        raise ValueError(
            f"--batch_size {batch_size} is larger than the data: {len(dataset)} images{where}, and incomplete "  # type: ignore[arg-type]
            f"batches are dropped as in the official recipe. Use --batch_size {per_process} or less "
            "(and --accum_iter to keep the effective batch)"
        )
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=batch_size,
        num_workers=loader_workers(num_workers),
        pin_memory=pin_memory,
        drop_last=True,
        worker_init_fn=leave_signals_to_the_trainer,
        collate_fn=collate,  # torch's, but images keep their stored layout and erasing travels as a plan (`collate`)
    )


def build_image_folder(
    root: str | Path, transform: Callable[[Any], Any], option: str = "--data_path", in_chans: int = 3
) -> Any:
    """A torchvision ``ImageFolder`` (one sub-folder per class) at ``root``, checked before any training:
    ValueError for a missing folder, no class folders, an image that cannot be read, or other channels than
    ``in_chans`` (`image_formats.in_own_modes`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{option}: {root} is not a folder; it must hold one sub-folder of images per class")
    if not any(d.is_dir() for d in root.iterdir()):
        raise ValueError(f"{root} has no class sub-folders: put each class's images in a folder named after it")
    folder = _torchvision().datasets.folder
    dataset = folder.ImageFolder(
        str(root), transform=transform, loader=load_rgb, is_valid_file=has_data_extension, allow_empty=True
    )
    if len(dataset) == 0:
        extensions = folder.IMG_EXTENSIONS + ARRAY_EXTENSIONS
        raise ValueError(f"{root} holds no images in its class folders (looked for {', '.join(extensions)})")
    in_own_modes(dataset, in_chans)
    return dataset


def build_classification_datasets(
    data_path: str | Path,
    train_transform: Callable[[Any], Any] | None,
    val_transform: Callable[[Any], Any],
    nb_classes: int | None,
    in_chans: int = 3,
) -> tuple[Any, Any, int]:
    """``DATA/train`` and ``DATA/val`` as ``ImageFolder``s (the official layout), checked against each other.

    Returns (train, val, number of classes); ``train`` is None when ``train_transform`` is (evaluation
    only). ValueError when a folder is missing, when ``val`` has a class folder ``train`` lacks (its
    labels would be shifted), or when ``nb_classes`` is not the number of class folders.
    """
    root = Path(data_path).expanduser()
    if not root.is_dir():
        raise ValueError(f"--data_path {root} does not exist: it must hold train/ and val/ class folders")
    val = build_image_folder(root / "val", val_transform, "--data_path DATA/val", in_chans)
    classes = val.classes
    train = None
    if train_transform is not None:
        train = build_image_folder(root / "train", train_transform, "--data_path DATA/train", in_chans)
        if train.classes != val.classes:
            only_train = sorted(set(train.classes) - set(val.classes))
            only_val = sorted(set(val.classes) - set(train.classes))
            raise ValueError(
                f"{root}/train and {root}/val must have the same class folders (a label is a folder's position "
                f"in the sorted list): only in train: {', '.join(only_train[:5]) or '-'}; "
                f"only in val: {', '.join(only_val[:5]) or '-'}"
            )
        classes = train.classes
    if nb_classes is not None and nb_classes != len(classes):
        raise ValueError(
            f"--nb_classes {nb_classes} does not match the data: {root} has {len(classes)} class folders "
            f"({', '.join(classes[:5])}{' ...' if len(classes) > 5 else ''}). Pass --nb_classes {len(classes)} "
            "or leave it out"
        )
    return train, val, len(classes)


def build_eval_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader[Any]:
    """Every image once, in order: this process's share is images ``rank, rank + world_size, ...``.

    Departure: the official ``--dist_eval`` uses a shuffling ``DistributedSampler`` that pads the data
    with repeated images to a multiple of the process count; here the shares are disjoint and cover the
    data exactly, so the accuracy is the single-process one.
    """
    # Chia ảnh đánh giá cho các tiến trình, không lặp ảnh nào: độ chính xác không đổi theo số tiến trình.
    share = dataset if world_size == 1 else Subset(dataset, range(rank, len(dataset), world_size))  # type: ignore[arg-type]
    workers = loader_workers(num_workers)
    return DataLoader(
        share,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=leave_signals_to_the_trainer,
        collate_fn=collate,
    )
