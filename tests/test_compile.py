"""torch.compile works on the MAE and the classifier and matches eager within 1e-5."""

from __future__ import annotations

import pytest
import torch

import mae
from helpers import small_config


@pytest.mark.xdist_group("compile")
def test_compiled_mae_and_classifier_match_eager() -> None:
    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config()).eval()
    classifier = mae.VisionTransformer(small_config(), num_classes=5).eval()
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        eager = model(imgs, mask_ratio=0.75, noise=noise)
        compiled = torch.compile(model)(imgs, mask_ratio=0.75, noise=noise)
        logits, compiled_logits = classifier(imgs), torch.compile(classifier)(imgs)
        torch.manual_seed(7)
        seeded = model(imgs)
        torch.manual_seed(7)
        compiled_seeded = torch.compile(model)(imgs)  # the masking noise is drawn eagerly: same mask
    assert torch.equal(compiled[2], eager[2]) and torch.equal(compiled_seeded[2], seeded[2])
    pairs = [
        (compiled[0], eager[0]),
        (compiled[1], eager[1]),
        (compiled_logits, logits),
        (compiled_seeded[1], seeded[1]),
    ]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
