"""``mae pretrain``: the official ``main_pretrain.py`` recipe, under its flag names, wired from small pieces.

    mae pretrain --data_path DATA --model mae_vit_base_patch16 --norm_pix_loss --batch_size 64 \\
        --accum_iter 4 --blr 1.5e-4 --epochs 800 --warmup_epochs 40 --output_dir out
    torchrun --nproc_per_node 8 -m mae pretrain ...        # DistributedDataParallel

The order of the set-up is the official one (seed, data, model, optimizer, resume), so the same seed
draws the same random numbers. Where this trainer departs from the official script, on purpose:
- the sampler is re-shuffled every epoch in one process too (the official script calls
  ``sampler.set_epoch`` only when distributed, so a one-GPU run sees the same order every epoch), and
  its shuffle follows ``--seed`` (the official one is seeded with 0 whatever ``--seed`` says);
- ``--input_size`` builds the model at that size (the official script always builds it at 224);
- the precision is chosen by ``--dtype`` (``auto``, the default, is the official: float16 on CUDA,
  float32 on the CPU), and ``--device`` defaults to CUDA only where there is one;
- a NaN or infinite loss raises an error naming the step instead of ``sys.exit(1)``;
- under DDP the gradients are all-reduced once per optimizer step, and no ``find_unused_parameters``;
- checkpoints are written atomically and carry each rank's random-generator state (``rng``), so a
  resumed run is bit for bit the uninterrupted one; a fresh run refuses a folder that holds checkpoints
  (``--overwrite`` deletes them and the log first; ``--auto_resume`` continues the folder's run, `auto_resume`);
- ``--save_every_minutes`` and SIGTERM/SIGUSR1 write a mid-epoch checkpoint at an optimizer-step boundary
  (`preemption`; exit status 75 after a signal), from which the epoch continues exactly;
- ``--in_chans``, ``--mean``/``--std`` and ``--norm_stats auto`` (ours): data of any channel count, read in its
  own mode (`image_formats`), normalised with its own statistics (`norm_stats`), recorded in the checkpoints;
- ``--log_dir`` left at its default writes the TensorBoard events into ``--output_dir`` (none with
  ``--output_dir ''``), and off a terminal a line is printed every ``--print_freq`` iterations (`log_sinks`).
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any, cast

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from .. import models
from . import distributed, metrics
from .data import build_loader, build_pretrain_dataset, load_rgb
from .engine_pretrain import NonFiniteLossError, train_one_epoch
from .fast_path import apply_fast_path, mae_tokens
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
from .norm_stats import compute_stats, describe, resolve_flags, stats_source
from .normalize import DeviceNormalize
from .optim import build_adamw
from .precision import (
    LossScaleWatch,
    autocast,
    grad_scaler,
    resolve_dtype,
    scale_note,
    warn_if_fast_path_gains_nothing,
)
from .preemption import Preemption
from .run_checkpoint import read_run_checkpoint, resolve_resume
from .run_lines import batch_line, device_line, effective_batch, epoch_notes, model_line, nothing_to_train
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The official ``main_pretrain.py`` flags (same names and defaults, dashed spellings too), then ours."""
    flag(
        parser,
        "batch_size",
        type=positive(int),
        default=64,
        help="per process; effective = batch_size x accum_iter x processes",
    )
    flag(parser, "epochs", type=positive(int), default=400)
    flag(parser, "accum_iter", type=positive(int), default=1, help="batches per optimizer step (gradient accumulation)")
    g = parser.add_argument_group("model")
    flag(g, "model", default="mae_vit_large_patch16", metavar="MODEL", help=f"one of {', '.join(models.list_models())}")
    flag(g, "input_size", type=positive(int), default=224, help="image size (the model is built at it)")
    flag(g, "mask_ratio", type=float, default=0.75, help="fraction of patches removed")
    flag(g, "norm_pix_loss", action="store_true", help="per-patch normalised pixels as the target (the paper's best)")
    flag(
        g,
        "model_args",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="MAEConfig fields, e.g. depth=6 embed_dim=384 (a smaller model)",
    )
    flag(
        g,
        "grad_checkpointing",
        action="store_true",
        help="recompute each Transformer block in the backward instead of storing its activations: "
        "less memory, more time, the same gradients",
    )
    g = parser.add_argument_group("optimizer")
    flag(g, "weight_decay", type=non_negative(float), default=0.05)
    flag(
        g,
        "lr",
        type=positive(float),
        default=None,
        metavar="LR",
        help="absolute lr (default: blr x effective batch / 256)",
    )
    flag(g, "blr", type=positive(float), default=1e-3, metavar="LR", help="base lr: lr = blr x effective batch / 256")
    flag(g, "min_lr", type=non_negative(float), default=0.0, metavar="LR", help="where the cosine ends")
    flag(g, "warmup_epochs", type=non_negative(int), default=40, metavar="N")
    flag(
        g,
        "clip_grad",
        type=positive(float),
        default=None,
        metavar="NORM",
        help="clip the gradient norm (off by default, as official)",
    )
    g = parser.add_argument_group("data and output")
    flag(
        g, "data_path", required=True, help="a folder of images or of class folders (DATA/train is used when it exists)"
    )
    flag(
        g, "jpeg_draft", action="store_true",
        help="decode each JPEG at 1/2, 1/4 or 1/8 of its size where its crop still covers --input_size (much "
        "faster for large photographs; not bit-equal there; RGB data only)",
    )  # fmt: skip
    flag(g, "output_dir", default="./output_dir", help="checkpoints and log.txt ('' for no saving)")
    add_log_flags(g)
    flag(
        g,
        "save_every",
        type=positive(int),
        default=20,
        metavar="N",
        help="save every N epochs, and the last (official: 20)",
    )
    flag(
        g, "knn_every", type=non_negative(int), default=0, metavar="N",
        help="every N epochs, the 20-NN accuracy of the encoder on DATA/val against DATA/train (0: off)",
    )  # fmt: skip
    flag(g, "resume", default="", help="a checkpoint-N.pth (or its folder, for the latest) to continue")
    flag(g, "start_epoch", type=non_negative(int), default=0, metavar="N")
    add_requeue_flags(g)
    add_loader_flags(g)
    add_channel_flags(parser.add_argument_group("channels and statistics (your own data)"))
    add_device_and_distributed_flags(parser)


def check_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that can be checked before any work; returns the model's keyword arguments."""
    if args.model not in models.list_models():
        raise ValueError(f"unknown --model {args.model!r}; valid: {', '.join(models.list_models())}")
    if not 0.0 <= args.mask_ratio < 1.0:
        raise ValueError(f"--mask_ratio must be in [0, 1) (the paper uses 0.75); got {args.mask_ratio}")
    kwargs: dict[str, Any] = {**key_values(args.model_args, "--model_args")}
    for name in ("img_size", "norm_pix_loss", "in_chans"):
        if name in kwargs:
            raise ValueError(f"--model_args {name}=...: use --{'input_size' if name == 'img_size' else name} instead")
    kwargs.update(img_size=args.input_size, norm_pix_loss=args.norm_pix_loss, in_chans=args.in_chans)
    stats = resolve_flags(args.in_chans, args.mean, args.std, args.norm_stats == "auto")  # None: auto, from the data
    args.mean, args.std = stats if stats is not None else (None, None)
    with torch.device("meta"):
        models.create_model(
            args.model, **kwargs
        )  # the configuration's own checks (e.g. a size the patch does not divide)
    if args.jpeg_draft and args.in_chans != 3:
        raise ValueError(
            f"--jpeg_draft decodes 8-bit RGB JPEGs; --in_chans {args.in_chans} data is read in its own mode: "
            "leave out --jpeg_draft"
        )
    if args.fast and args.device == "cpu" and args.dtype in ("auto", "float32"):
        warn_if_fast_path_gains_nothing()  # the linear layers' choice; the others: `fast_path`, said in "device:"
    refuse_earlier_run(args)
    if args.resume:
        args.resume = str(resolve_resume(args.resume))
    return kwargs


def run(args: argparse.Namespace) -> int:
    """The ``mae pretrain`` command."""
    model_kwargs = check_arguments(args)

    def logged(dist: distributed.Dist) -> None:
        log_dir = events_dir(args.log_dir, args.output_dir)
        with LogSinks(
            print_freq=args.print_freq, log_dir=log_dir, is_main=dist.is_main, device=dist.device, loss_tag="train_loss"
        ) as sinks:  # closed when the run ends, also on an error
            train(args, model_kwargs, dist, sinks)

    return run_command("pretrain", args, logged)


def train(
    args: argparse.Namespace, model_kwargs: dict[str, Any], dist: distributed.Dist, sinks: LogSinks | None = None
) -> None:
    """Set up as the official script does, in its order, then train epoch by epoch (figures to ``sinks``)."""
    device = dist.device
    dtype = resolve_dtype(args.dtype, device)
    seed_everything(args.seed + dist.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    dataset = build_pretrain_dataset(args.data_path, args.input_size, args.in_chans, args.jpeg_draft)
    if args.norm_stats == "auto":
        # Thống kê chuẩn hoá của chính dữ liệu, tính một lần trước khi học (mẫu cố định, float64, trước tăng cường).
        read = load_rgb if args.jpeg_draft else dataset.loader  # --jpeg_draft's loader only opens: decode whole
        args.mean, args.std = compute_stats([p for p, _ in dataset.samples], args.in_chans, read)
    loader = build_loader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=args.pin_mem and device.type == "cuda",
        rank=dist.rank,
        world_size=dist.world_size,
        seed=args.seed,
    )
    normalize = DeviceNormalize(args.mean, args.std)  # the loader's stored integers, normalised on the device
    from ..look.online_knn import OnlineKnn  # --knn_every: DATA/train and DATA/val checked here, before any work

    knn = (
        OnlineKnn(args.data_path, args.input_size, args.in_chans, args.batch_size, args.num_workers)
        if args.knn_every
        else None
    )
    steps = len(loader)
    if steps < args.accum_iter:
        raise ValueError(
            f"an epoch has {steps} batches but --accum_iter is {args.accum_iter}: no optimizer step would be taken. "
            "Lower --accum_iter or --batch_size"
        )

    output = prepare_output(args, dist)  # only once the data is known to be usable

    model_without_ddp = models.create_model(args.model, **model_kwargs).to(device)
    model_without_ddp.set_grad_checkpointing(args.grad_checkpointing)  # encoder and decoder blocks
    model: torch.nn.Module = model_without_ddp

    if args.lr is None:
        args.lr = base_learning_rate(args.blr, effective_batch(args.batch_size, args.accum_iter, dist.world_size))
    if dist.enabled:
        model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    optimizer = build_adamw(model_without_ddp, args.lr, args.weight_decay)
    tokens = mae_tokens(model_without_ddp.patch_embed.num_patches, args.mask_ratio)
    fast = apply_fast_path(model_without_ddp, optimizer, args.fast, device, dtype, args.batch_size, tokens)
    scaler = grad_scaler(device, dtype)
    schedule = CosineSchedule(args.lr, args.min_lr, args.warmup_epochs, args.epochs)

    notes = resume(args, model_without_ddp, optimizer, scaler, dist) if args.resume else []
    start = interrupted_epoch(args.resume, steps, dist)  # a mid-epoch checkpoint: the epoch continues part-way
    forward = cast(torch.nn.Module, torch.compile(model)) if args.compile else model

    c = model_without_ddp.config
    target = f"mask ratio {args.mask_ratio}, {'norm-pix' if c.norm_pix_loss else 'pixel'} target"
    say(dist, model_line(args.model, model_without_ddp, c.img_size, c.patch_size, target))
    draft = "; JPEGs decoded at a reduced size where their crop allows (--jpeg_draft)" if args.jpeg_draft else ""
    say(
        dist,
        f"data: {len(dataset):,} images ({type(dataset).__name__}) under {args.data_path}; {steps} batches of "
        f"{args.batch_size} per epoch per process{draft}",
    )
    say(
        dist,
        f"statistics: {c.in_chans} channel(s), {describe(args.mean, args.std)} "
        f"({stats_source(args.norm_stats == 'auto', args.mean, args.std, len(dataset))})",
    )
    say(dist, batch_line(args.batch_size, args.accum_iter, dist.world_size, args.lr, args.warmup_epochs, args.epochs))
    say(
        dist,
        device_line(
            device, dtype, compiled=args.compile, grad_checkpointing=args.grad_checkpointing, fast=fast, output=output
        ),
    )
    for line in epoch_notes(steps, args.accum_iter, args.warmup_epochs, args.epochs):
        say(dist, line)
    for note in notes:
        say(dist, f"resume: {note}")
    done = nothing_to_train(args.start_epoch, args.epochs)
    if done:
        say(dist, done)
        return

    if sinks is not None:
        sinks.start()  # TensorBoard's folder, or the line saying tensorboard is missing
    started = time.time()
    preemption = Preemption(dist, args.save_every_minutes)
    at_boundary = mid_epoch_saver(output, preemption, model_without_ddp, optimizer, scaler, args, dist, steps)
    scale_watch = LossScaleWatch(steps // args.accum_iter, enabled=dist.is_main)  # float16: warns once if it collapses
    for epoch in range(args.start_epoch, args.epochs):
        cast(DistributedSampler[Any], loader.sampler).set_epoch(epoch)  # xáo lại mỗi epoch, cả khi chỉ một tiến trình
        try:
            with preemption:  # SIGTERM/SIGUSR1: a mid-epoch checkpoint at the next step, then exit 75
                stats = train_one_epoch(
                    forward, loader, optimizer, scaler, schedule, epoch,
                    steps=steps, accum_iter=args.accum_iter, mask_ratio=args.mask_ratio,
                    autocast=autocast(device, dtype), clip_grad=args.clip_grad, dist=dist, progress=True, sinks=sinks,
                    start=start if epoch == args.start_epoch else None, at_boundary=at_boundary, normalize=normalize,
                )  # fmt: skip
        except NonFiniteLossError as e:
            raise NonFiniteLossError(
                f"{e}; {last_checkpoint_hint(args.output_dir)}. Lower --blr, add --clip_grad 3.0, or use "
                "--dtype bfloat16 / float32 instead of float16"
            ) from None
        checked: dict[str, float] = {}
        if knn is not None and (epoch + 1) % args.knn_every == 0:
            checked = knn(model_without_ddp, args.mean, args.std, device, autocast(device, dtype))
            say(
                dist,
                f"epoch {epoch + 1}: 20-NN on val: top-1 {checked['knn_top1']:.2f}%, top-5 {checked['knn_top5']:.2f}%",
            )
        saved = ""
        if output is not None and (epoch % args.save_every == 0 or epoch + 1 == args.epochs):
            path = save_checkpoint(output, epoch, model_without_ddp, optimizer, scaler, args, dist)
            saved = f", saved {path.name}"
        if output is not None and dist.is_main:
            metrics.append_log(output, {f"train_{k}": v for k, v in stats.items()} | {"epoch": epoch} | checked)
        scale_watch.epoch_ended(epoch, stats)
        say(
            dist,
            f"epoch {epoch + 1}/{args.epochs}: loss {stats['loss']:.4f}, lr {stats['lr']:.2e}, "
            f"{stats['images_per_s']:.1f} images/s{scale_note(stats)}{saved}",
        )
    say(dist, f"training time {datetime.timedelta(seconds=int(time.time() - started))}")


def resume(
    args: argparse.Namespace,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    dist: distributed.Dist,
) -> list[str]:
    """Load ``--resume``: weights (strictly, with `load_pretrained`'s checks), then, as the official
    ``misc.load_model``, the optimizer, scaler and next epoch when the file has them. Returns notes."""
    ckpt = read_run_checkpoint(args.resume)
    with quiet_loading():
        report = model.load_pretrained(args.resume)  # type: ignore[operator]
    return [
        report.summary(),
        *report.notes,
        *report.warnings,
        *resume_training_state(args, ckpt, optimizer, scaler, dist),
    ]


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser (``mae pretrain`` registers the same arguments as a sub-command)."""
    parser = argparse.ArgumentParser("mae pretrain", description="MAE pre-training, the official recipe.")
    add_arguments(parser)
    return parser
