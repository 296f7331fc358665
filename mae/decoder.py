"""The MAE decoder (He et al., 2022, §3 "MAE decoder" and "Reconstruction target").

The encoder's tokens are projected to the decoder width; one shared, learned mask token fills every
removed position; the full sequence is put back in patch order, given fixed sin-cos positions and run
through a few light Transformer blocks. A linear head predicts the p*p*C pixels of every patch; the
class token's prediction is dropped. The decoder is only used during pre-training.

Member names are the official checkpoint keys: mask_token, decoder_pos_embed, decoder_embed.*,
decoder_blocks.*, decoder_norm.*, decoder_pred.* (104 keys for the official 8-block decoder).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .config import MAEConfig, resolve_config
from .grad_checkpointing import GradCheckpointing, run_blocks
from .masking import unshuffle
from .pos_embed import get_2d_sincos_pos_embed
from .transformer import Block, init_official


class MAEDecoder(GradCheckpointing, nn.Module):
    """Light ViT decoder: (latent [N, 1 + K, D], ids_restore [N, L]) -> pixel predictions [N, L, p*p*C]."""

    def __init__(self, config: MAEConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = resolve_config(config, overrides)
        self._build_decoder(self.config)
        self._init_decoder_tokens()
        self._init_decoder_layers()

    def _build_decoder(self, c: MAEConfig) -> None:
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, c.num_patches + 1, c.decoder_embed_dim), requires_grad=False
        )
        norm_layer = partial(nn.LayerNorm, eps=c.norm_eps)
        self.decoder_blocks = nn.ModuleList(
            [Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio, norm_layer) for _ in range(c.decoder_depth)]
        )
        self.decoder_norm = norm_layer(c.decoder_embed_dim)
        # Đầu ra tuyến tính: mỗi token dự đoán p*p*C giá trị pixel của patch đó.
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.patch_dim, bias=True)

    @torch.no_grad()
    def _init_decoder_tokens(self) -> None:
        """Fixed sin-cos table and mask token (the decoder's share of the official recipe)."""
        if self.mask_token.is_meta:
            return  # built on the meta device: sizes only, nothing to compute or draw
        table = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], self.config.grid_size, cls_token=True)
        self.decoder_pos_embed.copy_(table)
        nn.init.normal_(self.mask_token, std=0.02)

    def _init_decoder_layers(self) -> None:
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            init_official(module)

    def initialize_weights(self) -> None:
        """Re-initialise with the official recipe (draws random numbers in the official order)."""
        self._init_decoder_tokens()
        self._init_decoder_layers()

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Predict every patch's pixels.

        latent: [N, 1 + K, D] encoder output (class token first, kept patches in shuffled order);
        ids_restore: [N, L] from the masking. Returns [N, L, p*p*C] in patch order.
        """
        _check_decoder_inputs(latent, ids_restore, self.decoder_embed.in_features, self.decoder_pos_embed.shape[1] - 1)
        x = self.decoder_embed(latent)  # [N, 1+K, Dd]
        # Ghép mask token vào chỗ các patch bị che rồi đưa cả chuỗi về thứ tự patch gốc; [CLS] giữ ở đầu.
        x = torch.cat([x[:, :1, :], unshuffle(x[:, 1:, :], self.mask_token, ids_restore)], dim=1)  # [N, 1+L, Dd]
        x = x + self.decoder_pos_embed
        x = run_blocks(self.decoder_blocks, x, self.grad_checkpointing)  # [N, 1+L, Dd]
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)  # [N, 1+L, p*p*C]
        return x[:, 1:, :]  # bỏ dự đoán của token [CLS]

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Same as `forward_decoder`."""
        return self.forward_decoder(latent, ids_restore)


def _check_decoder_inputs(latent: Tensor, ids_restore: Tensor, embed_dim: int, num_patches: int) -> None:
    if latent.ndim != 3 or latent.shape[-1] != embed_dim:
        raise ValueError(f"latent must be [N, 1 + K, {embed_dim}] (encoder output); got {tuple(latent.shape)}")
    if ids_restore.shape != (latent.shape[0], num_patches):
        raise ValueError(
            f"ids_restore must be [N, L] = [{latent.shape[0]}, {num_patches}]; got {tuple(ids_restore.shape)}"
        )
    if latent.shape[1] - 1 > num_patches:
        raise ValueError(f"latent has {latent.shape[1] - 1} patch tokens, more than the {num_patches} patches")
