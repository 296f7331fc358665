"""The `mae` command line (also `python -m mae`): pretrain, finetune, linprobe, evaluate, plot, verify,
reconstruct, attention, features, knn, inspect, convert, download.

Each training command's flags are defined beside its trainer (`mae.train.pretrain.add_arguments`); this
module only registers the sub-commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .checkpoint import CheckpointInfo


def _verify(args: argparse.Namespace) -> int:
    from . import verify

    variants = list(verify.VARIANTS) if args.variant == "all" else [args.variant]
    return verify.run(variants, args.report, verify.Setting(_device(args.device), _dtype(args.dtype)))


def _device(name: str) -> torch.device:
    from .train.distributed import available_device

    return available_device(name)


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="autocast precision of the forwards (float32: none); warned about where it is slower than float32 on "
        "this CPU (measured before the run)",
    )


def _reconstruct(args: argparse.Namespace) -> int:
    from .reconstruct import run

    norm_pix = {"auto": None, "on": True, "off": False}[args.norm_pix]
    out, notes = run(
        args.image,
        args.checkpoint,
        args.output,
        model_name=args.model,
        mask_ratio=args.mask_ratio,
        seed=args.seed,
        norm_pix=norm_pix,
        device=_device(args.device),
        dtype=_dtype(args.dtype),
        onednn=args.onednn,
        bands=_bands(args.bands),
    )
    for note in notes:
        print(note)
    print(f"wrote {out}")
    return 0


def _bands(text: str | None) -> tuple[int, ...] | None:
    """``--bands 3,2,1`` -> (3, 2, 1); ValueError for anything but comma-separated channel numbers."""
    if text is None:
        return None
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise ValueError(f"--bands takes channel numbers separated by commas (e.g. 3,2,1 or 0); got {text!r}") from None


def _inspect(args: argparse.Namespace) -> int:
    from .checkpoint import inspect_checkpoint

    info = inspect_checkpoint(args.file)
    if info.model_name is None and info.kind in ("full", "encoder"):
        name_from_registry(info)
    if args.json:
        record = dataclasses.asdict(info)
        record["official"] = dataclasses.asdict(info.official) if info.official else None
        print(json.dumps(record, indent=2, default=str))
        return 0
    print(format_info(info, Path(args.file)))
    return 0


def name_from_registry(info: CheckpointInfo) -> None:
    """Name a file of a registered, non-official variant (e.g. ViT-S/16) in ``info``, in place.

    The checkpoint layer names the official variants only (it knows no model class); here, above both, the
    registry is read: the first registered variant whose encoder (patch, channels, width, depth) and, where
    the file has one, decoder (width, depth) have the file's sizes. Head counts are not in the weights, so
    this is a suggestion, as the official names are."""
    from . import models

    for variant in models.list_variants():
        with torch.device("meta"):  # chỉ cần cấu hình, không cấp phát trọng số
            c = variant.factory().config
        encoder = (c.patch_size, c.in_chans, c.embed_dim, c.depth)
        if encoder != (info.patch_size, info.in_chans, info.embed_dim, info.depth):
            continue
        if info.decoder_embed_dim is not None and (c.decoder_embed_dim, c.decoder_depth) != (
            info.decoder_embed_dim,
            info.decoder_depth,
        ):
            continue
        info.model_name, info.variant = variant.name, variant.display
        return


def format_info(info: CheckpointInfo, path: Path) -> str:
    """The human-readable `mae inspect` text."""
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir())
    holds = {
        "full": "encoder + decoder",
        "encoder": "encoder only (no decoder: reconstructions need a full file)",
        "classifier": "a fine-tuned classifier (head, fc_norm): not an MAE pre-training checkpoint",
        "decoder": "a decoder without its encoder",
        "unknown": "no recognisable MAE weights",
    }[info.kind]
    human = f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size} bytes"
    lines = [
        f"file:          {path} ({human})",
        f"holds:         {holds}",
        f"tensors:       {info.num_tensors} ({info.num_parameters:,} values; {', '.join(info.dtypes)})",
        f"architecture:  {info.describe()}"
        + (f"; decoder {info.decoder_depth} blocks, dim {info.decoder_embed_dim}" if info.decoder_embed_dim else ""),
        f"layout:        {info.layout}"
        + (f", {info.container}" if info.container else "")
        + (f"; prefixes removed: {', '.join(info.removed_prefixes)}" if info.removed_prefixes else ""),
    ]
    if info.official:
        o = info.official
        lines.append(f"official file: {o.name}, {o.family} family" + (f" ({o.note})" if o.note else ""))
    target = info.norm_pix_loss
    lines.append(
        "target:        "
        + (
            "unknown: the file name does not tell; choose norm_pix_loss yourself"
            if target is None
            else f"norm_pix_loss={target} (from {info.target_source})"
        )
    )
    if info.model_name and info.kind in ("full", "encoder"):
        extra = ", norm_pix_loss=True" if target else ""
        lines.append(f"load with:     mae.create_model('{info.model_name}', checkpoint_path='{path}'{extra})")
    return "\n".join(lines)


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert

    out = convert(
        args.source,
        args.destination,
        args.to,
        num_heads=args.num_heads,
        decoder_num_heads=args.decoder_num_heads,
        overwrite=args.force,
    )
    print(f"wrote {out}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .download import download
    from .files import OFFICIAL_FILES

    if args.list or not args.name:
        for f in OFFICIAL_FILES.values():
            md5 = f"md5 {f.md5_prefix}..." if f.md5_prefix else "no published md5"
            print(f"{f.name:40s} {f.family:14s} {f.contents:10s} {md5}")
        return 0 if args.list else 2
    path = download(args.name, args.dir, url=args.url, md5_prefix=args.md5, progress=not args.quiet)
    print(path)
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from .train.pretrain import run

    return run(args)


def _finetune(args: argparse.Namespace) -> int:
    from .train.finetune import run

    return run(args)


def _linprobe(args: argparse.Namespace) -> int:
    from .train.linprobe import run

    return run(args)


def _evaluate(args: argparse.Namespace) -> int:
    from .train.evaluate import run

    return run(args)


def _plot(args: argparse.Namespace) -> int:
    from .plot import plot_log

    print(f"wrote {plot_log(args.log, args.output)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mae", description="Masked Autoencoders (He et al., 2022) in PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)

    from .train.pretrain import add_arguments as add_pretrain_arguments

    p = commands.add_parser(
        "pretrain",
        help="pre-train an MAE on a folder of images: the official main_pretrain.py recipe and flags",
        description="The official recipe (He et al., 2022) under the official main_pretrain.py flag names. "
        "Under torchrun (`torchrun --nproc_per_node N -m mae pretrain ...`) it runs DistributedDataParallel.",
    )
    add_pretrain_arguments(p)
    p.set_defaults(func=_pretrain)

    from .train.evaluate import add_arguments as add_evaluate_arguments
    from .train.finetune import add_arguments as add_finetune_arguments
    from .train.linprobe import add_arguments as add_linprobe_arguments

    p = commands.add_parser(
        "finetune",
        help="fine-tune a pre-trained MAE encoder for classification: the official main_finetune.py recipe and flags",
        description="The official fine-tuning recipe (He et al., 2022, §4, A.2) under the main_finetune.py flag "
        "names: RandAugment, Mixup/CutMix, layer-wise lr decay, evaluation every epoch. Under torchrun it runs DDP.",
    )
    add_finetune_arguments(p)
    p.set_defaults(func=_finetune)

    p = commands.add_parser(
        "linprobe",
        help="linear-probe a frozen pre-trained MAE encoder: the official main_linprobe.py protocol and flags",
        description="The official linear-probing protocol (He et al., 2022, A.3) under the main_linprobe.py flag "
        "names: frozen encoder, BatchNorm + linear head on the class token, LARS. Under torchrun it runs DDP.",
    )
    add_linprobe_arguments(p)
    p.set_defaults(func=_linprobe)

    p = commands.add_parser(
        "evaluate",
        help="top-1/top-5 accuracy and loss of a fine-tuned or linear-probe checkpoint on a folder of images",
        description="Evaluate a classifier checkpoint (official or ours) with the official evaluation transform.",
    )
    add_evaluate_arguments(p)
    p.set_defaults(func=_evaluate)

    p = commands.add_parser("plot", help="draw the loss and lr curves of a run's log.txt")
    p.add_argument("log", type=Path, help="OUTPUT/log.txt (or the OUTPUT folder)")
    p.add_argument("-o", "--output", type=Path, default=Path("curve.png"))
    p.set_defaults(func=_plot)

    p = commands.add_parser(
        "verify",
        help="prove this implementation equal to the installed references",
        description="Compare keys, shapes, forward outputs and losses with transformers, timm and (with "
        "$MAE_OFFICIAL_REPO set) the official code. Exits non-zero on any failure.",
    )
    p.add_argument(
        "--variant",
        default="all",
        help="base, large, huge, any registered model name (e.g. mae_vit_small_patch16), or all (the default)",
    )
    p.add_argument("--report", type=Path, help="also write the table to FILE (.json for JSON, else Markdown)")
    _add_precision(p)
    p.set_defaults(func=_verify)

    p = commands.add_parser(
        "reconstruct",
        help="the official demo's figure: original, masked, reconstruction, reconstruction + visible",
        description="Without IMAGE, a sample photograph shipped with matplotlib is used; without --checkpoint "
        "(or with an encoder-only one) the figure is drawn and marked as untrained.",
    )
    p.add_argument("image", nargs="?", type=Path, help="an image file (resized to the model's size)")
    p.add_argument("--checkpoint", type=Path, help="e.g. data/mae_visualize_vit_large.pth")
    p.add_argument("--model", default="mae_vit_large_patch16", help="architecture when the file does not tell")
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--seed", type=int, default=2, help="masking seed (the official demo uses 2)")
    p.add_argument(
        "--norm-pix",
        choices=["auto", "on", "off"],
        default="auto",
        help="the model's target: auto takes it from the official file name (the _full files use norm-pix)",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("reconstruction.png"))
    p.add_argument(
        "--bands",
        metavar="I,J,K",
        help="the channels drawn (from 0): three as red, green, blue, or one in grey (default: the first three; "
        "the first alone for 1- and 2-channel models)",
    )
    _add_precision(p)
    p.add_argument(
        "--onednn",
        "--fast",
        dest="onednn",
        action="store_true",
        help="float32 CPU fast path (mae.set_onednn_linear): each linear product by MKL or oneDNN, whichever times "
        "faster on this CPU; the figure says what it chose",
    )
    p.set_defaults(func=_reconstruct)

    from .look import commands as look  # mae attention / features / knn: what a trained encoder learned

    p = commands.add_parser("attention", help="the class token's attention in the last block, per head (DINO)")
    look.add_attention_arguments(p)
    p.set_defaults(func=look.run_attention)
    p = commands.add_parser("features", help="the encoder's class-token and mean-pooled features of a folder")
    look.add_features_arguments(p)
    p.set_defaults(func=look.run_features)
    p = commands.add_parser("knn", help="weighted k-NN accuracy of the encoder's features (DINO's protocol)")
    look.add_knn_arguments(p)
    p.set_defaults(func=look.run_knn)

    p = commands.add_parser("inspect", help="say what a checkpoint file holds, without building a model")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_inspect)

    p = commands.add_parser(
        "convert",
        help="convert a checkpoint: official .pth, .safetensors, or a transformers folder",
        description="The output format follows DESTINATION (.pth: official; .safetensors; anything else: a "
        "transformers folder) unless --to is given.",
    )
    p.add_argument("source", type=Path)
    p.add_argument("destination", type=Path)
    p.add_argument("--to", choices=["official", "safetensors", "transformers"])
    p.add_argument("--num-heads", type=int, help="encoder heads (needed for non-official architectures)")
    p.add_argument("--decoder-num-heads", type=int, help="decoder heads (default 16, as every official decoder)")
    p.add_argument("--force", action="store_true", help="overwrite DESTINATION")
    p.set_defaults(func=_convert)

    p = commands.add_parser("download", help="download an official checkpoint (resumable, checksummed)")
    p.add_argument("name", nargs="?", help="an official file name, e.g. mae_visualize_vit_large.pth")
    p.add_argument("--dir", type=Path, help="destination folder (default: $MAE_HOME, else ./data)")
    p.add_argument("--url", help="download from this URL instead of the official one (a mirror)")
    p.add_argument("--md5", help="expected md5 (or its prefix), overriding the published one")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the official files")
    p.set_defaults(func=_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 1 after an error, printed as `mae.errors` says (a user's mistake in one line,
    anything unexpected with its traceback). A training command reports errors inside its process group itself,
    naming the rank (`mae.train.runs.run_command`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .errors import report

    try:
        return int(args.func(args))
    except Exception as e:
        return report(args.command, e)


if __name__ == "__main__":
    sys.exit(main())
