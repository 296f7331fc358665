"""``mae attention IMAGE --checkpoint FILE``: the DINO figure for an MAE — the image, then one heat map per
head of the class token's attention in the last block (`attention_map.cls_attention`), upsampled to the
image (each patch's weight over its pixels) and drawn over a grey copy of it.

Each head's colours run from 0 to that head's largest weight (the heads' scales differ), as DINO's
``visualize_attention.py`` saves each head's map on its own scale. Needs matplotlib and Pillow
(``pip install 'mae[viz]'``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .attention_map import cls_attention, upsample
from .encoder_file import LoadedEncoder

COLUMNS = 7  # panels per row: the image and six heads (ViT-B's 12 heads: two rows)


@dataclass
class AttentionFigure:
    """The image ([C, H, W] in [0, 1], before normalisation) and its per-head maps ([heads, H, W])."""

    image: Tensor
    maps: Tensor
    label: str  # where the weights come from, shown under the figure


def attention_for_image(loaded: LoadedEncoder, image: Tensor) -> Tensor:
    """The per-pixel maps [heads, H, W] of one image ([C, H, W] in [0, 1], the model's size)."""
    c = loaded.model.config
    mean = torch.tensor(loaded.mean).view(-1, 1, 1)
    std = torch.tensor(loaded.std).view(-1, 1, 1)
    x = ((image - mean) / std)[None]  # [1, C, H, W], chuẩn hoá như lúc huấn luyện
    maps = cls_attention(loaded.model, x)  # [1, heads, L]
    return upsample(maps, c.grid_size, c.patch_size)[0]


def render(figure: AttentionFigure, output: str | os.PathLike[str]) -> Path:
    """Draw the figure with matplotlib and write it (PNG) atomically; returns the path."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the attention figure is drawn with matplotlib: pip install 'mae[viz]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = figure.maps.shape[0]
    cols = min(COLUMNS, heads + 1)
    rows = math.ceil((heads + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.5), squeeze=False)
    image = figure.image.permute(1, 2, 0).clamp(0, 1).numpy()
    grey = image.mean(axis=2) if image.shape[2] != 1 else image[..., 0]
    shown = image if image.shape[2] == 3 else grey
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(shown, cmap=None if image.shape[2] == 3 else "gray", vmin=0, vmax=1)
    axes.flat[0].set_title("image", fontsize=8)
    for h in range(heads):
        ax = axes.flat[h + 1]
        weights = figure.maps[h].numpy()
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
        # Bản đồ chú ý của từng head phủ lên ảnh xám; thang màu riêng cho từng head (0 .. trọng số lớn nhất).
        ax.imshow(weights, cmap="inferno", alpha=0.7, vmin=0, vmax=float(weights.max()), interpolation="nearest")
        ax.set_title(f"head {h} (max {weights.max():.2f})", fontsize=7)
    fig.suptitle(
        "class token's attention over the patches, last block, per head (each head on its own scale)", fontsize=8
    )
    fig.text(0.5, 0.01, figure.label, ha="center", fontsize=7, color="#c00000" if "UNTRAINED" in figure.label else "k")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    out = Path(output)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)  # đổi tên là nguyên tử: không để lại tệp viết dở
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def run(image: str | os.PathLike[str], loaded: LoadedEncoder, output: str | os.PathLike[str], label: str) -> Path:
    """Read ``image`` (resized to the model's size), compute its maps and write the figure."""
    from ..reconstruct import load_image

    c = loaded.model.config
    picture = load_image(image, c.img_size, c.in_chans)  # [C, H, W] in [0, 1]
    maps = attention_for_image(loaded, picture)
    return render(AttentionFigure(picture, maps, label), output)


def describe(path: Path, loaded: LoadedEncoder) -> str:
    """The figure's label: file, model, heads, statistics."""
    c = loaded.model.config
    what = {"full": "pre-trained MAE", "encoder": "pre-trained MAE encoder", "classifier": "fine-tuned"}[loaded.kind]
    return (
        f"{path.name}: {what}, {loaded.name}, {c.depth} blocks, {c.num_heads} heads, {c.img_size}px / {c.patch_size}; "
        f"normalised with {loaded.stats_source}"
    )
