"""The benchmark's FLOP formula against torch's own FlopCounterMode on real forwards."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mae
from benchmarks.flops import forward_flops
from helpers import small_config


def counted(model: mae.MaskedAutoencoderViT, batch: int, ratio: float) -> int:
    # The written-out attention: torch's counter has no formula for the CPU flash-attention kernel.
    mae.set_fused_attn(model, False)
    imgs = torch.randn(batch, model.config.in_chans, model.config.img_size, model.config.img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(imgs, mask_ratio=ratio)
    return int(counter.get_total_flops())


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("batch", [1, 3])
def test_formula_equals_torch_counter_on_small_models(ratio: float, batch: int) -> None:
    config = small_config(mlp_ratio=2.5, in_chans=2)
    assert forward_flops(config, ratio, batch) == counted(mae.MaskedAutoencoderViT(config), batch, ratio)


@pytest.mark.parametrize("name", ["mae_vit_base_patch16", "mae_vit_huge_patch14"])
def test_formula_equals_torch_counter_on_official_sizes(name: str) -> None:
    with torch.device("meta"):
        model = mae.create_model(name)
    imgs = torch.randn(1, 3, 224, 224, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(imgs, mask_ratio=0.75, noise=torch.rand(1, model.config.num_patches, device="meta"))
    assert forward_flops(model.config, 0.75, 1) == counter.get_total_flops()
