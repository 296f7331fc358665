"""The official demo's figure as a function and a command (He et al., 2022, Figures 2-4).

Four panels: the original image, the visible patches (removed ones shown as the mean grey), the
reconstruction, and the reconstruction with the visible patches pasted back. Images are resized to the
model's size and normalised with the ImageNet mean and std, as in the official demo. For a model trained
on the norm-pix target, the prediction is per-patch normalised pixels: it is mapped back with each
patch's own mean and variance (taken from the input), and the figure says so.

Needs Pillow to read and write images (`pip install 'mae[viz]'`); without an image, the sample
photograph that matplotlib ships is used (matplotlib is in the same extra).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .cpu import warn_if_reduced_precision_is_slow
from .mae import MaskedAutoencoderViT
from .onednn import fast_path_summary, recording_choices, set_onednn_linear, timing_can_pay_off

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLE_PHOTO = "grace_hopper.jpg"  # a photograph matplotlib ships (offline)
TITLES = ("original", "masked", "reconstruction", "reconstruction + visible")
GAP, TITLE_HEIGHT, NOTE_HEIGHT = 8, 20, 18


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("reading and writing images needs Pillow: pip install 'mae[viz]'") from None
    return Image


def sample_photo() -> Path:
    """The path of the sample photograph that matplotlib ships."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "no image given, and the sample photograph comes with matplotlib: pip install 'mae[viz]', or pass IMAGE"
        ) from None
    return Path(matplotlib.get_data_path()) / "sample_data" / SAMPLE_PHOTO


def load_image(path: str | os.PathLike[str], size: int) -> Tensor:
    """An RGB image resized to size x size (as the official demo does): [3, size, size] in [0, 1]."""
    image = _pil().open(path).convert("RGB").resize((size, size))
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.reshape(size, size, 3).permute(2, 0, 1).float() / 255.0


@dataclass
class Reconstruction:
    """The four panels ([3, H, W] in [0, 1]), the mask ([H, W], 1 = removed) and the loss."""

    original: Tensor
    masked: Tensor
    reconstruction: Tensor
    pasted: Tensor
    mask: Tensor
    loss: float


def reconstruct(
    model: MaskedAutoencoderViT,
    image: Tensor,
    mask_ratio: float = 0.75,
    seed: int = 2,
    dtype: torch.dtype = torch.float32,
) -> Reconstruction:
    """Mask `image` ([3, H, W] in [0, 1], the model's size) and reconstruct it, as in the official demo.

    Runs on the model's device; `dtype` other than float32 runs the forward under autocast. The panels
    come back on the CPU, in float32.
    """
    device = next(model.parameters()).device
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = ((image - mean) / std)[None]  # [1, 3, H, W], chuẩn hoá theo ImageNet như lúc huấn luyện
    model.eval()
    with torch.no_grad():
        torch.manual_seed(seed)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss, pred, mask = model(x.to(device), mask_ratio=mask_ratio)  # pred: [1, L, p*p*3]; mask: [1, L]
        pred, mask = pred.float().cpu(), mask.float().cpu()
        if model.config.norm_pix_loss:
            # Mô hình dự đoán pixel đã chuẩn hoá theo từng patch: đưa về pixel bằng trung bình/phương sai của patch.
            target = model.patchify(x)
            pred = pred * (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
        y = model.unpatchify(pred)  # [1, 3, H, W]
        p = model.config.patch_size
        pixel_mask = model.unpatchify(mask[..., None].repeat(1, 1, p * p * 3))  # [1, 3, H, W], 1 = bị che
    # Patch bị che hiện bằng 0 sau chuẩn hoá, tức là màu xám trung bình của ImageNet.
    masked = x * (1 - pixel_mask)
    pasted = x * (1 - pixel_mask) + y * pixel_mask

    def to_image(t: Tensor) -> Tensor:
        return (t[0] * std + mean).clamp(0, 1)

    return Reconstruction(
        original=to_image(x),
        masked=to_image(masked),
        reconstruction=to_image(y),
        pasted=to_image(pasted),
        mask=pixel_mask[0, 0],
        loss=float(loss),
    )


def to_uint8(image: Tensor) -> Tensor:
    """[3, H, W] in [0, 1] -> [H, W, 3] uint8 (rounded), the pixels written to the PNG."""
    return (image * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)


def render(result: Reconstruction, notes: list[str], scale: int = 1) -> Any:
    """The figure: four panels side by side, titles above, notes below.

    Each panel is drawn `scale` times its resolution, by nearest neighbour (every pixel a scale x scale
    square, so the patches stay sharp): small models' images stay readable.
    """
    Image = _pil()
    from PIL import ImageDraw

    panels = [result.original, result.masked, result.reconstruction, result.pasted]
    h, w = (scale * n for n in panels[0].shape[1:])
    width = 4 * w + 5 * GAP
    height = TITLE_HEIGHT + h + GAP + NOTE_HEIGHT * max(1, len(notes))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (panel, title) in enumerate(zip(panels, TITLES, strict=True)):
        left = GAP + i * (w + GAP)
        pixels = to_uint8(panel)
        picture = Image.frombytes("RGB", (w // scale, h // scale), bytes(pixels.flatten().tolist()))
        canvas.paste(picture.resize((w, h), Image.Resampling.NEAREST), (left, TITLE_HEIGHT))
        draw.text((left, 4), title, fill=(0, 0, 0))
    for j, note in enumerate(notes):
        colour = (200, 0, 0) if note.startswith("UNTRAINED") else (60, 60, 60)
        draw.text((GAP, TITLE_HEIGHT + h + GAP + j * NOTE_HEIGHT), note, fill=colour)
    return canvas


def panel_box(index: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of panel `index` in a figure of size x size panels."""
    left = GAP + index * (size + GAP)
    return left, TITLE_HEIGHT, left + size, TITLE_HEIGHT + size


def run(
    image: str | os.PathLike[str] | None,
    checkpoint: str | Path | None,
    output: str | os.PathLike[str],
    *,
    model_name: str = "mae_vit_large_patch16",
    mask_ratio: float = 0.75,
    seed: int = 2,
    norm_pix: bool | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    onednn: bool = False,
) -> tuple[Path, list[str]]:
    """Build or load the model, reconstruct, write the PNG. Returns the path and the figure's notes.

    norm_pix: the model's target; None takes it from the official file name when it tells, else False.
    onednn: the float32 CPU fast path (`mae.set_onednn_linear`: each product shape by MKL or oneDNN, whichever
    times faster here); the figure's notes say what it chose. A bf16/float16 `dtype` that is slower than
    float32 on this CPU is warned about before any work.
    """
    device = device or torch.device("cpu")
    if onednn and (device.type != "cpu" or dtype != torch.float32):
        raise ValueError("--onednn is a float32 CPU fast path: drop it, or use --device cpu --dtype float32")
    warn_if_reduced_precision_is_slow(dtype, device, "--dtype", training=False)
    from .checkpoint import inspect_checkpoint
    from .models import create_model
    from .train.run_checkpoint import model_spec

    log = logging.getLogger("mae")
    notes: list[str] = []
    target = norm_pix
    if checkpoint is not None:
        info = inspect_checkpoint(checkpoint)
        spec = model_spec(info.run_args)  # a `mae pretrain` checkpoint says which model it trained
        kwargs: dict[str, Any] = {}
        if spec is not None:
            model_name, kwargs = spec
            kwargs.pop("norm_pix_loss")  # the run's target is read below, with the official names'
        else:
            model_name = info.model_name or model_name
        if target is None:
            target = bool(info.norm_pix_loss)
            source = f"from {info.target_source}" if info.norm_pix_loss is not None else "the file does not tell"
            log.info("norm_pix_loss=%s (%s)", target, source)
        model = create_model(model_name, checkpoint_path=checkpoint, norm_pix_loss=target, **kwargs)
        if info.kind == "encoder":
            notes.append("UNTRAINED DECODER: encoder-only checkpoint, the reconstruction is meaningless")
    else:
        torch.manual_seed(0)
        model = create_model(model_name, norm_pix_loss=bool(target))
        notes.append("UNTRAINED: no checkpoint, random weights; the reconstruction is meaningless")
    if model.config.norm_pix_loss:
        notes.append("norm-pix model: predictions mapped back to pixels with each patch's own mean and variance")
    photo = Path(image) if image is not None else sample_photo()
    model = model.to(device)
    if onednn:
        set_onednn_linear(model, True)
    with recording_choices() as chosen:
        result = reconstruct(model, load_image(photo, model.config.img_size), mask_ratio, seed, dtype)
    if onednn:
        # Đường nhanh: mỗi kích thước phép nhân chạy bằng thư viện nhanh hơn trên CPU này (MKL hoặc oneDNN).
        if timing_can_pay_off():
            log.info("%s", fast_path_summary(chosen))
            choice = f"oneDNN for {sum(c.onednn for c in chosen)} of {len(chosen)} product shapes, as timed here"
        else:
            choice = "all by MKL, untimed (this CPU has no AVX-512)"
        notes.append(f"linear layers by oneDNN or MKL, the fast path (within 1e-5 of the default path): {choice}")
    if dtype != torch.float32:
        notes.append(f"forward in {str(dtype).removeprefix('torch.')} autocast")
    label = Path(checkpoint).name if checkpoint is not None else f"{model_name} (random init)"
    notes.append(f"{label}, mask ratio {mask_ratio}, seed {seed}, loss {result.loss:.4f}; image {photo.name}")
    out = Path(output)
    render(result, notes, scale=max(1, 224 // model.config.img_size)).save(out, format="PNG")
    return out, notes
