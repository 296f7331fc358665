"""The fine-tuning classifier: a ViT on the MAE encoder (He et al., 2022, §4 and Appendix A.2).

After pre-training, the decoder is dropped and the encoder is fine-tuned on whole (unmasked) images
with a linear head. As in the official fine-tuning model:
- `global_pool=True` (the default of the official recipe): the patch tokens are averaged, then
  normalised by `fc_norm`; the encoder's final `norm` is not used (and has no keys);
- `global_pool=False`: the class token after the final `norm`;
- stochastic depth increasing linearly over the blocks up to `drop_path_rate` (0.1 / 0.2 / 0.3 for
  ViT-B / L / H in the official recipe);
- the position table is trained (it starts as the sin-cos table, or the checkpoint's);
- the head starts at truncated-normal std 2e-5 with zero bias, so the first logits are nearly 0.
Layer-wise learning-rate decay groups (`param_groups_lrd`) follow the official recipe.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .config import MAEConfig
from .encoder import MAEEncoder
from .loading import ClassifierHead, Expectation
from .models import MAEViTBase, MAEViTHuge, MAEViTLarge


class VisionTransformer(MAEEncoder):
    """ViT classifier on an MAE encoder: images [N, C, H, W] -> logits [N, num_classes].

    Loads the official pretrain (encoder-only) files with the official expectations made explicit
    (the head, and `fc_norm` with global pooling, are new; the encoder's `norm` is unused with global
    pooling) and the official fine-tuned files strictly: `model.load_pretrained(path)`.
    """

    def __init__(
        self,
        config: MAEConfig | None = None,
        *,
        num_classes: int = 1000,
        global_pool: bool = True,
        **overrides: Any,
    ) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: no head, features only); got {num_classes!r}")
        self.num_classes, self.global_pool = num_classes, global_pool
        super().__init__(config, **overrides)  # overrides may set drop_path_rate (stochastic depth)

    def _build_encoder(self, c: MAEConfig) -> None:
        super()._build_encoder(c)
        norm_layer = partial(nn.LayerNorm, eps=c.norm_eps)
        # Vị trí được tinh chỉnh cùng mô hình khi fine-tune (khác với lúc tiền huấn luyện).
        self.pos_embed.requires_grad_(True)
        if self.global_pool:
            self.norm = nn.Identity()  # type: ignore[assignment]  # replaced by fc_norm after pooling
            self.fc_norm: nn.Module = norm_layer(c.embed_dim)
        self.head: nn.Module = nn.Linear(c.embed_dim, self.num_classes) if self.num_classes else nn.Identity()

    @torch.no_grad()
    def _init_encoder_layers(self) -> None:
        super()._init_encoder_layers()
        if self.global_pool:
            nn.init.ones_(self.fc_norm.weight)  # type: ignore[arg-type]
            nn.init.zeros_(self.fc_norm.bias)  # type: ignore[arg-type]
        if isinstance(self.head, nn.Linear) and not self.head.weight.is_meta:
            # Đầu phân loại bắt đầu rất nhỏ (std 2e-5, như công thức gốc): logit ban đầu gần 0.
            nn.init.trunc_normal_(self.head.weight, std=2e-5)
            nn.init.zeros_(self.head.bias)

    def checkpoint_expectation(self) -> Expectation:
        """The encoder and the head: a fine-tuned file fills both; from a pretrain file the head (and fc_norm,
        with global pooling) is new and the encoder's final norm unused, as in the official recipe."""
        expectation = super().checkpoint_expectation()
        new = tuple(k for k in expectation.tensors if k.startswith(("head.", "fc_norm.")))
        unused = ("norm.weight", "norm.bias") if self.global_pool else ()
        head = ClassifierHead(self.global_pool, self.num_classes, new=new, unused=unused)
        return replace(expectation, classifier=head)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the token features [N, 1 + L, D] and classify: -> [N, num_classes] (or [N, D] if pre_logits)."""
        # Trung bình các token patch (bỏ [CLS]) rồi chuẩn hoá, hoặc lấy token [CLS] sau norm cuối.
        x = self.fc_norm(x[:, 1:, :].mean(dim=1)) if self.global_pool else x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, imgs: Tensor) -> Tensor:  # type: ignore[override]  # a classifier: images -> logits
        """Logits [N, num_classes] of images [N, C, H, W] (all patches; no masking)."""
        return self.forward_head(self.forward_features(imgs))

    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay besides the 1-D ones (timm's convention)."""
        return {"pos_embed", "cls_token"}


def param_groups_lrd(
    model: VisionTransformer, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise learning-rate decay (the official recipe, after BEiT).

    Layer ids: patch embedding, class token and position table 0; block i is i + 1; everything after the
    blocks (fc_norm / norm, head) is depth + 1. A group's `lr_scale` is layer_decay ** (depth + 1 - id):
    multiply the learning rate by it in the schedule. 1-D parameters (biases, norms) and the class token
    and position table get no weight decay. Frozen parameters are left out.
    """
    num_layers = len(model.blocks) + 1
    groups: dict[str, dict[str, Any]] = {}
    no_decay_names = model.no_weight_decay()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = 0.0 if param.ndim == 1 or name in no_decay_names else weight_decay
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        else:
            layer = num_layers
        key = f"layer_{layer}_{'decay' if decay else 'no_decay'}"
        group = groups.setdefault(
            key, {"lr_scale": layer_decay ** (num_layers - layer), "weight_decay": decay, "params": []}
        )
        group["params"].append(param)
    return list(groups.values())


def vit_base_patch16(**kwargs: Any) -> VisionTransformer:
    """ViT-B/16 classifier (official fine-tuning name); kwargs: num_classes, global_pool, drop_path_rate, ..."""
    return VisionTransformer(MAEViTBase.default_config, **kwargs)


def vit_large_patch16(**kwargs: Any) -> VisionTransformer:
    """ViT-L/16 classifier (official fine-tuning name); kwargs: num_classes, global_pool, drop_path_rate, ..."""
    return VisionTransformer(MAEViTLarge.default_config, **kwargs)


def vit_huge_patch14(**kwargs: Any) -> VisionTransformer:
    """ViT-H/14 classifier (official fine-tuning name); kwargs: num_classes, global_pool, drop_path_rate, ..."""
    return VisionTransformer(MAEViTHuge.default_config, **kwargs)
