"""Convert checkpoints between the official layout, safetensors and transformers.

- "official": `{"model": state_dict}` saved with torch.save, official keys in the official order.
- "safetensors": the same keys and order in a `.safetensors` file (loads without unpickling, mapped).
- "transformers": a folder with `config.json` and `model.safetensors` that
  `transformers.ViTMAEForPreTraining.from_pretrained(folder)` loads (`ViTMAEModel` for an encoder-only
  file), with `layer_norm_eps` 1e-6 written out (transformers' default is 1e-12).
Any readable input works (see `mae.checkpoint`); tensors keep their dtype.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import KNOWN_VARIANTS, CheckpointError, CheckpointInfo, official_to_transformers, read_checkpoint
from .config import MAEConfig
from .mae import MaskedAutoencoderViT
from .safetensors_io import save_file

FORMATS = ("official", "safetensors", "transformers")
DEFAULT_DECODER_HEADS = 16  # every official decoder: 512-d, 16 heads


def format_for(destination: str | Path) -> str:
    """The format a destination path implies: .pth/.pt -> official, .safetensors, else a transformers folder."""
    suffix = Path(destination).suffix
    return {".pth": "official", ".pt": "official", ".bin": "official", ".safetensors": "safetensors"}.get(
        suffix, "transformers"
    )


def config_of(info: CheckpointInfo, num_heads: int | None = None, decoder_num_heads: int | None = None) -> MAEConfig:
    """The MAEConfig a checkpoint describes. Head counts are not stored in weights: the official variants'
    are known; for others pass them."""
    if info.embed_dim is None or info.depth is None or info.patch_size is None or info.in_chans is None:
        raise CheckpointError(info.path, "holds no MAE encoder, so its architecture is unknown.")
    known = KNOWN_VARIANTS.get((info.embed_dim, info.depth, info.patch_size))
    heads = num_heads or (known[2] if known else None)
    if heads is None:
        raise CheckpointError(
            info.path,
            f"is {info.describe()}, not an official variant, so its number of heads is unknown.",
            "Pass num_heads (and decoder_num_heads) explicitly.",
        )
    return MAEConfig(
        img_size=info.img_size or 224,
        patch_size=info.patch_size,
        in_chans=info.in_chans,
        embed_dim=info.embed_dim,
        depth=info.depth,
        num_heads=heads,
        decoder_embed_dim=info.decoder_embed_dim or 512,
        decoder_depth=info.decoder_depth if info.decoder_depth is not None else 8,
        decoder_num_heads=decoder_num_heads or DEFAULT_DECODER_HEADS,
        norm_pix_loss=bool(info.norm_pix_loss),
    )


def official_order(state_dict: dict[str, Tensor], info: CheckpointInfo) -> dict[str, Tensor]:
    """The state dict in the official key order (that of the model it describes); unknown keys last."""
    config = config_of(info, num_heads=1, decoder_num_heads=1)  # heads do not change names or order
    with torch.device("meta"):
        order = list(MaskedAutoencoderViT(config).state_dict())
    rank = {k: i for i, k in enumerate(order)}
    return {k: state_dict[k] for k in sorted(state_dict, key=lambda k: rank.get(k, len(rank)))}


def transformers_config(config: MAEConfig, encoder_only: bool) -> dict[str, object]:
    """The `config.json` of a transformers ViTMAE model for `config`."""
    return {
        "architectures": ["ViTMAEModel" if encoder_only else "ViTMAEForPreTraining"],
        "model_type": "vit_mae",
        "hidden_size": config.embed_dim,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.num_heads,
        "intermediate_size": int(config.embed_dim * config.mlp_ratio),
        "decoder_hidden_size": config.decoder_embed_dim,
        "decoder_num_hidden_layers": config.decoder_depth,
        "decoder_num_attention_heads": config.decoder_num_heads,
        "decoder_intermediate_size": int(config.decoder_embed_dim * config.mlp_ratio),
        "image_size": config.img_size,
        "patch_size": config.patch_size,
        "num_channels": config.in_chans,
        "qkv_bias": True,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": config.norm_eps,
        "mask_ratio": 0.75,
        "norm_pix_loss": config.norm_pix_loss,
    }


def convert(
    source: str | Path,
    destination: str | Path,
    to: str | None = None,
    *,
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `source` (any readable checkpoint) to `destination` in format `to` (default: from the path).

    Refuses to overwrite an existing destination unless `overwrite`, and never replaces a file by a folder
    or a folder by a file. Every file is written under a temporary name (`NAME.part`) and renamed only once
    all of them are complete, so a failed conversion (a full disk, Ctrl-C) leaves no half-written output:
    the temporary files are deleted, a folder it created is removed, and an overwritten destination keeps
    its previous contents. Overwriting a transformers folder replaces its two files and keeps the rest.
    """
    to = to or format_for(destination)
    if to not in FORMATS:
        raise ValueError(f"unknown format {to!r}; valid: {', '.join(FORMATS)}")
    destination = Path(destination)
    folder = to == "transformers"
    if destination.exists() or destination.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{destination} exists; choose another name or pass overwrite=True (--force)")
        if destination.is_dir() != folder:
            raise FileExistsError(
                f"{destination} exists and is a {'folder' if destination.is_dir() else 'file'}, but a {to} "
                f"checkpoint is a {'folder' if folder else 'file'}; overwriting replaces only the same kind: "
                "choose another name, or remove it first"
            )
    state_dict, info = read_checkpoint(source)
    if info.kind not in ("full", "encoder"):
        raise CheckpointError(source, f"holds a {info.kind} checkpoint; only MAE encoders and full MAEs convert.")
    state_dict = official_order(state_dict, info)
    if folder:
        config = config_of(info, num_heads, decoder_num_heads)
        weights = {k: v.contiguous() for k, v in official_to_transformers(state_dict).items()}
        text = json.dumps(transformers_config(config, info.kind == "encoder"), indent=2) + "\n"
        created = not destination.exists()
        destination.mkdir(parents=True, exist_ok=True)
        try:
            _write_atomically(
                {
                    destination / "model.safetensors": lambda p: save_file(weights, p, {"format": "pt"}),
                    destination / "config.json": lambda p: p.write_text(text),
                }
            )
        except BaseException:
            if created:
                shutil.rmtree(destination, ignore_errors=True)  # the folder this call made, and all in it
            raise
    elif to == "safetensors":
        _write_atomically({destination: lambda p: save_file(state_dict, p, {"format": "pt", "layout": "official"})})
    else:
        _write_atomically({destination: lambda p: torch.save({"model": state_dict}, p)})
    return destination


def _write_atomically(writes: dict[Path, Callable[[Path], object]]) -> None:
    """Write every file under `NAME.part`, then rename them all; on any failure delete the parts and re-raise."""
    parts = {path: path.with_name(path.name + ".part") for path in writes}
    try:
        for path, write in writes.items():
            write(parts[path])
        for path, part in parts.items():
            os.replace(part, path)
    finally:
        for part in parts.values():
            part.unlink(missing_ok=True)
