"""The encoder a checkpoint holds, for looking at it: a pre-training file (encoder + decoder, or the encoder
alone; official releases and `mae pretrain` checkpoints) or a fine-tuned classifier (`mae finetune`,
`mae linprobe`, the official `mae_finetuned_vit_*.pth`), with the per-channel statistics its images are
normalised with.

The model is found as `mae reconstruct` finds it: a `mae pretrain` checkpoint records its ``--model`` and
``--model_args``; an official file is named by its sizes; anything else needs ``--model`` (and
``--model_args``). A classifier is built as `mae evaluate` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, inspect_checkpoint
from ..encoder import MAEEncoder


@dataclass
class LoadedEncoder:
    """An encoder in eval mode, what the file was, and the statistics (one value per channel) of its images."""

    model: MAEEncoder
    kind: str  # "full", "encoder" or "classifier"
    name: str  # the registered model name it was built as
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stats_source: str  # "the checkpoint's statistics", or ImageNet's where it records none


def image_stats(
    run_args: dict[str, Any] | None, in_chans: int | None, path: str | Path = ""
) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(mean, std, where they come from): a run's recorded ``mean`` / ``std`` (`norm_stats.stats_from_args`),
    else ImageNet's for a 3-channel file; ValueError for a file of other channels that records none."""
    from ..train.norm_stats import stats_from_args

    stats, chans = stats_from_args(run_args, in_chans)
    if stats is None:
        raise CheckpointError(
            path,
            f"is for {chans} channel(s) but records no --mean/--std to normalise its images with.",
            "Use a checkpoint written by `mae pretrain` or `mae finetune`, which records them.",
        )
    recorded = isinstance((run_args or {}).get("mean"), list | tuple)
    source = "the checkpoint's statistics" if recorded else "ImageNet's statistics (the checkpoint records none)"
    return tuple(stats[0]), tuple(stats[1]), source


def load_encoder(path: str | Path, model: str | None = None, model_args: list[str] | None = None) -> LoadedEncoder:
    """The encoder of the checkpoint at ``path`` with its weights (strictly loaded), in eval mode.

    ``model`` / ``model_args``: the architecture, only for a file that names none (a custom model saved
    without a run's arguments). ValueError (`CheckpointError`) for a missing file, a file without an
    encoder (a decoder alone, unknown tensors), or a model the file cannot name — before any model is built.
    """
    from ..models import create_model
    from ..train.flags import key_values
    from ..train.run_checkpoint import model_spec

    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"--checkpoint {path} does not exist: give a pre-training or fine-tuned checkpoint file")
    info = inspect_checkpoint(path)
    mean, std, source = image_stats(info.run_args, info.in_chans, path)
    if info.kind == "classifier":
        from ..train.evaluate import build_model

        classifier, facts = build_model(str(path), model, model_args)
        return LoadedEncoder(classifier.eval(), "classifier", facts["model"], mean, std, source)
    if info.kind not in ("full", "encoder"):
        raise CheckpointError(
            path,
            f"holds no ViT encoder ({info.kind}: {info.describe()}).",
            "Give a pre-training checkpoint (encoder + decoder, or the encoder alone) or a fine-tuned one.",
        )
    spec = model_spec(info.run_args)  # a `mae pretrain` checkpoint says which model it trained
    kwargs: dict[str, Any] = {}
    if model is not None:
        name = model
        kwargs = key_values(list(model_args or []), "--model_args")
    elif spec is not None:
        name, kwargs = spec
        kwargs.pop("norm_pix_loss")  # the target does not change the encoder
    elif info.model_name is not None:
        name = info.model_name
    else:
        raise CheckpointError(
            path,
            f"holds {info.describe()}, which is not a registered variant, and records no --model.",
            "Pass --model (e.g. mae_vit_base_patch16) and --model_args (e.g. depth=6 num_heads=6).",
        )
    if "img_size" not in kwargs and info.img_size is not None:
        kwargs["img_size"] = info.img_size
    net = create_model(name, checkpoint_path=path, **kwargs)
    return LoadedEncoder(net.eval(), info.kind, name, mean, std, source)
