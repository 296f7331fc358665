"""Masked Autoencoder with a ViT backbone (He et al., "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022, §3).

image -> patches -> random mask (75%) -> encoder on visible patches -> decoder with mask tokens ->
pixels of every patch -> mean-squared error on the removed patches only.

How the separate encoder and decoder meet the flat official checkpoint: the official file stores both
halves in one namespace (`blocks.*` beside `decoder_blocks.*`, no `encoder.` prefix). So
`MaskedAutoencoderViT` *is* both an `MAEEncoder` and an `MAEDecoder`: it inherits their layers (built by
`_build_encoder` / `_build_decoder`, in the official order) and their official methods
`forward_encoder` / `forward_decoder`. Its `state_dict()` is therefore key-for-key, in order, the
official one, with no renaming hooks, and `named_parameters()` uses the same names.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from .checkpoint import is_decoder_key
from .config import MAEConfig, resolve_config
from .decoder import MAEDecoder
from .encoder import MAEEncoder
from .loading import Expectation
from .patch_embed import patchify, unpatchify


class MaskedAutoencoderViT(MAEEncoder, MAEDecoder):
    """The MAE pre-training model: `forward(imgs, mask_ratio=0.75, noise=None) -> (loss, pred, mask)`.

    Build it from an `MAEConfig` and/or keyword overrides; the named variants are in `mae.models`
    (`mae.create_model("mae_vit_large_patch16")`). Method names match the official
    `models_mae.MaskedAutoencoderViT` for drop-in use.
    """

    def __init__(self, config: MAEConfig | None = None, **overrides: Any) -> None:
        # nn.Module.__init__ once, then both halves' layers on this one module (see the module docstring);
        # MAEEncoder.__init__ / MAEDecoder.__init__ are not called, as each would initialise a module anew.
        nn.Module.__init__(self)
        self.config = resolve_config(config, overrides)
        self._build_encoder(self.config)
        self._build_decoder(self.config)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The official recipe, drawing random numbers in the official order.

        Fixed sin-cos tables; patch projection xavier-uniform on its flattened [D, C*p*p] view; class and
        mask tokens normal(std=0.02); then every Linear xavier-uniform with zero bias and every LayerNorm
        1/0, encoder layers before decoder layers. After the same `torch.manual_seed`, the weights equal
        the official factory's bit for bit.
        """
        self._init_encoder_tokens()  # pos_embed, patch_embed, cls_token
        self._init_decoder_tokens()  # decoder_pos_embed, mask_token
        self._init_encoder_layers()
        self._init_decoder_layers()

    def checkpoint_expectation(self) -> Expectation:
        """The encoder's tensors and the decoder's: a full file fills both; an encoder-only file leaves the
        decoder as initialised (see `mae.loading`)."""
        expectation = super().checkpoint_expectation()
        return replace(expectation, decoder=tuple(k for k in expectation.tensors if is_decoder_key(k)))

    def initialize_unloaded(self, names: list[str]) -> None:
        """After a fast load of an encoder-only file, the decoder's official initialisation."""
        super().initialize_unloaded([k for k in names if not is_decoder_key(k)])  # refuses any other tensor
        if names:
            self._init_decoder_tokens()
            self._init_decoder_layers()

    def patchify(self, imgs: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, L, p*p*C] (see `mae.patch_embed.patchify`)."""
        return patchify(imgs, self.config.patch_size)

    def unpatchify(self, x: Tensor) -> Tensor:
        """[N, L, p*p*C] -> [N, C, H, W] (see `mae.patch_embed.unpatchify`)."""
        return unpatchify(x, self.config.patch_size)

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error on the removed patches.

        imgs: [N, C, H, W]; pred: [N, L, p*p*C]; mask: [N, L], 0 is keep, 1 is remove.
        With `norm_pix_loss`, the target is each patch normalised by its own mean and variance (§3
        "Reconstruction target"). As in the official code, a mask with no removed patch (mask_ratio 0)
        gives 0 / 0 = NaN.
        """
        target = self.patchify(imgs)  # [N, L, p*p*C]
        if self.config.norm_pix_loss:
            # Chuẩn hoá từng patch theo trung bình và phương sai của chính nó: biểu diễn tốt hơn (Bảng 1c).
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = (pred - target) ** 2
        loss = loss.mean(dim=-1)  # [N, L], sai số trung bình của từng patch
        # Chỉ tính loss trên các patch bị che (giống BERT): patch nhìn thấy không đóng góp.
        return (loss * mask).sum() / mask.sum()

    def forward(  # type: ignore[override]  # called like the official model, not like its decoder half
        self, imgs: Tensor, mask_ratio: float = 0.75, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """imgs [N, C, H, W] -> (loss [], pred [N, L, p*p*C], mask [N, L] with 1 = removed).

        noise: optional [N, L] masking noise (lowest values are kept); by default one `torch.rand(N, L)`
        is drawn, so `torch.manual_seed(s)` before the call reproduces the official mask.
        """
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*C]
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask


# The design's name for the glue class; the official name above is the one the checkpoints and docs use.
MaskedAutoencoder = MaskedAutoencoderViT
