"""``mae finetune``: the official ``main_finetune.py`` recipe (He et al., 2022, §4 and Appendix A.2), under
its flag names, wired from the pieces pre-training uses.

    mae finetune --data_path IMAGENET --model vit_base_patch16 --finetune mae_pretrain_vit_base.pth \\
        --batch_size 32 --accum_iter 4 --epochs 100 --blr 5e-4 --layer_decay 0.65 --weight_decay 0.05 \\
        --drop_path 0.1 --mixup 0.8 --cutmix 1.0 --reprob 0.25 --dist_eval --output_dir out
    torchrun --nproc_per_node 8 -m mae finetune ...        # DistributedDataParallel

The set-up follows the official order (seed, data, mixup, model, pre-trained weights, head re-drawn,
optimizer, resume), so the same seed draws the same random numbers. The recipe: timm's augmentation
(RandAugment, random erasing) and Mixup/CutMix with soft-target or label-smoothing cross-entropy
(`augment`, `mixup`); AdamW (betas 0.9, 0.999, as the official script) over the layer-wise lr-decay
groups (`mae.classifier.param_groups_lrd`); per-iteration warmup then half-cycle cosine on each group's
``lr_scale``; evaluation (top-1, top-5, loss) after every epoch.

Departures from the official script, on purpose (besides those of ``mae pretrain``: re-shuffling every
epoch, ``--dtype``, atomic checkpoints with ``rng``, an error on a non-finite loss, ``--overwrite``):
- ``--nb_classes`` defaults to the number of class folders, and a different count is an error;
- ``--input_size`` builds the model at that size (the position table of ``--finetune`` is resized);
- ``--finetune`` refuses a fine-tuned classifier (it would be fine-tuned twice) and says when it drops
  a decoder; the loading is strict apart from the new head;
- ``--dist_eval`` shares the images between processes without padding (the accuracy is exactly the
  single-process one), and the evaluation loss is the mean over images; without it every process
  evaluates every image (as the official) and each image is counted once;
- each epoch is evaluated before its checkpoint is written (the official script writes first): the
  evaluation's loader draws a seed from the random generator, and the saved generator state must
  include that draw for ``--resume`` to continue bit for bit (the weights saved are the same);
- the best epoch's weights are kept in ``checkpoint-best.pth`` (``{"model", "epoch", "args", "acc1",
  "acc5"}``), and ``--save_every`` can thin the per-epoch checkpoints (official: every epoch).
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from .. import models
from ..checkpoint import CheckpointError
from ..classifier import VisionTransformer, param_groups_lrd
from ..config import MAEConfig
from . import distributed, metrics
from .data import build_classification_datasets, build_eval_loader, build_loader
from .engine import NonFiniteLossError
from .engine_finetune import evaluate, train_one_epoch
from .fast_path import apply_fast_path, classifier_tokens
from .flags import (
    add_channel_flags,
    add_device_and_distributed_flags,
    add_loader_flags,
    add_log_flags,
    add_requeue_flags,
    flag,
    key_values,
    non_negative,
    positive,
)
from .log_sinks import LogSinks, events_dir
from .norm_stats import compute_stats, describe
from .normalize import DeviceNormalize
from .precision import (
    LossScaleWatch,
    autocast,
    grad_scaler,
    resolve_dtype,
    scale_note,
    warn_if_fast_path_gains_nothing,
)
from .preemption import Preemption
from .run_checkpoint import read_run_checkpoint, resolve_resume, save_atomic
from .run_lines import (
    batch_line,
    device_line,
    effective_batch,
    model_line,
    nothing_to_train,
    trained_parameter_count,
)
from .runs import (
    interrupted_epoch,
    last_checkpoint_hint,
    mid_epoch_saver,
    prepare_output,
    quiet_loading,
    refuse_earlier_run,
    resume_training_state,
    run_command,
    save_checkpoint,
    say,
    seed_everything,
)
from .schedule import CosineSchedule, base_learning_rate

BEST_NAME = "checkpoint-best.pth"
ALREADY_FINETUNED = (
    "is already a fine-tuned classifier: --finetune starts from a pre-trained MAE (mae_pretrain_vit_*.pth, "
    "a `mae pretrain` checkpoint, or a visualize file, whose decoder is dropped)."
)
ALREADY_FINETUNED_FIX = (
    "Evaluate it with `mae evaluate FILE --data_path DATA`, continue its run with --resume, or pass the "
    "pre-trained file it came from."
)


def classifier_names() -> list[str]:
    """The classifier names ``--model`` takes: every registered MAE variant without its ``mae_`` prefix."""
    return sorted(n.removeprefix("mae_") for n in models.list_models() if n.startswith("mae_") and "_dec" not in n)


def classifier_config(name: str, **overrides: Any) -> MAEConfig:
    """The encoder configuration of ``--model NAME`` (e.g. ``vit_base_patch16``) with ``overrides``."""
    if name not in classifier_names():
        raise ValueError(f"unknown --model {name!r}; valid: {', '.join(classifier_names())}")
    with torch.device("meta"):
        base = models.create_model(f"mae_{name}").config
    return replace(base, **overrides)


# ----------------------------------------------------------------------------------------------- flags


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    batch_size: int,
    epochs: int,
    blr: float,
    min_lr: float,
    warmup_epochs: int,
    weight_decay: float,
) -> None:
    """The flags fine-tuning and linear probing share, under the official names and with their defaults."""
    flag(
        parser,
        "batch_size",
        type=positive(int),
        default=batch_size,
        help="per process (x accum_iter x processes)",
    )
    flag(parser, "epochs", type=positive(int), default=epochs)
    flag(parser, "accum_iter", type=positive(int), default=1, help="batches per optimizer step (gradient accumulation)")
    g = parser.add_argument_group("model")
    flag(g, "model", default="vit_large_patch16", metavar="MODEL", help=f"one of {', '.join(classifier_names())}")
    flag(g, "finetune", default="", metavar="FILE", help="the pre-trained checkpoint to start from")
    flag(g, "global_pool", action="store_true", help="average the patch tokens (fine-tuning's default)")
    flag(g, "cls_token", action="store_false", dest="global_pool", help="classify the class token instead")
    flag(g, "nb_classes", type=positive(int), default=None, metavar="N", help="default: the number of class folders")
    flag(g, "model_args", nargs="*", default=[], metavar="NAME=VALUE", help="MAEConfig fields of a custom model")
    flag(g, "input_size", type=positive(int), default=224, help="image size (the model is built at it)")
    g = parser.add_argument_group("optimizer")
    flag(g, "weight_decay", type=non_negative(float), default=weight_decay)
    flag(g, "lr", type=positive(float), default=None, metavar="LR", help="absolute lr (default: blr x batch / 256)")
    flag(g, "blr", type=positive(float), default=blr, metavar="LR", help="base lr: lr = blr x effective batch / 256")
    flag(g, "min_lr", type=non_negative(float), default=min_lr, metavar="LR", help="where the cosine ends")
    flag(g, "warmup_epochs", type=non_negative(int), default=warmup_epochs, metavar="N")
    g = parser.add_argument_group("data and output")
    flag(g, "data_path", required=True, help="a folder with train/ and val/, one sub-folder of images per class")
    flag(g, "output_dir", default="./output_dir", help="checkpoints and log.txt ('' for no saving)")
    add_log_flags(g)
    flag(g, "save_every", type=positive(int), default=1, metavar="N", help="save every N epochs, and the last")
    flag(g, "resume", default="", help="a checkpoint-N.pth (or its folder, for the latest) to continue")
    flag(g, "start_epoch", type=non_negative(int), default=0, metavar="N")
    add_requeue_flags(g)
    flag(g, "eval", action="store_true", help="only evaluate the --resume checkpoint on DATA/val")
    flag(g, "dist_eval", action="store_true", help="evaluate on every process (each a share of the images)")
    add_loader_flags(g)
    add_channel_flags(parser.add_argument_group("channels and statistics (your own data)"), in_chans_default=None)
    add_device_and_distributed_flags(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The official ``main_finetune.py`` flags (same names and defaults, dashed spellings too), then ours."""
    add_run_arguments(parser, batch_size=64, epochs=50, blr=1e-3, min_lr=1e-6, warmup_epochs=5, weight_decay=0.05)
    parser.set_defaults(global_pool=True)
    g = parser.add_argument_group("fine-tuning")
    flag(g, "drop_path", type=float, default=0.1, metavar="PCT", help="stochastic depth rate (0.1 B, 0.2 L, 0.3 H)")
    flag(g, "layer_decay", type=float, default=0.75, help="layer-wise lr decay (0.65 for ViT-B, 0.75 L/H)")
    flag(g, "clip_grad", type=positive(float), default=None, metavar="NORM", help="clip the gradient norm")
    flag(
        g,
        "grad_checkpointing",
        action="store_true",
        help="recompute each Transformer block in the backward instead of storing its activations: "
        "less memory, more time, the same gradients",
    )
    g = parser.add_argument_group("augmentation (timm)")
    flag(g, "color_jitter", type=float, default=None, metavar="PCT", help="only without --aa")
    flag(g, "aa", default="rand-m9-mstd0.5-inc1", metavar="NAME", help="RandAugment policy")
    flag(g, "smoothing", type=float, default=0.1, help="label smoothing")
    flag(g, "reprob", type=float, default=0.25, metavar="PCT", help="random erasing probability")
    flag(g, "remode", default="pixel", help="random erasing mode")
    flag(g, "recount", type=int, default=1, help="random erasing count")
    flag(g, "resplit", action="store_true", help="accepted for the official commands (unused there too)")
    flag(g, "mixup", type=float, default=0, help="mixup alpha (on if > 0)")
    flag(g, "cutmix", type=float, default=0, help="cutmix alpha (on if > 0)")
    flag(g, "cutmix_minmax", type=float, nargs="+", default=None, help="cutmix min/max ratio (overrides alpha)")
    flag(g, "mixup_prob", type=float, default=1.0, help="probability of mixup or cutmix per batch")
    flag(g, "mixup_switch_prob", type=float, default=0.5, help="probability of cutmix instead of mixup")
    flag(g, "mixup_mode", default="batch", choices=["batch", "pair", "elem"], help="how mixup parameters are drawn")


# ----------------------------------------------------------------------------------------------- recipe


@dataclass
class Recipe:
    """What differs between fine-tuning and linear probing; the trainer below does the rest."""

    name: str  # the command: "finetune" or "linprobe"
    check: Callable[[argparse.Namespace], None]
    transforms: Callable[[argparse.Namespace], tuple[Callable[[Any], Any], Callable[[Any], Any]]]  # train, eval
    build_model: Callable[[argparse.Namespace, int], VisionTransformer]  # (args, classes), before any weights
    prepare_model: Callable[[argparse.Namespace, VisionTransformer], list[str]]  # after --finetune: notes
    optimizer: Callable[[argparse.Namespace, nn.Module], torch.optim.Optimizer]
    criterion: Callable[[argparse.Namespace], nn.Module]
    mixup: Callable[[argparse.Namespace, int], Any]
    clip_grad: Callable[[argparse.Namespace], float | None]


def build_classifier(args: argparse.Namespace, classes: int, **kwargs: Any) -> VisionTransformer:
    """The classifier of ``--model`` (at ``--input_size`` when the recipe has it) with ``--model_args``."""
    overrides = key_values(args.model_args, "--model_args")
    if "img_size" in overrides:
        raise ValueError("--model_args img_size=...: use --input_size instead")
    if "in_chans" in overrides:
        raise ValueError("--model_args in_chans=...: use --in_chans instead")
    overrides["img_size"] = args.input_size
    overrides["in_chans"] = getattr(args, "in_chans", None) or 3
    return VisionTransformer(
        classifier_config(args.model, **overrides), num_classes=classes, global_pool=args.global_pool, **kwargs
    )


def load_finetune(args: argparse.Namespace, model: VisionTransformer) -> list[str]:
    """``--finetune FILE``: the pre-trained encoder into ``model`` (strict but for the new head), as the
    official script does it, with the position table resized to the model's size. Returns notes."""
    with quiet_loading():
        report = model.load_pretrained(args.finetune, interpolate_pos_embed=True)
    if report.kind == "classifier":
        raise CheckpointError(args.finetune, ALREADY_FINETUNED, ALREADY_FINETUNED_FIX)
    return [report.summary(), *report.notes, *report.warnings]


def redraw_head(model: VisionTransformer, std: float) -> None:
    """Draw the head's weight again, truncated normal at ``std``, after the pre-trained weights are loaded,
    with timm's ``trunc_normal_`` as the official scripts do. It samples by the inverse normal CDF, where
    ``torch.nn.init.trunc_normal_`` (since torch 2.x) samples by rejection: other numbers from the same seed."""
    from timm.layers.weight_init import trunc_normal_

    trunc_normal_(cast(nn.Linear, model.head).weight, std=std)


def _check_finetune_file(path: str) -> None:
    """Refuse, before any work, a ``--finetune`` file that is missing or is not a pre-trained MAE."""
    from ..checkpoint import inspect_checkpoint

    if not Path(path).expanduser().is_file():
        raise ValueError(f"--finetune {path} does not exist: give a pre-trained checkpoint file")
    kind = inspect_checkpoint(Path(path).expanduser()).kind
    if kind == "classifier":
        raise CheckpointError(path, ALREADY_FINETUNED, ALREADY_FINETUNED_FIX)
    if kind not in ("full", "encoder"):
        raise CheckpointError(
            path,
            "holds no pre-trained MAE encoder.",
            "Pass a mae_pretrain_vit_*.pth file or a `mae pretrain` checkpoint.",
        )


def _finetune_model(args: argparse.Namespace, classes: int) -> VisionTransformer:
    model = build_classifier(args, classes, drop_path_rate=args.drop_path)
    model.set_grad_checkpointing(args.grad_checkpointing)
    return model


def _finetune_prepare(args: argparse.Namespace, model: VisionTransformer) -> list[str]:
    if not args.finetune or args.eval:
        return []
    notes = load_finetune(args, model)
    # Vẽ lại trọng số đầu phân loại sau khi nạp (std 2e-5, như bản gốc): cùng dãy số ngẫu nhiên với bản gốc.
    redraw_head(model, std=2e-5)
    return notes


def _finetune_optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    # Learning rate giảm dần theo tầng: tầng càng gần đầu vào càng học chậm (lr_scale = layer_decay^k).
    groups = param_groups_lrd(cast(VisionTransformer, model), args.weight_decay, args.layer_decay)
    return torch.optim.AdamW(groups, lr=args.lr)  # betas mặc định (0.9, 0.999), như main_finetune.py


def _finetune_check(args: argparse.Namespace) -> None:
    from .mixup import mixup_active

    if not 0.0 <= args.drop_path < 1.0:
        raise ValueError(f"--drop_path must be in [0, 1); got {args.drop_path}")
    if not 0.0 < args.layer_decay <= 1.0:
        raise ValueError(f"--layer_decay must be in (0, 1]; got {args.layer_decay}")
    if not 0.0 <= args.smoothing < 1.0:
        raise ValueError(f"--smoothing must be in [0, 1); got {args.smoothing}")
    _finetune_transforms(args)  # an unknown --aa policy is an error now, not when the data is read
    if mixup_active(args) and args.batch_size % 2:
        raise ValueError(f"--mixup/--cutmix mix pairs of images: --batch_size must be even; got {args.batch_size}")


def _finetune_transforms(args: argparse.Namespace) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    from .augment import eval_transform, finetune_transform

    return finetune_transform(args), eval_transform(args.input_size)


def _finetune_criterion(args: argparse.Namespace) -> nn.Module:
    from .mixup import build_criterion

    return build_criterion(args)


def _finetune_mixup(args: argparse.Namespace, classes: int) -> Any:
    from .mixup import build_mixup

    return build_mixup(args, classes)


FINETUNE = Recipe(
    name="finetune",
    check=_finetune_check,
    transforms=_finetune_transforms,
    build_model=_finetune_model,
    prepare_model=_finetune_prepare,
    optimizer=_finetune_optimizer,
    criterion=_finetune_criterion,
    mixup=_finetune_mixup,
    clip_grad=lambda args: args.clip_grad,
)


# ----------------------------------------------------------------------------------------------- trainer


def check_arguments(args: argparse.Namespace, recipe: Recipe) -> None:
    """Everything that can be checked before any work (the data is checked when it is read)."""
    classifier_config(args.model, **{k: v for k, v in key_values(args.model_args, "--model_args").items()})
    recipe.check(args)
    if args.fast and args.device == "cpu" and args.dtype in ("auto", "float32"):
        warn_if_fast_path_gains_nothing()  # the linear layers' choice; the others: `fast_path`, said in "device:"
    if args.eval and not args.resume:
        raise ValueError("--eval evaluates the --resume checkpoint: pass --resume FILE (or use `mae evaluate FILE`)")
    if args.finetune and not args.eval:
        _check_finetune_file(args.finetune)
    if not args.eval:
        refuse_earlier_run(args)
    if args.resume:
        args.resume = str(resolve_resume(args.resume))
    _channels_and_statistics(args, recipe)


def _channels_and_statistics(args: argparse.Namespace, recipe: Recipe) -> None:
    """``args.in_chans``, ``args.mean``, ``args.std``: the flags', else those the ``--resume`` or ``--finetune`` file
    recorded (`norm_stats.stats_from_args`), else 3 channels and ImageNet's; ``--norm_stats auto``: computed from
    DATA/train once it is read. RGB-only augmentation is refused here for data of other channels."""
    from ..checkpoint import inspect_checkpoint
    from .image_formats import for_own_modes
    from .norm_stats import resolve_flags, stats_from_args

    if "in_chans" in key_values(args.model_args, "--model_args"):
        raise ValueError("--model_args in_chans=...: use --in_chans instead")
    source = args.resume or args.finetune
    recorded, file_chans = None, None
    if source and Path(source).expanduser().is_file():
        info = inspect_checkpoint(Path(source).expanduser())
        recorded, file_chans = stats_from_args(info.run_args, info.in_chans)
    if args.in_chans is None:
        args.in_chans = file_chans or 3
    auto = args.norm_stats == "auto"
    if auto and args.eval:
        raise ValueError("--norm_stats auto computes the statistics of DATA/train: --eval uses the checkpoint's")
    given = auto or args.mean is not None or args.std is not None
    if not given and recorded is not None and file_chans == args.in_chans:
        args.mean, args.std = recorded  # Dùng đúng thống kê lúc tiền huấn luyện: mô hình đã quen đầu vào chuẩn hoá này.
    else:
        stats = resolve_flags(args.in_chans, args.mean, args.std, auto)
        args.mean, args.std = stats if stats is not None else (None, None)
    if args.in_chans != 3 and not args.eval:
        for_own_modes(recipe.transforms(args)[0])  # RandAugment / colour jitter refused before any work


def run(args: argparse.Namespace, recipe: Recipe = FINETUNE) -> int:
    """The ``mae finetune`` (or ``mae linprobe``) command."""
    check_arguments(args, recipe)

    def logged(dist: distributed.Dist) -> None:
        log_dir = None if args.eval else events_dir(args.log_dir, args.output_dir)  # --eval: no events (official)
        with LogSinks(
            print_freq=args.print_freq, log_dir=log_dir, is_main=dist.is_main, device=dist.device, loss_tag="loss"
        ) as sinks:  # closed when the run ends, also on an error
            train(args, recipe, dist, sinks)

    return run_command(recipe.name, args, logged)


def train(args: argparse.Namespace, recipe: Recipe, dist: distributed.Dist, sinks: LogSinks | None = None) -> None:
    """Set up as the official script does, in its order, then train and evaluate epoch by epoch (figures to
    ``sinks``)."""
    device = dist.device
    dtype = resolve_dtype(args.dtype, device)
    seed_everything(args.seed + dist.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_transform, val_transform = recipe.transforms(args)
    dataset_train, dataset_val, classes = build_classification_datasets(
        args.data_path, None if args.eval else train_transform, val_transform, args.nb_classes, args.in_chans
    )
    args.nb_classes = classes
    if args.norm_stats == "auto" and dataset_train is not None:
        # Thống kê của chính dữ liệu huấn luyện (mẫu cố định, float64, trước tăng cường), như `mae pretrain`.
        args.mean, args.std = compute_stats([p for p, _ in dataset_train.samples], args.in_chans, dataset_train.loader)
    say(dist, f"statistics: {args.in_chans} channel(s), {describe(args.mean, args.std)}")
    normalize = DeviceNormalize(args.mean, args.std)  # the loaders' stored integers, normalised on the device
    pin = args.pin_mem and device.type == "cuda"
    eval_share = (dist.rank, dist.world_size) if args.dist_eval else (0, 1)
    loader_val = build_eval_loader(
        dataset_val,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=pin,
        rank=eval_share[0],
        world_size=eval_share[1],
    )
    loader_train = None
    if dataset_train is not None:
        loader_train = build_loader(
            dataset_train,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            pin_memory=pin,
            rank=dist.rank,
            world_size=dist.world_size,
            seed=args.seed,
        )
        if len(loader_train) < args.accum_iter:
            raise ValueError(
                f"an epoch has {len(loader_train)} batches but --accum_iter is {args.accum_iter}: no optimizer step "
                "would be taken. Lower --accum_iter or --batch_size"
            )
    mixup_fn = recipe.mixup(args, classes)

    model_without_ddp = recipe.build_model(args, classes)
    notes = recipe.prepare_model(args, model_without_ddp)
    model_without_ddp.to(device)
    model: nn.Module = model_without_ddp
    n_parameters = trained_parameter_count(model_without_ddp)  # log.txt's figure
    if args.lr is None:
        args.lr = base_learning_rate(args.blr, effective_batch(args.batch_size, args.accum_iter, dist.world_size))
    if dist.enabled:
        model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    optimizer = recipe.optimizer(args, model_without_ddp)
    tokens = classifier_tokens(model_without_ddp.patch_embed.num_patches)
    fast = apply_fast_path(model_without_ddp, optimizer, args.fast, device, dtype, args.batch_size, tokens)
    scaler = grad_scaler(device, dtype)
    criterion = recipe.criterion(args)
    schedule = CosineSchedule(args.lr, args.min_lr, args.warmup_epochs, args.epochs)

    if args.resume:
        notes += resume(args, model_without_ddp, optimizer, scaler, dist)
    forward = cast(nn.Module, torch.compile(model)) if args.compile else model
    run_autocast = autocast(device, dtype)

    c = model_without_ddp.config
    pool = "global pool" if model_without_ddp.global_pool else "class token"
    say(dist, model_line(args.model, model_without_ddp, c.img_size, c.patch_size, f"{pool}, {classes} classes"))
    for note in notes:
        say(dist, f"{'resume' if note.startswith(('continuing', 'random', 'dropped')) else 'weights'}: {note}")
    if args.eval:
        stats = evaluate(
            forward, loader_val, shared=args.dist_eval, dist=dist, autocast=run_autocast, normalize=normalize
        )
        say(
            dist,
            f"{Path(args.resume).name} on {stats['images']:.0f} images of {args.data_path}/val: "
            f"top-1 {stats['acc1']:.2f}%, top-5 {stats['acc5']:.2f}%, loss {stats['loss']:.4f}",
        )
        return
    assert loader_train is not None and dataset_train is not None
    steps = len(loader_train)
    output = prepare_output(args, dist, BEST_NAME)
    say(
        dist,
        f"data: {len(dataset_train):,} training and {len(dataset_val):,} validation images under "
        f"{args.data_path}; {steps} batches of {args.batch_size} per epoch per process",
    )
    loss = f"; loss {type(criterion).__name__}{', mixup/cutmix' if mixup_fn else ''}"
    say(
        dist,
        batch_line(args.batch_size, args.accum_iter, dist.world_size, args.lr, args.warmup_epochs, args.epochs, loss),
    )
    checkpointed = model_without_ddp.grad_checkpointing
    say(
        dist,
        device_line(device, dtype, compiled=args.compile, grad_checkpointing=checkpointed, fast=fast, output=output),
    )
    done = nothing_to_train(args.start_epoch, args.epochs)
    if done:
        say(dist, done)
        return

    best = _best_so_far(output, args.start_epoch)
    if sinks is not None:
        sinks.start()  # TensorBoard's folder, or the line saying tensorboard is missing
    started = time.time()
    start = interrupted_epoch(args.resume, steps, dist)  # a mid-epoch checkpoint: the epoch continues part-way
    preemption = Preemption(dist, args.save_every_minutes)
    at_boundary = mid_epoch_saver(output, preemption, model_without_ddp, optimizer, scaler, args, dist, steps)
    scale_watch = LossScaleWatch(steps // args.accum_iter, enabled=dist.is_main)  # float16: warns once if it collapses
    for epoch in range(args.start_epoch, args.epochs):
        cast(DistributedSampler[Any], loader_train.sampler).set_epoch(epoch)
        try:
            with preemption:  # SIGTERM/SIGUSR1: a mid-epoch checkpoint at the next step, then exit 75
                train_stats = train_one_epoch(
                    forward,
                    criterion,
                    loader_train,
                    optimizer,
                    scaler,
                    schedule,
                    epoch,
                    steps=steps,
                    accum_iter=args.accum_iter,
                    mixup_fn=mixup_fn,
                    autocast=run_autocast,
                    clip_grad=recipe.clip_grad(args),
                    dist=dist,
                    progress=True,
                    sinks=sinks,
                    start=start if epoch == args.start_epoch else None,
                    at_boundary=at_boundary,
                    normalize=normalize,
                )
        except NonFiniteLossError as e:
            raise NonFiniteLossError(
                f"{e}; {last_checkpoint_hint(args.output_dir)}. Lower --blr, add --clip_grad 1.0, or use "
                "--dtype bfloat16 / float32 instead of float16"
            ) from None
        # Đánh giá trước khi lưu (bản gốc lưu trước): việc lặp DataLoader đánh giá rút một số ngẫu nhiên, nên
        # trạng thái bộ sinh lưu sau đánh giá cho phép chạy tiếp (--resume) giống hệt chạy liền một mạch,
        # và dãy số ngẫu nhiên vẫn là của bản gốc. Trọng số lưu không đổi: đánh giá không sửa trọng số.
        test_stats = evaluate(
            forward, loader_val, shared=args.dist_eval, dist=dist, autocast=run_autocast, normalize=normalize
        )
        if sinks is not None:
            sinks.evaluation(epoch, test_stats)  # perf/test_acc1, perf/test_acc5, perf/test_loss
        saved = ""
        if output is not None and (epoch % args.save_every == 0 or epoch + 1 == args.epochs):
            saved = f", saved {save_checkpoint(output, epoch, model_without_ddp, optimizer, scaler, args, dist).name}"
        if test_stats["acc1"] > best and output is not None and dist.is_main:
            save_atomic(
                {
                    "model": model_without_ddp.state_dict(),
                    "epoch": epoch,
                    "args": _plain(args),
                    "acc1": test_stats["acc1"],
                    "acc5": test_stats["acc5"],
                },
                output / BEST_NAME,
            )
            saved += f", best so far: {BEST_NAME}"
        best = max(best, test_stats["acc1"])
        if output is not None and dist.is_main:
            record = {f"train_{k}": v for k, v in train_stats.items()} | {
                f"test_{k}": v for k, v in test_stats.items() if k in ("loss", "acc1", "acc5")
            }
            metrics.append_log(output, record | {"epoch": epoch, "n_parameters": n_parameters})
        scale_watch.epoch_ended(epoch, train_stats)
        say(
            dist,
            f"epoch {epoch + 1}/{args.epochs}: loss {train_stats['loss']:.4f}, lr {train_stats['lr']:.2e}, "
            f"{train_stats['images_per_s']:.1f} images/s{scale_note(train_stats)}; val top-1 {test_stats['acc1']:.2f}% "
            f"(best {best:.2f}%), top-5 {test_stats['acc5']:.2f}%, loss {test_stats['loss']:.4f}{saved}",
        )
    say(dist, f"training time {datetime.timedelta(seconds=int(time.time() - started))}; best top-1 {best:.2f}%")


def _plain(args: argparse.Namespace) -> argparse.Namespace:
    from .run_checkpoint import plain_args

    return plain_args(args)


def _best_so_far(output: Path | None, start_epoch: int) -> float:
    """The best validation top-1 of the epochs before ``start_epoch`` in the run's log (0 for a new run)."""
    if output is None or not (output / metrics.LOG_NAME).is_file():
        return 0.0
    records = metrics.read_log(output / metrics.LOG_NAME)
    seen = [r["test_acc1"] for r in records if r.get("epoch", start_epoch) < start_epoch and "test_acc1" in r]
    return max(seen, default=0.0)


def resume(
    args: argparse.Namespace,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    dist: distributed.Dist,
) -> list[str]:
    """Load ``--resume`` strictly (the official ``misc.load_model``), then its optimizer, scaler and epoch
    unless ``--eval``. Returns notes."""
    ckpt = read_run_checkpoint(args.resume)
    theirs, ours = set(ckpt["model"]), set(model.state_dict())
    if theirs != ours:
        missing, unexpected = sorted(ours - theirs), sorted(theirs - ours)
        raise CheckpointError(
            args.resume,
            f"does not fit this model (missing: {', '.join(missing[:4]) or '-'}; not in the model: "
            f"{', '.join(unexpected[:4]) or '-'}).",
            "Resume with the --model, --model_args, --global_pool/--cls_token and command of the run that wrote it.",
        )
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(args.resume, f"does not fit this model: {e}".replace("\n", " ")) from None
    notes = [f"loaded the weights of {Path(args.resume).name} (epoch {ckpt.get('epoch', '?')})"]
    if args.eval:
        return notes
    return notes + resume_training_state(args, ckpt, optimizer, scaler, dist)


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser (``mae finetune`` registers the same arguments as a sub-command)."""
    parser = argparse.ArgumentParser("mae finetune", description="MAE fine-tuning, the official recipe.")
    add_arguments(parser)
    return parser
