"""Loading pretrained weights into a model: strict, checked, explained.

The loader knows no model class. A model states what it expects from a checkpoint (an `Expectation`:
its configuration and tensors, which of them are the decoder, and, for a classifier, its head), and the
loader plans from that and the file alone; the models call the loader (`load_pretrained`,
`mae.create_model(..., checkpoint_path=)`), never the other way round.

Every check runs before the model is touched, so a failed load leaves the parameters as they were:
the file must hold an MAE encoder of the model's architecture (else the error names what the file is
and the factory to use), every expected tensor must be there with the model's shape, and every tensor
must be floating point and finite. Allowed, and said in the report and the log:
- an encoder-only file into the full model: the decoder stays randomly initialised, so reconstructions
  and the loss mean nothing (about 1.87 on noise) until a full file is loaded;
- a full file into an `MAEEncoder`: the decoder weights are left out;
- another image size, only with `interpolate_pos_embed=True` (bicubic on the patch grid);
- half-precision tensors, converted to the model's dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, CheckpointInfo, is_decoder_key, read_checkpoint
from .config import MAEConfig
from .pos_embed import interpolate_pos_embed as resize_pos_embed

log = logging.getLogger("mae")

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # converted to the model's dtype

RECONSTRUCTION_FILES = {  # model name -> the official file that reconstructs pixels
    "mae_vit_base_patch16": "mae_visualize_vit_base.pth",
    "mae_vit_large_patch16": "mae_visualize_vit_large.pth",
    "mae_vit_huge_patch14": "mae_visualize_vit_huge.pth",
}


@dataclass
class LoadReport:
    """What a load did: which tensors came from the file, which did not, and what to know about it."""

    path: str
    kind: str  # what the file holds: "full" (encoder + decoder), "encoder" or "classifier"
    description: str  # e.g. "ViT-Large/16, 24 blocks, dim 1024, 224x224"
    layout: str
    loaded: list[str]
    missing: list[str] = field(default_factory=list)  # kept as initialised (the decoder, for encoder files)
    unexpected: list[str] = field(default_factory=list)  # in the file, not loaded (the decoder, into an encoder)
    notes: list[str] = field(default_factory=list)  # logged at INFO
    warnings: list[str] = field(default_factory=list)  # logged at WARNING: the model is not ready for its task
    norm_pix_loss: bool | None = None  # the target the file was trained with, where its name or its args tell

    def summary(self) -> str:
        """One line for the log."""
        what = {
            "full": "a full checkpoint (encoder + decoder)",
            "encoder": "an encoder-only checkpoint",
            "classifier": "a fine-tuned classifier",
        }[self.kind]
        line = f"loaded {Path(self.path).name}, {what} of {self.description}: "
        line += f"{len(self.loaded)} tensors ({self.layout})"
        if self.missing:
            line += f"; {len(self.missing)} tensors not in the file kept their initialisation"
        if self.unexpected:
            line += f"; {len(self.unexpected)} tensors of the file not used"
        return line


@dataclass(frozen=True)
class ClassifierHead:
    """What a fine-tuning classifier adds to an encoder. A fine-tuned file must match it; from a pretrain
    (or full MAE) file the encoder is loaded and the head is new, as in the official fine-tuning recipe."""

    global_pool: bool  # average the patch tokens, then fc_norm; else the class token after the final norm
    num_classes: int  # 0: no head (features only)
    new: tuple[str, ...]  # tensors a pretrain file lacks, kept as the model initialised them (head, fc_norm)
    unused: tuple[str, ...]  # tensors of a pretrain file the model has no use for (the final norm, with pooling)


@dataclass(frozen=True)
class Expectation:
    """What a model expects from a checkpoint file, as the model states it (`checkpoint_expectation()`).

    `tensors` is the model's state dict: names in the official layout, shapes, dtype (meta tensors serve).
    Every tensor is required from the file except the decoder's, which an encoder-only file leaves as
    initialised (and which a model without a decoder leaves out of a full file), and a classifier's new
    head when the file is a pretrain one.
    """

    config: MAEConfig
    tensors: dict[str, Tensor]
    decoder: tuple[str, ...] = ()  # the MAE decoder's tensors (mask_token, decoder_*); () for an encoder
    classifier: ClassifierHead | None = None


class Loadable(Protocol):
    """A model the loader can fill: `nn.Module`'s state-dict methods, plus what the model states itself."""

    load_report: LoadReport | None

    def checkpoint_expectation(self) -> Expectation:
        """What this model expects from a checkpoint."""
        ...

    def initialize_unloaded(self, names: list[str]) -> None:
        """After a fast load (built on the meta device), give the tensors the file did not hold (`names`, now
        uninitialised memory) the model's own initialisation."""
        ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = ..., assign: bool = ...) -> Any: ...

    def modules(self) -> Iterator[nn.Module]: ...


M = TypeVar("M", bound=Loadable)


def _some(keys: list[str], shown: int = 5) -> str:
    """The first few names of a list, for a message."""
    return ", ".join(keys[:shown]) + (" ..." if len(keys) > shown else "")


def _architecture_error(path: str, info: CheckpointInfo, c: MAEConfig) -> CheckpointError:
    ours = f"{c.depth} blocks, dim {c.embed_dim}, patch {c.patch_size}, {c.in_chans} channels"
    if info.model_name:
        fix = f"Build the matching model: mae.create_model('{info.model_name}', checkpoint_path=...)."
    else:
        fix = "Build an MAEConfig with the file's sizes."
    return CheckpointError(path, f"is {info.describe()} with {info.in_chans} channels; this model has {ours}.", fix)


def _plan(
    expectation: Expectation, state_dict: dict[str, Tensor], info: CheckpointInfo, interpolate: bool
) -> tuple[dict[str, Tensor], LoadReport]:
    """Check everything and decide what to load; raise CheckpointError before touching the model."""
    path, c = info.path, expectation.config
    wants_decoder = bool(expectation.decoder)
    head = expectation.classifier
    if info.kind == "classifier" and head is None:
        file_head = state_dict.get("head.weight")
        shape = f" (head.weight {list(file_head.shape)})" if file_head is not None else ""
        factory = (info.model_name or "").replace("mae_", "", 1) or "vit_large_patch16"
        raise CheckpointError(
            path,
            f"is a fine-tuned classifier{shape}: no decoder, and its encoder was trained further for classification.",
            f"Load it into the classifier: mae.{factory}().load_pretrained(...). For MAE reconstruction use a "
            "visualize file (e.g. mae_visualize_vit_large.pth); for features or fine-tuning, a pretrain file "
            "(e.g. mae_pretrain_vit_large.pth).",
        )
    if info.kind not in ("full", "encoder", "classifier"):
        sample = ", ".join(list(state_dict)[:4])
        raise CheckpointError(path, f"holds no MAE encoder (no patch_embed.proj.weight; keys such as {sample}).")
    if (info.embed_dim, info.depth, info.patch_size, info.in_chans) != (c.embed_dim, c.depth, c.patch_size, c.in_chans):
        raise _architecture_error(path, info, c)
    if (
        wants_decoder
        and info.kind == "full"
        and (info.decoder_embed_dim, info.decoder_depth)
        != (
            c.decoder_embed_dim,
            c.decoder_depth,
        )
    ):
        raise CheckpointError(
            path,
            f"has a decoder of {info.decoder_depth} blocks, dim {info.decoder_embed_dim}; this model's has "
            f"{c.decoder_depth} blocks, dim {c.decoder_embed_dim}.",
            "Build the model with decoder_depth and decoder_embed_dim matching the file.",
        )

    targets = expectation.tensors
    load_decoder = wants_decoder and info.kind == "full"
    expected = [k for k in targets if load_decoder or k not in expectation.decoder]
    ignored = [k for k in state_dict if is_decoder_key(k)] if not wants_decoder else []
    notes: list[str] = []
    if head is not None:
        expected, ignored, notes = _classifier_keys(head, state_dict, info, targets, ignored)
    missing_in_file = [k for k in expected if k not in state_dict]
    if missing_in_file:
        raise CheckpointError(
            path,
            f"lacks {len(missing_in_file)} tensor(s) this model needs: {_some(missing_in_file)}.",
            "The file is incomplete or of another architecture; `mae inspect FILE` shows what it holds.",
        )
    extra = [k for k in state_dict if k not in expected and k not in ignored]
    if extra:
        raise CheckpointError(
            path,
            f"has {len(extra)} tensor(s) this model does not: {_some(extra)}.",
            "Nothing was loaded (loads are strict); `mae inspect FILE` shows what the file holds.",
        )

    warnings: list[str] = []
    to_load: dict[str, Tensor] = {}
    resized = False
    for key in expected:
        tensor, target = state_dict[key], targets[key]
        if key in ("pos_embed", "decoder_pos_embed") and tensor.shape != target.shape and tensor.ndim == 3:
            if tensor.shape[-1] == target.shape[-1] and interpolate:
                tensor = resize_pos_embed(tensor, c.grid_size)
                resized = True
            elif tensor.shape[-1] == target.shape[-1]:
                raise CheckpointError(
                    path,
                    f"is for {info.img_size}x{info.img_size} images ({tensor.shape[1] - 1} patches); this model is "
                    f"for {c.img_size}x{c.img_size} ({target.shape[1] - 1} patches).",
                    f"Pass interpolate_pos_embed=True to resize the position tables bicubically, or build the "
                    f"model with img_size={info.img_size}.",
                )
        if tensor.shape != target.shape:
            raise CheckpointError(
                path,
                f"tensor {key} has shape {list(tensor.shape)}; this model needs {list(target.shape)}.",
                "The file is of another architecture; `mae inspect FILE` shows what it holds.",
            )
        if not tensor.is_floating_point():
            raise CheckpointError(path, f"tensor {key} is {tensor.dtype}, not floating point.", "The file is corrupt.")
        if tensor.dtype not in FLOAT_DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)
            raise CheckpointError(
                path,
                f"tensor {key} is {str(tensor.dtype).removeprefix('torch.')}, which this loader does not convert "
                f"(it converts {names}).",
                "Dequantise the file to one of those (with its scales, if it has any) before loading.",
            )
        to_load[key] = tensor
    bad = [k for k, t in to_load.items() if not _finite(t)]
    if bad:
        raise CheckpointError(
            path, f"has NaN or infinite values in {len(bad)} tensor(s): {_some(bad)}.", "The file is corrupt."
        )
    dtypes = {t.dtype for t in to_load.values()}
    model_dtype = next(iter(targets.values())).dtype
    if dtypes != {model_dtype}:
        names = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        notes.append(f"converted {names} to {str(model_dtype).removeprefix('torch.')}")
        to_load = {k: t.to(model_dtype) for k, t in to_load.items()}
    if resized:
        notes.append(f"position tables resized from {info.img_size}x{info.img_size} to {c.img_size}x{c.img_size}")
    if info.removed_prefixes:
        notes.append(f"removed key prefixes {', '.join(info.removed_prefixes)}")

    missing = [k for k in targets if k not in to_load]
    unexpected = [k for k in state_dict if k not in to_load]
    if wants_decoder and info.kind == "encoder":
        suggestion = RECONSTRUCTION_FILES.get(info.model_name or "", "a visualize (encoder + decoder) file")
        warnings.append(
            "encoder-only checkpoint: the decoder stays randomly initialised, so reconstructions and the loss are "
            f"meaningless (about 1.87 on noise); for reconstruction load {suggestion}"
        )
    decoder_left = [k for k in unexpected if is_decoder_key(k)]
    if decoder_left:
        notes.append(f"the file's decoder ({len(decoder_left)} tensors) was not loaded: this model has no decoder")
    if load_decoder:
        file_target = info.norm_pix_loss
        if file_target is None:
            notes.append(
                f"neither the file name nor its arguments tell which target it was trained with; the model keeps "
                f"norm_pix_loss={c.norm_pix_loss}"
            )
        elif file_target != c.norm_pix_loss:
            warnings.append(
                f"{Path(path).name} was trained with norm_pix_loss={file_target} but this model has "
                f"norm_pix_loss={c.norm_pix_loss}: build it with norm_pix_loss={file_target} for a meaningful loss"
                + (" and map predictions back with each patch's mean and variance" if file_target else "")
            )
    report = LoadReport(
        path=path,
        kind=info.kind,
        description=info.describe(),
        layout=f"{info.layout}, {info.container}" if info.container else info.layout,
        loaded=list(to_load),
        missing=missing,
        unexpected=unexpected,
        notes=notes,
        warnings=warnings,
        norm_pix_loss=info.norm_pix_loss,
    )
    return to_load, report


def _finite(t: Tensor) -> bool:
    """No NaN or infinity in `t`. One reduction pass and no tensor-sized temporary: min and max are NaN
    if any element is, and infinite if any element is."""
    if t.numel() == 0:
        return True
    low, high = torch.aminmax(t)
    return bool(torch.isfinite(low) and torch.isfinite(high))


def _classifier_keys(
    head: ClassifierHead,
    state_dict: dict[str, Tensor],
    info: CheckpointInfo,
    targets: dict[str, Tensor],
    ignored: list[str],
) -> tuple[list[str], list[str], list[str]]:
    """(keys to load, file keys to leave out, notes) for the fine-tuning classifier.

    A fine-tuned classifier file loads strictly. A pretrain or full MAE file gives the encoder, as in the
    official fine-tuning recipe: the head (and fc_norm, with global pooling) are new, and the encoder's
    final norm is not used with global pooling.
    """
    path = info.path
    if info.kind == "classifier":
        file_pool = "fc_norm.weight" in state_dict
        if file_pool != head.global_pool:
            raise CheckpointError(
                path,
                f"was fine-tuned with {'global average pooling (fc_norm)' if file_pool else 'the class token'}; "
                f"this model uses {'global pooling' if head.global_pool else 'the class token'}.",
                f"Build it with global_pool={file_pool}.",
            )
        theirs, ours = state_dict.get("head.weight"), targets.get("head.weight")
        if theirs is not None and ours is not None and theirs.shape != ours.shape:
            raise CheckpointError(
                path,
                f"has a head for {theirs.shape[0]} classes; this model has {head.num_classes}.",
                f"Build it with num_classes={theirs.shape[0]}, or start from the pretrain file for a new head.",
            )
        return list(targets), ignored, []
    new = [k for k in targets if k in head.new]
    expected = [k for k in targets if k not in head.new]
    unused = [k for k in state_dict if k in head.unused]
    notes = [
        f"new (kept as initialised), as in the official fine-tuning recipe: {', '.join(new) or 'nothing'}"
        + (f"; the encoder's final norm is not used with global pooling: {', '.join(unused)}" if unused else "")
    ]
    return expected, ignored + unused, notes


def load_into(
    model: Loadable,
    path: str | Path,
    *,
    interpolate_pos_embed: bool = False,
    assign: bool = False,
    source: tuple[dict[str, Tensor], CheckpointInfo] | None = None,
) -> LoadReport:
    """Load a checkpoint file into `model` (strictly; see the module docstring), from what the model
    expects (`model.checkpoint_expectation()`). Sets and returns `model.load_report`.

    assign=True makes the file's (memory-mapped) tensors the model's parameters instead of copying them,
    for a model built on the meta device.
    """
    state_dict, info = source if source is not None else read_checkpoint(path)
    to_load, report = _plan(model.checkpoint_expectation(), state_dict, info, interpolate_pos_embed)
    result = model.load_state_dict(to_load, strict=False, assign=assign)
    assert not result.unexpected_keys and sorted(result.missing_keys) == sorted(report.missing), result
    log.info(report.summary())
    for note in report.notes:
        log.info("%s: %s", Path(report.path).name, note)
    for warning in report.warnings:
        log.warning("%s: %s", Path(report.path).name, warning)
    model.load_report = report
    return report


def create_from_checkpoint(
    factory: Callable[..., M], path: str | Path, *, interpolate_pos_embed: bool = False, **overrides: Any
) -> M:
    """The fast path: build on the meta device (no random initialisation), map the file, assign its tensors.

    Tensors the file does not hold (the decoder, for an encoder-only file) are then created on the CPU
    and given the model's own initialisation (`model.initialize_unloaded`).
    """
    source = read_checkpoint(path)
    with torch.device("meta"):
        model = factory(**overrides)
    report = load_into(model, path, interpolate_pos_embed=interpolate_pos_embed, assign=True, source=source)
    if _materialize_meta(model):
        model.initialize_unloaded(report.missing)
    return model


def _materialize_meta(model: Loadable) -> bool:
    """Give every parameter still on the meta device real (uninitialised) CPU memory; True if any was."""
    found = False
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_meta:
                module._parameters[name] = nn.Parameter(
                    torch.empty_like(param, device="cpu"), requires_grad=param.requires_grad
                )
                found = True
    return found
