"""``mae evaluate FILE --data_path DIR``: top-1 / top-5 accuracy and loss of a fine-tuned or linear-probe
checkpoint on a folder of labelled images, with the official evaluation transform.

    mae evaluate mae_finetuned_vit_base.pth --data_path /data/imagenet        # DIR/val, or DIR itself
    mae evaluate out/checkpoint-best.pth --data_path data --json              # one JSON object

The file may be an official fine-tuned release (``mae_finetuned_vit_*.pth``: 83.6 / 85.9 / 86.9 top-1
reported on ImageNet-1K val for ViT-B / L / H), a ``mae finetune`` or ``mae linprobe`` checkpoint, or an
official ``main_finetune.py`` / ``main_linprobe.py`` one. The model is read from the file: its sizes from
the tensors (or the run's recorded ``--model`` and ``--model_args``), the number of classes from the
head, global pooling from ``fc_norm``, the linear-probe head from ``head.0`` / ``head.1``. The folder
holds one sub-folder per class, sorted as in training (ImageNet's ``val`` in synset folders).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, read_checkpoint
from ..classifier import VisionTransformer
from .data import build_eval_loader, build_image_folder
from .distributed import Dist, available_device
from .engine_finetune import evaluate
from .finetune import classifier_config, classifier_names
from .flags import add_channel_flags, flag, key_values, non_negative, positive
from .norm_stats import resolve_flags, stats_from_args
from .normalize import DeviceNormalize
from .precision import autocast, resolve_dtype


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="FILE", help="a fine-tuned or linear-probe checkpoint")
    flag(parser, "data_path", required=True, help="DIR/val (or DIR): one sub-folder of images per class")
    flag(parser, "batch_size", type=positive(int), default=64)
    flag(parser, "input_size", type=positive(int), default=None, help="default: the size the file was trained at")
    flag(parser, "model", default=None, metavar="MODEL", help="only for a custom model the file cannot name")
    flag(parser, "model_args", nargs="*", default=None, metavar="NAME=VALUE", help="MAEConfig fields, with --model")
    flag(parser, "num_workers", type=non_negative(int), default=4)
    flag(parser, "device", default="cuda" if torch.cuda.is_available() else "cpu")
    flag(
        parser,
        "dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="auto: float16 on CUDA (as the official evaluation), float32 on CPU",
    )
    flag(parser, "json", action="store_true", help="print one JSON object instead of a sentence")
    add_channel_flags(parser.add_argument_group("channels and statistics"), in_chans_default=None, auto=False)


def build_model(
    path: str, model: str | None = None, model_args: list[str] | None = None, input_size: int | None = None
) -> tuple[VisionTransformer, dict[str, Any]]:
    """The classifier a checkpoint holds, with its weights; and what was read (name, classes, pooling, probe)."""
    from .linprobe import add_probe_head

    state, info = read_checkpoint(path)
    if info.kind != "classifier":
        what = {"full": "a pre-trained MAE (encoder + decoder)", "encoder": "a pre-trained MAE encoder"}.get(
            info.kind, f"not a classifier ({info.kind})"
        )
        raise CheckpointError(
            path,
            f"is {what}: it has no classification head.",
            "Fine-tune it first (mae finetune --finetune FILE ...) or linear-probe it (mae linprobe --finetune FILE).",
        )
    run = info.run_args or {}
    name = model or (run.get("model") if run.get("model") in classifier_names() else None)
    if name is None and info.model_name:
        name = info.model_name.removeprefix("mae_")
    if name is None:
        raise CheckpointError(
            path,
            f"holds {info.describe()}, which is not a registered variant, and records no --model.",
            f"Pass --model (one of {', '.join(classifier_names())}) and --model_args (e.g. depth=6 num_heads=6).",
        )
    overrides = key_values(model_args if model_args is not None else list(run.get("model_args") or []), "--model_args")
    probe = "head.1.weight" in state
    head = state["head.1.weight" if probe else "head.weight"]
    size = input_size or (run.get("input_size") if isinstance(run.get("input_size"), int) else None)
    size = size or info.img_size or 224
    channels = int(state["patch_embed.proj.weight"].shape[1]) if "patch_embed.proj.weight" in state else 3
    overrides.setdefault("in_chans", channels)  # the channels of the weights (a 1-channel classifier reads 1)
    config = classifier_config(name, **overrides, img_size=size)

    def build() -> VisionTransformer:
        net = VisionTransformer(config, num_classes=head.shape[0], global_pool="fc_norm.weight" in state)
        return add_probe_head(net) if probe else net

    with torch.device("meta"):  # the checks first, without allocating (or initialising) a model
        shapes = {k: v.shape for k, v in build().state_dict().items()}
    theirs, ours = set(state), set(shapes)
    if theirs != ours:
        raise CheckpointError(
            path,
            f"does not fit {name} (missing: {', '.join(sorted(ours - theirs)[:4]) or '-'}; not in the model: "
            f"{', '.join(sorted(theirs - ours)[:4]) or '-'}).",
            "Pass the --model and --model_args it was trained with.",
        )
    pos = state["pos_embed"]
    if pos.shape != shapes["pos_embed"]:
        raise CheckpointError(
            path,
            f"was trained at {info.img_size}px (position table {list(pos.shape)}); the model is at {size}px.",
            f"Leave out --input_size, or pass --input_size {info.img_size}.",
        )
    wrong = [k for k in state if state[k].shape != shapes[k]]
    if wrong:
        raise CheckpointError(
            path,
            f"has tensors of other shapes than {name}'s ({wrong[0]}: {list(state[wrong[0]].shape)} in the file, "
            f"{list(shapes[wrong[0]])} in the model).",
            "Pass the --model and --model_args it was trained with.",
        )
    net = build()
    net.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()})
    facts = {
        "model": name,
        "classes": head.shape[0],
        "input_size": size,
        "probe": probe,
        "global_pool": net.global_pool,
        "in_chans": config.in_chans,
    }
    stats, _ = stats_from_args(run, config.in_chans)  # the run's own --mean/--std; ImageNet's for 3 unrecorded channels
    if stats is not None:
        facts["mean"], facts["std"] = stats
    return net, facts


def run(args: argparse.Namespace) -> int:
    """The ``mae evaluate`` command."""
    from .augment import eval_transform

    path = Path(args.checkpoint).expanduser()
    if not path.is_file():
        raise ValueError(f"{path} does not exist: give a fine-tuned or linear-probe checkpoint file")
    device = available_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, facts = build_model(str(path), args.model, args.model_args, args.input_size)
    if args.in_chans is not None and args.in_chans != facts["in_chans"]:
        raise ValueError(
            f"--in_chans {args.in_chans}: {path.name} is a {facts['in_chans']}-channel classifier; leave --in_chans out"
        )
    if args.mean is not None or args.std is not None or "mean" not in facts:
        given = resolve_flags(
            facts["in_chans"], args.mean, args.std, auto=False, offer_auto=False
        )  # never None without auto
        facts["mean"], facts["std"] = given if given is not None else (None, None)
    root = Path(args.data_path).expanduser()
    root = root / "val" if (root / "val").is_dir() else root
    dataset = build_image_folder(root, eval_transform(facts["input_size"]), in_chans=facts["in_chans"])
    if len(dataset.classes) != facts["classes"]:
        raise ValueError(
            f"{path.name} classifies {facts['classes']} classes but {root} has {len(dataset.classes)} class folders: "
            "evaluate on the label set it was trained on (one folder per class, the same names)"
        )
    loader = build_eval_loader(
        dataset, batch_size=args.batch_size, num_workers=args.num_workers, pin_memory=device.type == "cuda"
    )
    stats = evaluate(
        model.to(device),
        loader,
        shared=False,  # một tiến trình, mọi ảnh
        dist=Dist(device=device),
        autocast=autocast(device, dtype),
        progress=not args.json,
        steps=len(loader),
        normalize=DeviceNormalize(facts["mean"], facts["std"]),  # the file's statistics, on the device
    )
    result = {
        "checkpoint": str(path),
        "data": str(root),
        **facts,
        "dtype": str(dtype).removeprefix("torch."),
        **{k: stats[k] for k in ("acc1", "acc5", "loss")},
        "images": int(stats["images"]),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{path.name} ({facts['model']}, {facts['classes']} classes, {facts['input_size']}px"
            f"{', linear probe' if facts['probe'] else ''}) on {result['images']:,} images of {root}: "
            f"top-1 {stats['acc1']:.2f}%, top-5 {stats['acc5']:.2f}%, loss {stats['loss']:.4f}"
        )
    return 0
