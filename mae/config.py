"""Configuration of a Masked Autoencoder (He et al., 2022, §3; Table 1 for the decoder design).

One frozen dataclass describes every variant; the named variants (ViT-B/16, ViT-L/16, ViT-H/14) are
instances of it in `mae.models`. The defaults are those of the official `MaskedAutoencoderViT`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class MAEConfig:
    """Architecture of an MAE: a ViT encoder on visible patches and a light ViT decoder.

    Only square images are supported: the official sin-cos tables and checkpoints assume an
    `img_size x img_size` input and a square patch grid.
    """

    img_size: int = 224  # ImageNet-1K pre-training resolution (§4)
    patch_size: int = 16  # ViT-B and ViT-L use 16x16 patches; ViT-H uses 14x14
    in_chans: int = 3  # RGB; any count works (patchify and the pixel head follow it)
    embed_dim: int = 1024  # the official class defaults to ViT-L's encoder
    depth: int = 24
    num_heads: int = 16
    decoder_embed_dim: int = 512  # "lightweight" decoder: 512-d, 8 blocks is the default (Table 1a, 1b)
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0  # hidden width of every MLP = int(dim * mlp_ratio), as in the official Block
    norm_pix_loss: bool = False  # per-patch normalised pixels as the target (§3, Table 1c)
    norm_eps: float = 1e-6  # every LayerNorm of the official model (torch's default 1e-5 would differ)
    drop_path_rate: float = 0.0  # stochastic depth of the encoder blocks: fine-tuning only (pre-training uses none)

    def __post_init__(self) -> None:
        for name in (
            "img_size",
            "patch_size",
            "in_chans",
            "embed_dim",
            "depth",
            "num_heads",
            "decoder_embed_dim",
            "decoder_depth",
            "decoder_num_heads",
        ):
            value = getattr(self, name)
            if isinstance(value, (tuple, list)) and name == "img_size":
                raise ValueError(
                    f"img_size must be one int (square images); got {value!r}. Non-square inputs are not "
                    "supported: the sin-cos position tables and the official checkpoints assume a square "
                    "patch grid. Resize or center-crop your images to a square first."
                )
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size ({self.img_size}) must be divisible by patch_size ({self.patch_size}); "
                f"nearest valid sizes: {self.img_size // self.patch_size * self.patch_size} or "
                f"{(self.img_size // self.patch_size + 1) * self.patch_size}"
            )
        for dim_name, heads_name in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            dim, heads = getattr(self, dim_name), getattr(self, heads_name)
            if dim % heads:
                raise ValueError(
                    f"{dim_name} ({dim}) must be divisible by {heads_name} ({heads}): each head gets "
                    f"{dim_name} / {heads_name} channels"
                )
            if dim % 4:
                raise ValueError(
                    f"{dim_name} ({dim}) must be divisible by 4: the 2-D sin-cos table gives a quarter of the "
                    "channels to each of sin/cos of column/row"
                )
        if not isinstance(self.mlp_ratio, (int, float)) or isinstance(self.mlp_ratio, bool) or self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a positive number; got {self.mlp_ratio!r}")
        if int(self.embed_dim * self.mlp_ratio) <= 0 or int(self.decoder_embed_dim * self.mlp_ratio) <= 0:
            raise ValueError(f"mlp_ratio {self.mlp_ratio} gives an empty MLP hidden layer")
        if not isinstance(self.norm_pix_loss, bool):
            raise ValueError(f"norm_pix_loss must be a bool; got {self.norm_pix_loss!r}")
        if not isinstance(self.norm_eps, float) or not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be a positive float; got {self.norm_eps!r}")
        if not isinstance(self.drop_path_rate, (int, float)) or not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1); got {self.drop_path_rate!r}")

    @property
    def grid_size(self) -> int:
        """Patches per side: 224 / 16 = 14."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches per image, L = grid_size ** 2 (196 for ViT-B/16 and ViT-L/16, 256 for ViT-H/14)."""
        return self.grid_size**2

    @property
    def patch_dim(self) -> int:
        """Pixels per patch, p * p * C: the width of the decoder's prediction for one patch."""
        return self.patch_size**2 * self.in_chans


def resolve_config(config: MAEConfig | None, overrides: dict[str, Any]) -> MAEConfig:
    """`config` (default: the official class defaults) with keyword overrides applied.

    An unknown override name raises ValueError listing the valid ones.
    """
    config = config if config is not None else MAEConfig()
    if not isinstance(config, MAEConfig):
        raise TypeError(f"config must be an MAEConfig; got {type(config).__name__}")
    valid = [f.name for f in fields(MAEConfig)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown configuration field(s) {', '.join(unknown)}; valid fields: {', '.join(valid)}")
    return replace(config, **overrides) if overrides else config
