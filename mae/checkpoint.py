"""Reading checkpoint files safely and recognising what they hold, without building a model.

- Safe: `.safetensors` files are read by the `safetensors` library (`mae.safetensors_io`), which
  validates their header; everything else goes through
  `torch.load(weights_only=True)`, which refuses any pickle that would import or call code, with
  `argparse.Namespace` allowed (the official training scripts store their arguments in one). Files are
  memory-mapped where the format allows, so nothing is read before it is used.
- Tolerant of spellings: `{"model": ...}` (official, next to optimizer/epoch/args), `{"state_dict": ...}`,
  a bare state dict; `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes; transformers ViTMAE keys
  (5.x names and the legacy 4.x names, q/k/v merged back into the fused qkv); timm `.mae` encoder keys
  (already the official names).
- Explicit: `inspect_checkpoint` says what a file is (full / encoder / classifier, the variant, image
  size, dtype, the training target where the file name tells) and every failure is a `CheckpointError`
  that names the file, the problem and the fix.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .files import OfficialFile, official_file
from .safetensors_io import SafetensorsFormatError, is_safetensors, load_file

# Official variants: (embed_dim, depth, patch) -> (label, factory, heads).
KNOWN_VARIANTS = {
    (768, 12, 16): ("ViT-Base/16", "mae_vit_base_patch16", 12),
    (1024, 24, 16): ("ViT-Large/16", "mae_vit_large_patch16", 16),
    (1280, 32, 14): ("ViT-Huge/14", "mae_vit_huge_patch14", 16),
}


TRANSFORMERS_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_decoder_key(key: str) -> bool:
    """A key of the MAE decoder in the official layout (mask_token, decoder_*)."""
    return key.startswith("decoder_") or key == "mask_token"


class CheckpointError(ValueError):
    """A checkpoint cannot be used as asked. The message names the file, the problem and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str = "") -> None:
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}" + (f" {fix}" if fix else ""))


# ------------------------------------------------------------------------------------------ reading


def read_file(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """The raw state dict of a file and a description of its container. Never runs code from the file.

    A directory is read as a transformers save folder: its `model.safetensors` or `pytorch_model.bin`.
    """
    state_dict, container, _ = read_file_and_args(path)
    return state_dict, container


def read_file_and_args(path: str | Path) -> tuple[dict[str, Tensor], str, dict[str, Any] | None]:
    """`read_file`, plus the arguments a training checkpoint records (`args`, from `mae pretrain` or the
    official script: model, target, sizes); None for files that record none (the releases, safetensors)."""
    path = Path(path)
    if path.is_dir():
        inside = [path / n for n in TRANSFORMERS_WEIGHT_FILES if (path / n).is_file()]
        if not inside:
            raise CheckpointError(
                path,
                f"is a directory without {' or '.join(TRANSFORMERS_WEIGHT_FILES)}.",
                "Pass the checkpoint file itself, or a transformers save folder.",
            )
        path = inside[0]
    if not path.is_file():
        raise CheckpointError(
            path, "no such file.", "Check the path, or fetch an official file with `mae download NAME`."
        )
    with open(path, "rb") as f:
        magic = f.read(8)
    if path.suffix == ".safetensors" or (len(magic) == 8 and magic[:2] != b"PK" and is_safetensors(path)):
        try:
            return load_file(path), "safetensors", None  # safetensors hold tensors only
        except SafetensorsFormatError as e:
            problem = f"is not a valid safetensors file ({e})."
            raise CheckpointError(path, problem, "Re-download or re-convert it.") from None
    obj = _torch_load(path)
    args = obj.get("args") if isinstance(obj, Mapping) else None
    return (*_unwrap(obj, path), vars(args) if isinstance(args, argparse.Namespace) else None)


def load_object(path: str | Path) -> Any:
    """What `torch.load` reads from `path`, safely (weights_only, `argparse.Namespace` allowed); on any
    failure a `CheckpointError` naming the file. For training checkpoints, whose optimizer state is needed too."""
    return _torch_load(Path(path))


def _zip_layout_problem(path: Path) -> str | None:
    """What is wrong with a zip checkpoint's record layout, or None.

    ``torch.load`` finds each tensor through the zip's central directory and then trusts the record's local
    header; a damaged local header makes it read the tensor from the wrong bytes, with no error. So every
    record's local header must carry the zip signature and the central directory's name, and its data must
    end before the next record (or the central directory). A few milliseconds for a ViT-L file.
    """
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
            records = sorted(archive.infolist(), key=lambda r: r.header_offset)
            ends = [r.header_offset for r in records[1:]] + [archive.start_dir]
            for record, end in zip(records, ends, strict=True):
                f.seek(record.header_offset)
                header = f.read(30)  # the fixed part of a local file header
                if len(header) < 30 or header[:4] != b"PK\x03\x04":
                    return f"the zip record of {record.filename} has no valid local header"
                name_length, extra_length = struct.unpack("<HH", header[26:30])
                if f.read(name_length) != record.filename.encode("utf-8"):
                    return f"the zip record of {record.filename} names another file"
                if record.header_offset + 30 + name_length + extra_length + record.compress_size > end:
                    return f"the data of {record.filename} runs into the next record"
    except (zipfile.BadZipFile, OSError, ValueError, struct.error) as e:
        return f"its zip directory cannot be read ({e})"
    return None


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True (and mmap when the file is a zip archive)."""
    fix_corrupt = "The file is truncated or corrupt: download it again (`mae download NAME` resumes and checks it)."
    mmap = zipfile.is_zipfile(path)
    if mmap:
        problem = _zip_layout_problem(path)
        if problem:
            raise CheckpointError(path, f"is corrupt: {problem}.", fix_corrupt)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([argparse.Namespace]):
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        message = str(e)
        refused = re.search(r"GLOBAL ([\w.]+)", message)
        if refused:
            raise CheckpointError(
                path,
                f"refused to load: its pickle asks to import `{refused.group(1)}`, and unpickling that could run "
                "code from the file. Only tensors and plain containers are accepted; nothing from it was executed.",
                "If the file is from a source you trust, re-save its state dict with torch.save(state_dict, ...) "
                "or convert it to .safetensors.",
            ) from None
        stop = re.search(r"WeightsUnpickler error: \s*(.+)", message)
        detail = stop.group(1).strip() if stop else message.splitlines()[0]
        raise CheckpointError(
            path, f"is not a readable PyTorch checkpoint (the safe unpickler stopped at: {detail}).", fix_corrupt
        ) from None
    except Exception as e:  # torch.load fails on damaged files in many ways (struct.error, EOFError, ...)
        first = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
        raise CheckpointError(path, f"could not be read as a checkpoint ({first}).", fix_corrupt) from None


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, Tensor], str]:
    """Find the state dict inside the usual containers."""
    container = "bare state dict"
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict", "model_state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                others = sorted(str(k) for k in obj if k != wrapper)
                container = f"{{'{wrapper}': ...}}" + (f" beside {', '.join(others)}" if others else "")
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        kind = "an empty mapping" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise CheckpointError(
            path,
            f"holds {kind}, not a state dict.",
            "Expected {'model': state_dict} (the official layout), {'state_dict': ...} or a bare state dict.",
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            path, f"is not a flat mapping of names to tensors (e.g. {bad[:3]}).", "Save model.state_dict() instead."
        )
    return dict(obj), container


# -------------------------------------------------------------------------------------- key layouts

_TRANSFORMERS_TOP = {
    "vit.embeddings.cls_token": "cls_token",
    "vit.embeddings.position_embeddings": "pos_embed",
    "vit.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "vit.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "vit.layernorm.weight": "norm.weight",
    "vit.layernorm.bias": "norm.bias",
    "decoder.mask_token": "mask_token",
    "decoder.decoder_pos_embed": "decoder_pos_embed",
    "decoder.decoder_embed.weight": "decoder_embed.weight",
    "decoder.decoder_embed.bias": "decoder_embed.bias",
    "decoder.decoder_norm.weight": "decoder_norm.weight",
    "decoder.decoder_norm.bias": "decoder_norm.bias",
    "decoder.decoder_pred.weight": "decoder_pred.weight",
    "decoder.decoder_pred.bias": "decoder_pred.bias",
}
# Inside one transformer layer: transformers name (5.x, then legacy 4.x) -> official name; q/k/v are
# parts of the fused qkv.
_TRANSFORMERS_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.o_proj": "attn.proj",
    "attention.output.dense": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "intermediate.dense": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "output.dense": "mlp.fc2",
}
_QKV_PARTS = {
    "attention.q_proj": 0,
    "attention.k_proj": 1,
    "attention.v_proj": 2,
    "attention.attention.query": 0,
    "attention.attention.key": 1,
    "attention.attention.value": 2,
}
_TRANSFORMERS_LAYER = re.compile(
    r"^(vit\.layers|vit\.encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)\.(weight|bias)$"
)
_STACK = {"vit.layers": "blocks", "vit.encoder.layer": "blocks", "decoder.decoder_layers": "decoder_blocks"}


def official_to_transformers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official keys -> transformers 5.x `ViTMAEForPreTraining` keys; the fused qkv is split into q, k, v.

    For an encoder-only state dict, the keys of a `ViTMAEModel` (no `vit.` prefix) are returned.
    """
    top = {official: hf for hf, official in _TRANSFORMERS_TOP.items()}
    block = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.o_proj"}
    stacks = {"blocks": "vit.layers", "decoder_blocks": "decoder.decoder_layers"}
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key in top:
            out[top[key]] = value
            continue
        m = _OFFICIAL_LAYER.match(key)
        if m is None:
            raise KeyError(f"not an official MAE key: {key!r}")
        stack, index, name, kind = m.groups()
        prefix = f"{stacks[stack]}.{index}"
        if name == "attn.qkv":
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[f"{prefix}.attention.{part}.{kind}"] = chunk
        else:
            out[f"{prefix}.{block.get(name, name)}.{kind}"] = value
    if not any(k.startswith("decoder.") for k in out):
        out = {k.removeprefix("vit."): v for k, v in out.items()}
    return out


_OFFICIAL_LAYER = re.compile(
    r"^(blocks|decoder_blocks)\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$"
)


def strip_prefixes(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Remove `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes shared by every key."""
    removed = []
    changed = True
    while changed:
        changed = False
        for prefix in ("module.", "_orig_mod."):
            if state_dict and all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
                removed.append(prefix)
                changed = True
    return state_dict, removed


def detect_layout(keys: list[str]) -> str:
    """ "transformers-5", "transformers-4" (legacy names) or "official" (also timm's `.mae` encoders)."""
    if any(k.startswith(("vit.", "decoder.decoder_", "embeddings.patch_embeddings.")) for k in keys):
        legacy = any(".encoder.layer." in k or "attention.attention." in k or "intermediate.dense" in k for k in keys)
        return "transformers-4" if legacy else "transformers-5"
    return "official"


def transformers_to_official(state_dict: dict[str, Tensor], path: str | Path = "<state dict>") -> dict[str, Tensor]:
    """transformers ViTMAE keys (5.x or 4.x, `ViTMAEForPreTraining` or `ViTMAEModel`) -> official keys."""
    if any(k.startswith("embeddings.") for k in state_dict):  # a ViTMAEModel: the encoder alone
        state_dict = {f"vit.{k}": v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    parts: dict[str, list[Tensor | None]] = {}
    for key, value in state_dict.items():
        if key in _TRANSFORMERS_TOP:
            out[_TRANSFORMERS_TOP[key]] = value
            continue
        m = _TRANSFORMERS_LAYER.match(key)
        name = m.group(3) if m else ""
        if m is None or (name not in _TRANSFORMERS_BLOCK and name not in _QKV_PARTS):
            out[key] = value  # not a ViTMAE key: left as is, reported as unexpected when loading
            continue
        prefix = f"{_STACK[m.group(1)]}.{m.group(2)}"
        if name in _QKV_PARTS:
            parts.setdefault(f"{prefix}.attn.qkv.{m.group(4)}", [None, None, None])[_QKV_PARTS[name]] = value
        else:
            out[f"{prefix}.{_TRANSFORMERS_BLOCK[name]}.{m.group(4)}"] = value
    for key, (q, k, v) in parts.items():
        if q is None or k is None or v is None:
            missing = [n for n, t in zip("qkv", (q, k, v), strict=True) if t is None]
            raise CheckpointError(path, f"has an incomplete attention projection {key}: {', '.join(missing)} missing.")
        if not (q.shape == k.shape == v.shape):
            raise CheckpointError(path, f"has q/k/v of different shapes for {key}: {q.shape}, {k.shape}, {v.shape}.")
        out[key] = torch.cat([q, k, v], dim=0)
    return out


# ------------------------------------------------------------------------------------ understanding


@dataclass
class CheckpointInfo:
    """What a checkpoint file holds, read from its keys and shapes alone."""

    path: str
    container: str
    layout: str  # "official", "transformers-5", "transformers-4", "safetensors/official", ...
    kind: str  # "full", "encoder", "classifier", "decoder", "unknown"
    num_tensors: int
    num_parameters: int
    dtypes: list[str]
    embed_dim: int | None = None
    depth: int | None = None
    patch_size: int | None = None
    in_chans: int | None = None
    img_size: int | None = None
    decoder_embed_dim: int | None = None
    decoder_depth: int | None = None
    variant: str | None = None  # "ViT-Large/16"
    model_name: str | None = None  # "mae_vit_large_patch16"
    official: OfficialFile | None = None
    removed_prefixes: list[str] = field(default_factory=list)
    run_args: dict[str, Any] | None = None  # a training checkpoint's recorded arguments

    def describe(self) -> str:
        """E.g. "ViT-Base/16, 12 blocks, dim 768, 224x224"."""
        if self.embed_dim is None:
            return "no recognisable ViT encoder"
        name = self.variant or f"a custom ViT/{self.patch_size}"
        size = f", {self.img_size}x{self.img_size}" if self.img_size else ""
        return f"{name}, {self.depth} blocks, dim {self.embed_dim}{size}"

    @property
    def trained_norm_pix_loss(self) -> bool | None:
        """`norm_pix_loss` as a training checkpoint's arguments record it."""
        target = (self.run_args or {}).get("norm_pix_loss")
        return target if isinstance(target, bool) else None

    @property
    def norm_pix_loss(self) -> bool | None:
        """The reconstruction target the file was trained with, where its official name or its run's
        arguments tell (see `target_source`)."""
        if self.official and self.official.norm_pix_loss is not None:
            return self.official.norm_pix_loss
        return self.trained_norm_pix_loss

    @property
    def target_source(self) -> str:
        """Where `norm_pix_loss` comes from: "the official file name", "the run's arguments" or ""."""
        if self.official and self.official.norm_pix_loss is not None:
            return "the official file name"
        return "the run's arguments" if self.trained_norm_pix_loss is not None else ""


def _block_count(keys: list[str], stack: str) -> int | None:
    """Blocks in a stack, counted by their known parts (a stray key does not add a block; a block missing
    one part still counts, so the load can say which tensor is missing)."""
    part = r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    indices = [int(m.group(1)) for k in keys if (m := re.match(rf"^{stack}\.(\d+)\.{part}$", k))]
    return max(indices) + 1 if indices else None


def describe_state_dict(
    state_dict: dict[str, Tensor], path: str | Path, container: str = "", layout: str = "official"
) -> CheckpointInfo:
    """A `CheckpointInfo` for a state dict already in official keys."""
    keys = list(state_dict)
    has_encoder = "patch_embed.proj.weight" in state_dict
    has_decoder = "decoder_embed.weight" in state_dict
    if any(k.startswith(("head.", "fc_norm.")) for k in keys):
        kind = "classifier"
    elif has_encoder:
        kind = "full" if has_decoder else "encoder"
    else:
        kind = "decoder" if has_decoder else "unknown"
    info = CheckpointInfo(
        path=str(path),
        container=container,
        layout=layout,
        kind=kind,
        num_tensors=len(state_dict),
        num_parameters=sum(t.numel() for t in state_dict.values()),
        dtypes=sorted({str(t.dtype).removeprefix("torch.") for t in state_dict.values()}),
        official=official_file(str(path)),
    )
    proj = state_dict.get("patch_embed.proj.weight")
    if proj is not None and proj.ndim == 4:
        info.embed_dim, info.in_chans, info.patch_size = proj.shape[0], proj.shape[1], proj.shape[2]
        info.depth = _block_count(keys, "blocks") or 0
        pos = state_dict.get("pos_embed")
        if pos is not None and pos.ndim == 3:
            grid = math.isqrt(max(pos.shape[1] - 1, 0))
            if grid * grid == pos.shape[1] - 1:
                info.img_size = grid * info.patch_size
        known = KNOWN_VARIANTS.get((info.embed_dim, info.depth, info.patch_size))
        if known:
            info.variant, info.model_name = known[0], known[1]
    dec = state_dict.get("decoder_embed.weight")
    if dec is not None and dec.ndim == 2:
        info.decoder_embed_dim = dec.shape[0]
        info.decoder_depth = _block_count(keys, "decoder_blocks") or 0
    return info


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], CheckpointInfo]:
    """A file's state dict in official keys, and what it holds. Never runs code from the file."""
    raw, container, run_args = read_file_and_args(path)
    state_dict, removed = strip_prefixes(raw)
    layout = detect_layout(list(state_dict))
    if layout != "official":
        state_dict = transformers_to_official(state_dict, path)
    if container == "safetensors":
        layout = f"safetensors ({layout} keys)"
    info = describe_state_dict(state_dict, path, container, layout)
    info.removed_prefixes = removed
    info.run_args = run_args
    return state_dict, info


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """What a checkpoint file holds (family, variant, key counts, dtypes, training target), no model built."""
    return read_checkpoint(path)[1]
