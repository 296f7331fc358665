"""Adapter to transformers' `ViTMAEForPreTraining` (Apache-2.0), the always-available full-model reference.

- `hf_config(config)`: the `ViTMAEConfig` of any `MAEConfig`, with `layer_norm_eps=1e-6` set explicitly
  (transformers' default is 1e-12) and SDPA attention.
- `official_to_hf(state_dict)` / `hf_to_official(state_dict)`: key conversion between the official
  layout (fused `qkv`) and transformers 5.x names (separate `q_proj` / `k_proj` / `v_proj`). The q/k/v
  tensors are views of the fused one where possible (no copy). Written apart from the library's own
  conversion (`mae.checkpoint`) on purpose, so that the harness does not go through the code it checks;
  `tests/test_checkpoint.py` holds the two equal.
- `build_hf(config, state_dict)`: a transformers model holding exactly the given official weights,
  built on the meta device (no random initialisation) and filled strictly.
- `hf_forward(model, imgs, mask_ratio, noise)`: (loss, pred, mask, ids_restore) like the official model.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from mae.config import MAEConfig

# Per-block names inside one Transformer block: official -> transformers 5.x (q/k/v handled apart).
_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_TOP = {
    "cls_token": "vit.embeddings.cls_token",
    "pos_embed": "vit.embeddings.position_embeddings",
    "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
    "norm.weight": "vit.layernorm.weight",
    "norm.bias": "vit.layernorm.bias",
    "mask_token": "decoder.mask_token",
    "decoder_pos_embed": "decoder.decoder_pos_embed",
    "decoder_embed.weight": "decoder.decoder_embed.weight",
    "decoder_embed.bias": "decoder.decoder_embed.bias",
    "decoder_norm.weight": "decoder.decoder_norm.weight",
    "decoder_norm.bias": "decoder.decoder_norm.bias",
    "decoder_pred.weight": "decoder.decoder_pred.weight",
    "decoder_pred.bias": "decoder.decoder_pred.bias",
}
_STACKS = {"blocks": "vit.layers", "decoder_blocks": "decoder.decoder_layers"}
_BLOCK_KEY = re.compile(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)$")


def hf_config(config: MAEConfig, mask_ratio: float = 0.75) -> Any:
    """The transformers `ViTMAEConfig` describing the same architecture as `config`."""
    from transformers import ViTMAEConfig

    return ViTMAEConfig(
        hidden_size=config.embed_dim,
        num_hidden_layers=config.depth,
        num_attention_heads=config.num_heads,
        intermediate_size=int(config.embed_dim * config.mlp_ratio),
        decoder_hidden_size=config.decoder_embed_dim,
        decoder_num_hidden_layers=config.decoder_depth,
        decoder_num_attention_heads=config.decoder_num_heads,
        decoder_intermediate_size=int(config.decoder_embed_dim * config.mlp_ratio),
        image_size=config.img_size,
        patch_size=config.patch_size,
        num_channels=config.in_chans,
        qkv_bias=True,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=config.norm_eps,  # explicit: transformers' default is 1e-12
        mask_ratio=mask_ratio,
        norm_pix_loss=config.norm_pix_loss,
        attn_implementation="sdpa",  # type: ignore[call-arg]  # a PreTrainedConfig keyword
    )


def official_to_hf(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official keys -> transformers 5.x keys; each fused qkv becomes three views q, k, v."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key in _TOP:
            out[_TOP[key]] = value
            continue
        m = _BLOCK_KEY.match(key)
        if m is None:
            raise KeyError(f"not an official MAE key: {key!r}")
        stack, index, name, kind = m.groups()
        prefix = f"{_STACKS[stack]}.{index}"
        if name == "attn.qkv":
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[f"{prefix}.attention.{part}.{kind}"] = chunk
        elif name in _BLOCK:
            out[f"{prefix}.{_BLOCK[name]}.{kind}"] = value
        else:
            raise KeyError(f"not an official MAE key: {key!r}")
    return out


def hf_to_official(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """transformers 5.x keys -> official keys, in the official order; q, k, v are concatenated into qkv."""
    top = {v: k for k, v in _TOP.items()}
    block = {v: k for k, v in _BLOCK.items()}
    stacks = {v: k for k, v in _STACKS.items()}
    pattern = re.compile(r"^(vit\.layers|decoder\.decoder_layers)\.(\d+)\.(.+)\.(weight|bias)$")
    out: dict[str, Tensor] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        if key in top:
            out[top[key]] = value
            continue
        m = pattern.match(key)
        if m is None:
            raise KeyError(f"not a transformers ViTMAE key: {key!r}")
        stack, index, name, kind = m.groups()
        prefix = f"{stacks[stack]}.{index}"
        if name in ("attention.q_proj", "attention.k_proj", "attention.v_proj"):
            pending.setdefault(f"{prefix}.attn.qkv.{kind}", {})[name[-6]] = value
        elif name in block:
            out[f"{prefix}.{block[name]}.{kind}"] = value
        else:
            raise KeyError(f"not a transformers ViTMAE key: {key!r}")
    for key, parts in pending.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return {key: out[key] for key in sorted(out, key=_official_rank)}


# The official module registers its own tensors first, then patch_embed, blocks, norm, decoder_embed,
# decoder_blocks, decoder_norm, decoder_pred; inside a block: norm1, attn.qkv, attn.proj, norm2, mlp.
_OWN = ["cls_token", "pos_embed", "mask_token", "decoder_pos_embed"]
_MODULES = ["patch_embed.proj", "blocks", "norm", "decoder_embed", "decoder_blocks", "decoder_norm", "decoder_pred"]
_IN_BLOCK = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]


def _official_rank(key: str) -> tuple[int, int, int, int]:
    if key in _OWN:
        return (0, _OWN.index(key), 0, 0)
    m = _BLOCK_KEY.match(key)
    if m:
        stack, index, name, kind = m.groups()
        return (1 + _MODULES.index(stack), int(index), _IN_BLOCK.index(name), kind == "bias")
    module, kind = key.rsplit(".", 1)
    return (1 + _MODULES.index(module), 0, 0, kind == "bias")


def build_hf(config: MAEConfig, state_dict: dict[str, Tensor]) -> Any:
    """A transformers `ViTMAEForPreTraining` holding exactly `state_dict` (official keys), in eval mode.

    Built on the meta device, so no time goes into a random initialisation that is overwritten; the
    weights are assigned strictly (a missing or extra key raises).
    """
    from transformers import ViTMAEForPreTraining

    with torch.device("meta"):
        model = ViTMAEForPreTraining(hf_config(config))
    model.load_state_dict(official_to_hf(state_dict), strict=True, assign=True)
    return model.eval()


def hf_forward(
    model: Any, imgs: Tensor, mask_ratio: float = 0.75, noise: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, pred, mask, ids_restore) of the transformers model, like the official forward.

    The mask ratio is a configuration attribute in transformers: it is set for this call. Without
    `noise`, transformers draws one `torch.rand(N, L)` as the official code does.
    """
    model.config.mask_ratio = mask_ratio
    out = model(pixel_values=imgs, noise=noise)
    return out.loss, out.logits, out.mask, out.ids_restore
