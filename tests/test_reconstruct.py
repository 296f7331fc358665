"""`mae reconstruct`: the four-panel figure, read back from the PNG (size, panels, visible patches equal
to the input, removed patches mean grey), the norm-pix mapping, and the untrained markings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import mae
from helpers import small_config
from mae import reconstruct as rc

MEAN_GREY = tuple(round(m * 255) for m in rc.IMAGENET_MEAN)


def read_png(path: Path) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    width, height = image.size
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(height, width, 3)


def panel(figure: torch.Tensor, index: int, size: int) -> torch.Tensor:
    left, top, right, bottom = rc.panel_box(index, size)
    return figure[top:bottom, left:right]


def normalise(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [0, 1] -> [1, 3, H, W] normalised with the ImageNet statistics, as the official demo does."""
    mean, std = torch.tensor(rc.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(rc.IMAGENET_STD).view(3, 1, 1)
    return ((image - mean) / std)[None]


def to_image(x: torch.Tensor) -> torch.Tensor:
    """[1, 3, H, W] normalised -> [3, H, W] in [0, 1]."""
    mean, std = torch.tensor(rc.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(rc.IMAGENET_STD).view(3, 1, 1)
    return (x[0] * std + mean).clamp(0, 1)


def pixel_mask(mask: torch.Tensor, grid: int, patch: int) -> torch.Tensor:
    """[1, L] patch mask -> [H, W]: patch l covers rows (l // grid) * patch ... and columns (l % grid) * patch ..."""
    return mask.view(grid, grid).repeat_interleave(patch, 0).repeat_interleave(patch, 1)


def test_panels_equal_transformers_under_the_demo_seed() -> None:
    from reference.hf import build_hf, hf_forward

    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config())
    hf = build_hf(model.config, model.state_dict())
    image = torch.rand(3, 32, 32)
    torch.manual_seed(123)  # the global state before the call does not matter: the seed argument fixes the mask
    result = rc.reconstruct(model, image, mask_ratio=0.5, seed=2)
    with torch.no_grad():
        torch.manual_seed(2)  # the official demo: seed, then one forward
        _, pred, mask, _ = hf_forward(hf, normalise(image), 0.5)
    assert torch.equal(result.mask, pixel_mask(mask, 4, 8))
    # Small widths: the BLAS may pick other kernels for our fused qkv (see test_random_configs.py).
    torch.testing.assert_close(result.reconstruction, to_image(hf.unpatchify(pred, (32, 32))), atol=1e-6, rtol=0)
    visible = result.mask == 0
    assert visible.float().mean() == 0.5
    torch.testing.assert_close(result.original, image, atol=1e-6, rtol=0)
    assert torch.equal(result.pasted[:, visible], result.original[:, visible])
    grey = torch.tensor(rc.IMAGENET_MEAN)[:, None]
    torch.testing.assert_close(result.masked[:, ~visible], grey.expand(3, int((~visible).sum())), atol=1e-6, rtol=0)
    assert torch.equal(result.pasted[:, ~visible], result.reconstruction[:, ~visible])


def test_norm_pix_prediction_is_mapped_back_with_each_patchs_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """A norm-pix model predicts each patch normalised by its own mean and variance (§3). Give `reconstruct`
    a model whose prediction is exactly that target (the paper's definition, in the reference's patch order):
    the image must come back. Then a prediction of zeros: every patch must come back as its own mean."""
    from reference.hf import build_hf

    torch.manual_seed(0)
    model = mae.MaskedAutoencoderViT(small_config(norm_pix_loss=True))
    hf = build_hf(model.config, model.state_dict())
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 32, 32, generator=g)
    # Some patches nearly the mean grey (variance ~2e-8 after normalisation): there the 1e-6 in the std dominates.
    flat = (torch.rand(4, 4, generator=g) < 0.5).repeat_interleave(8, 0).repeat_interleave(8, 1)
    grey = torch.tensor(rc.IMAGENET_MEAN).view(3, 1, 1) + 1e-4 * torch.rand(3, 32, 32, generator=g)
    image = torch.where(flat, grey, image)
    x = normalise(image)
    patches = hf.patchify(x)
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
    forward = model.forward

    def predicting(pred: torch.Tensor) -> object:
        def fake(imgs: torch.Tensor, mask_ratio: float = 0.75) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            loss, _, mask = forward(imgs, mask_ratio)
            return loss, pred, mask

        return fake

    monkeypatch.setattr(model, "forward", predicting(target))
    result = rc.reconstruct(model, image, 0.75, seed=1)
    torch.testing.assert_close(result.reconstruction, image, atol=2e-6, rtol=0)

    monkeypatch.setattr(model, "forward", predicting(torch.zeros_like(target)))
    result = rc.reconstruct(model, image, 0.75, seed=1)
    means = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 8)  # [1, 1, 4, 4]: each patch, all channels
    expected = to_image(means.repeat_interleave(8, 2).repeat_interleave(8, 3).expand(1, 3, 32, 32))
    torch.testing.assert_close(result.reconstruction, expected, atol=1e-6, rtol=0)


@pytest.mark.xdist_group("base")
def test_command_writes_the_figure(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mae.create_model("mae_vit_base_patch16")
    full = tmp_path / "mae_visualize_vit_base.pth"
    torch.save({"model": model.state_dict()}, full)
    out = tmp_path / "figure.png"
    done = subprocess.run(
        [sys.executable, "-m", "mae", "reconstruct", "--checkpoint", str(full), "-o", str(out), "--seed", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "norm_pix_loss=False (from the official file name)" in done.stderr
    figure = read_png(out)
    size = 224
    assert figure.shape == (rc.TITLE_HEIGHT + size + rc.GAP + rc.NOTE_HEIGHT, 4 * size + 5 * rc.GAP, 3)
    original, masked, _, pasted = (panel(figure, i, size) for i in range(4))
    expected = rc.to_uint8(rc.load_image(rc.sample_photo(), size))
    assert (original.int() - expected.int()).abs().max() <= 1  # the photograph, resized
    removed = (masked == torch.tensor(MEAN_GREY, dtype=torch.uint8)).all(-1)
    assert removed.float().mean().item() == pytest.approx(0.75, abs=0.02)
    assert torch.equal(pasted[~removed], original[~removed])  # visible patches identical to the input
    assert not torch.equal(pasted[removed], original[removed])


@pytest.mark.xdist_group("base")
def test_untrained_and_norm_pix_figures_say_so(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mae.create_model("mae_vit_base_patch16")
    encoder = {k: v for k, v in model.state_dict().items() if not (k.startswith("decoder_") or k == "mask_token")}
    torch.save({"model": encoder}, tmp_path / "mae_pretrain_vit_base.pth")
    torch.save({"model": model.state_dict()}, tmp_path / "mae_pretrain_vit_base_full.pth")
    _, notes = rc.run(None, tmp_path / "mae_pretrain_vit_base.pth", tmp_path / "a.png")
    assert notes[0].startswith("UNTRAINED DECODER")
    _, notes = rc.run(None, tmp_path / "mae_pretrain_vit_base_full.pth", tmp_path / "b.png")
    assert any("norm-pix model" in n for n in notes) and not any(n.startswith("UNTRAINED") for n in notes)
    _, notes = rc.run(None, None, tmp_path / "c.png", model_name="mae_vit_base_patch16")
    assert notes[0].startswith("UNTRAINED: no checkpoint")
    _, bf16_notes = rc.run(None, None, tmp_path / "d.png", model_name="mae_vit_base_patch16", dtype=torch.bfloat16)
    assert "forward in bfloat16 autocast" in bf16_notes
    if mae.onednn_available():
        _, fast_notes = rc.run(None, None, tmp_path / "e.png", model_name="mae_vit_base_patch16", onednn=True)
        assert any(n.startswith("linear layers by oneDNN") for n in fast_notes)
        # The values behind the two figures: the same model, image and mask, within the fast path's tolerance.
        torch.manual_seed(0)
        model = mae.create_model("mae_vit_base_patch16")
        image = rc.load_image(rc.sample_photo(), 224)
        default = rc.reconstruct(model, image, 0.75, 2, torch.float32)
        fast = rc.reconstruct(mae.set_onednn_linear(model, True), image, 0.75, 2, torch.float32)
        assert torch.equal(fast.mask, default.mask)
        assert fast.loss == pytest.approx(default.loss, rel=1e-5, abs=1e-5)
        torch.testing.assert_close(fast.reconstruction, default.reconstruction, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="--onednn is a float32 CPU fast path"):
        rc.run(None, None, tmp_path / "f.png", dtype=torch.bfloat16, onednn=True)
    figure = read_png(tmp_path / "c.png")
    note_row = figure[rc.TITLE_HEIGHT + 224 + rc.GAP :]
    assert ((note_row[..., 0] > 150) & (note_row[..., 1] < 60)).any()  # the red warning is drawn
