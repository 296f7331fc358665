"""The official checkpoint files: names, URLs, families, and what each is for.

Families (facebookresearch/mae README, FINETUNE.md, the demo notebook, and the authors' answers in
its issues #3 and #8):
- visualize: encoder + decoder trained with the plain pixel target; for reconstructions.
- pretrain: the encoder only (the decoder removed); for fine-tuning, linear probing and features.
- pretrain-full: encoder + decoder of the pretrain models, trained with the norm-pix target (§3): they
  reconstruct per-patch normalised pixels.
- finetuned: ImageNet-1K classifiers fine-tuned from the pretrain encoders.
The md5 prefixes are the ones the official README and FINETUNE.md publish.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BASE_URL = "https://dl.fbaipublicfiles.com/mae"


@dataclass(frozen=True)
class OfficialFile:
    """One published checkpoint file."""

    name: str
    family: str  # "visualize", "pretrain", "pretrain-full", "finetuned"
    variant: str  # "base", "large", "huge"
    contents: str  # "full" (encoder + decoder), "encoder", "classifier"
    norm_pix_loss: bool | None  # the reconstruction target it was trained with (None: no decoder)
    md5_prefix: str | None  # as published; None where none is published
    note: str = ""

    @property
    def url(self) -> str:
        folder = {"visualize": "visualize", "finetuned": "finetune"}.get(self.family, "pretrain")
        return f"{BASE_URL}/{folder}/{self.name}"


def _catalogue() -> dict[str, OfficialFile]:
    files = []
    for v in ("base", "large", "huge"):
        files.append(OfficialFile(f"mae_visualize_vit_{v}.pth", "visualize", v, "full", False, None))
        files.append(OfficialFile(f"mae_pretrain_vit_{v}_full.pth", "pretrain-full", v, "full", True, None))
    files.append(
        OfficialFile(
            "mae_visualize_vit_large_ganloss.pth", "visualize", "large", "full", False, None,
            "trained with an extra GAN loss: sharper-looking reconstructions",
        )
    )  # fmt: skip
    for v, md5 in (("base", "8cad7c"), ("large", "b8b06e"), ("huge", "9bdbb0")):
        files.append(OfficialFile(f"mae_pretrain_vit_{v}.pth", "pretrain", v, "encoder", None, md5))
    for v, md5 in (("base", "1b25e9"), ("large", "51f550"), ("huge", "2541f2")):
        files.append(OfficialFile(f"mae_finetuned_vit_{v}.pth", "finetuned", v, "classifier", None, md5))
    return {f.name: f for f in files}


OFFICIAL_FILES: dict[str, OfficialFile] = _catalogue()


def official_file(name: str) -> OfficialFile | None:
    """The catalogue entry of a file name (a path's name is enough), or None."""
    return OFFICIAL_FILES.get(Path(name).name)


def data_dir() -> Path:
    """Where checkpoints live: $MAE_HOME if set, else `data/` in the current directory."""
    home = os.environ.get("MAE_HOME", "").strip()
    return Path(home).expanduser() if home else Path("data")
