"""The MAE encoder (He et al., 2022, §3 "MAE encoder"): a ViT applied only to the visible patches.

Patches are embedded and given fixed sin-cos positions; a random 75% of them is removed (`masking.py`);
a class token is prepended and the visible tokens go through the Transformer blocks and a final norm.
Because the encoder only sees the unmasked ~25% of tokens, pre-training is about 3x faster (§3).

Member names are the official checkpoint keys, so `MAEEncoder().state_dict()` is key-for-key the
official encoder-only checkpoint (`mae_pretrain_vit_*.pth`): cls_token, pos_embed, patch_embed.*,
blocks.*, norm.*.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import MAEConfig, resolve_config
from .grad_checkpointing import GradCheckpointing, run_blocks
from .loading import Expectation, LoadReport, load_into
from .masking import check_mask_ratio, random_masking
from .patch_embed import PatchEmbed
from .pos_embed import get_2d_sincos_pos_embed
from .transformer import Block, init_official


class MAEEncoder(GradCheckpointing, nn.Module):
    """ViT encoder of an MAE: images [N, C, H, W] -> visible-token features [N, 1 + K, D].

    Build it from an `MAEConfig` and/or keyword overrides: `MAEEncoder(embed_dim=768, depth=12, ...)`.
    """

    load_report: LoadReport | None = None  # what the last `load_pretrained` loaded

    def __init__(self, config: MAEConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = resolve_config(config, overrides)
        self._build_encoder(self.config)
        self._init_encoder_tokens()
        self._init_encoder_layers()

    def _build_encoder(self, c: MAEConfig) -> None:
        # Thứ tự tạo các lớp giống hệt bản gốc: cùng seed thì cùng dãy số ngẫu nhiên, cùng trọng số.
        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        # Bảng vị trí sin-cos cố định (không học): requires_grad=False, như bản gốc.
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + 1, c.embed_dim), requires_grad=False)
        norm_layer = partial(nn.LayerNorm, eps=c.norm_eps)
        # Độ sâu ngẫu nhiên (chỉ khi fine-tune) tăng tuyến tính theo khối: khối cuối bị bỏ nhiều nhất.
        rates = torch.linspace(0, c.drop_path_rate, c.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            [Block(c.embed_dim, c.num_heads, c.mlp_ratio, norm_layer, drop_path=rate) for rate in rates]
        )
        self.norm = norm_layer(c.embed_dim)

    @torch.no_grad()
    def _init_encoder_tokens(self) -> None:
        """Fixed sin-cos table; patch projection and class token (the encoder's share of the official recipe)."""
        if self.cls_token.is_meta:
            return  # built on the meta device: sizes only, nothing to compute or draw
        self.pos_embed.copy_(get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.config.grid_size, cls_token=True))
        # Khởi tạo phép chiếu patch như một nn.Linear (xavier trên dạng phẳng [D, C*p*p]), không như Conv2d.
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        # trunc_normal_(std=.02) của timm thực chất là normal_(std=.02) vì ngưỡng cắt (2.0) quá xa.
        nn.init.normal_(self.cls_token, std=0.02)

    def _init_encoder_layers(self) -> None:
        init_official(self.blocks)
        init_official(self.norm)

    def initialize_weights(self) -> None:
        """Re-initialise with the official recipe (draws random numbers in the official order)."""
        self._init_encoder_tokens()
        self._init_encoder_layers()

    def load_pretrained(self, path: str | Path, *, interpolate_pos_embed: bool = False) -> LoadReport:
        """Load a checkpoint file strictly and say what was loaded (see `mae.loading`).

        Accepts the official files and their other spellings (transformers, timm, safetensors, DDP or
        torch.compile prefixes). Raises `mae.CheckpointError` naming the file, the problem and the fix;
        after a failed load the parameters are unchanged.
        """
        return load_into(self, path, interpolate_pos_embed=interpolate_pos_embed)

    def checkpoint_expectation(self) -> Expectation:
        """What this model expects from a checkpoint file: every tensor of the encoder (see `mae.loading`)."""
        return Expectation(config=self.config, tensors=self.state_dict())

    def initialize_unloaded(self, names: list[str]) -> None:
        """Initialise tensors a fast load left out; an encoder takes every tensor from the file, so none."""
        if names:
            raise RuntimeError(f"an encoder cannot initialise tensors a checkpoint lacked: {', '.join(names)}")

    def random_masking(
        self, x: Tensor, mask_ratio: float, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """See `mae.masking.random_masking`: [N, L, D] -> (x_kept [N, K, D], mask [N, L], ids_restore [N, L])."""
        return random_masking(x, mask_ratio, noise)

    def _embed(self, imgs: Tensor) -> Tensor:
        """Patch embeddings plus their positions: [N, C, H, W] -> [N, L, D]."""
        return self.patch_embed(imgs) + self.pos_embed[:, 1:, :]

    def _prepend_cls_and_run(self, x: Tensor) -> Tensor:
        """Prepend the class token (with its position row) and apply blocks and norm: [N, K, D] -> [N, 1+K, D]."""
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = run_blocks(self.blocks, x, self.grad_checkpointing)  # `set_grad_checkpointing`: recomputed in the backward
        return self.norm(x)

    def forward_encoder(
        self, imgs: Tensor, mask_ratio: float = 0.75, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches of `imgs` [N, C, H, W].

        Returns (latent [N, 1 + K, D]: class token first, then the kept patches in shuffled order;
        mask [N, L], 0 is keep, 1 is remove; ids_restore [N, L]). K = int(L * (1 - mask_ratio)).
        """
        check_mask_ratio(mask_ratio)
        x = self._embed(imgs)
        # Che ngẫu nhiên: encoder chỉ xử lý các patch còn nhìn thấy (không dùng mask token ở encoder).
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        return self._prepend_cls_and_run(x), mask, ids_restore

    def forward_features(self, imgs: Tensor) -> Tensor:
        """Features of every patch, unmasked and in patch order: [N, C, H, W] -> [N, 1 + L, D].

        The same computation as timm's `VisionTransformer.forward_features` with these weights.
        """
        return self._prepend_cls_and_run(self._embed(imgs))

    def forward(
        self, imgs: Tensor, mask_ratio: float = 0.75, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Same as `forward_encoder`."""
        return self.forward_encoder(imgs, mask_ratio, noise)
