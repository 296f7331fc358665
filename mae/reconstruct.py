"""The official demo's figure as a function and a command (He et al., 2022, Figures 2-4).

Four panels: the original image, the visible patches (removed ones shown as the mean grey), the
reconstruction, and the reconstruction with the visible patches pasted back. Images are resized to the
model's size and normalised with the statistics the checkpoint's run recorded (``args.mean``/``args.std``,
`mae.train.norm_stats`), else the ImageNet mean and std, as in the official demo. A model of other channels
than 3 reads its images in their own mode (`mae.train.image_formats`: grayscale, 16-bit, ``.npy`` bands); one
channel is drawn in grey, more than three as the chosen triple of bands (``--bands``). For a model trained
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


def load_image(path: str | os.PathLike[str], size: int, in_chans: int = 3) -> Tensor:
    """An RGB image resized to size x size (as the official demo does): [3, size, size] in [0, 1]. Other
    channel counts and ``.npy`` arrays: read in their own mode (`load_bands`)."""
    if in_chans != 3 or str(path).lower().endswith(".npy"):
        return load_bands(path, size, in_chans)
    image = _pil().open(path).convert("RGB").resize((size, size))
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.reshape(size, size, 3).permute(2, 0, 1).float() / 255.0


def load_bands(path: str | os.PathLike[str], size: int, in_chans: int) -> Tensor:
    """An image in its own mode (`mae.train.image_formats.read_image`) resized to size x size (bicubic: Pillow's
    for images, torch's antialiased one for arrays): [C, size, size] in ``ToTensor``'s scale, float32."""
    from .train.image_formats import as_unit_float, read_image, to_stored_tensor

    image = read_image(str(path), in_chans)
    if isinstance(image, Tensor):
        if tuple(image.shape[-2:]) != (size, size):
            image = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bicubic", antialias=True)[0]
        return image.float()
    if image.size != (size, size):
        image = image.resize((size, size), _pil().Resampling.BICUBIC)
    return as_unit_float(to_stored_tensor(image)).float()


@dataclass
class Reconstruction:
    """The four panels ([C, H, W] in [0, 1]), the mask ([H, W], 1 = removed) and the loss."""

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
    mean: tuple[float, ...] | list[float] = IMAGENET_MEAN,
    std: tuple[float, ...] | list[float] = IMAGENET_STD,
) -> Reconstruction:
    """Mask `image` ([C, H, W] in [0, 1], the model's size) and reconstruct it, as in the official demo.

    ``mean``/``std``: the per-channel statistics the model was trained with (ImageNet's by default). Runs on
    the model's device; `dtype` other than float32 runs the forward under autocast. The panels come back on
    the CPU, in float32.
    """
    device = next(model.parameters()).device
    channels = image.shape[0]
    mean_t = torch.tensor(mean, dtype=torch.float32).view(channels, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(channels, 1, 1)
    # Chuẩn hoá bằng đúng thống kê lúc huấn luyện: với thống kê khác (ví dụ ImageNet cho ảnh xám), đầu vào lệch
    # khỏi phân phối mô hình đã học và ảnh tái tạo bị ám màu khi đảo chuẩn hoá (facebookresearch/mae #179).
    x = ((image - mean_t) / std_t)[None]  # [1, C, H, W]
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
        y = model.unpatchify(pred)  # [1, C, H, W]
        p = model.config.patch_size
        pixel_mask = model.unpatchify(mask[..., None].repeat(1, 1, p * p * channels))  # [1, C, H, W], 1 = bị che
    # Patch bị che hiện bằng 0 sau chuẩn hoá, tức là màu xám trung bình của ImageNet.
    masked = x * (1 - pixel_mask)
    pasted = x * (1 - pixel_mask) + y * pixel_mask

    def to_image(t: Tensor) -> Tensor:
        return (t[0] * std_t + mean_t).clamp(0, 1)

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


def default_bands(channels: int) -> tuple[int, ...]:
    """The channels drawn by default: the first three (RGB for 3), the first alone in grey for 1 or 2."""
    return (0, 1, 2) if channels >= 3 else (0,)


def shown(panel: Tensor, bands: tuple[int, ...] | None = None) -> Tensor:
    """[C, H, W] -> the [3, H, W] drawn: one band in grey (repeated), or three bands as red, green, blue.
    ValueError for a band the image lacks or a count other than 1 or 3."""
    channels = panel.shape[0]
    chosen = default_bands(channels) if bands is None else tuple(bands)
    if len(chosen) not in (1, 3):
        raise ValueError(f"--bands takes 1 channel (grey) or 3 (red, green, blue); got {len(chosen)}")
    if any(not 0 <= b < channels for b in chosen):
        raise ValueError(f"--bands {','.join(map(str, chosen))}: the image has channels 0..{channels - 1}")
    picked = panel[list(chosen)]
    return picked.expand(3, -1, -1) if len(chosen) == 1 else picked


def render(result: Reconstruction, notes: list[str], scale: int = 1, bands: tuple[int, ...] | None = None) -> Any:
    """The figure: four panels side by side, titles above, notes below; the panels' ``bands`` drawn (`shown`).

    Each panel is drawn `scale` times its resolution, by nearest neighbour (every pixel a scale x scale
    square, so the patches stay sharp): small models' images stay readable.
    """
    Image = _pil()
    from PIL import ImageDraw

    panels = [shown(p, bands) for p in (result.original, result.masked, result.reconstruction, result.pasted)]
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
    bands: tuple[int, ...] | None = None,
) -> tuple[Path, list[str]]:
    """Build or load the model, reconstruct, write the PNG. Returns the path and the figure's notes.

    norm_pix: the model's target; None takes it from the official file name when it tells, else False.
    The channels and statistics are the checkpoint's (`mae.train.norm_stats.stats_from_args`: a file that records
    none is 3-channel ImageNet's); bands: the channels drawn (`shown`: one in grey, or three).
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
    from .train.norm_stats import describe, stats_from_args
    from .train.run_checkpoint import model_spec

    log = logging.getLogger("mae")
    notes: list[str] = []
    target = norm_pix
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    if checkpoint is not None:
        info = inspect_checkpoint(checkpoint)
        stats, channels = stats_from_args(info.run_args, info.in_chans)
        if stats is None:
            raise ValueError(
                f"{checkpoint} is a {channels}-channel model that records no mean/std: reconstruct a checkpoint "
                "written by `mae pretrain` (it records them)"
            )
        mean, std = tuple(stats[0]), tuple(stats[1])
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
        picture = load_image(photo, model.config.img_size, model.config.in_chans)
        result = reconstruct(model, picture, mask_ratio, seed, dtype, mean, std)
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
    if model.config.in_chans != 3 or (mean, std) != (IMAGENET_MEAN, IMAGENET_STD):
        drawn = default_bands(model.config.in_chans) if bands is None else bands
        what = "grey" if len(drawn) == 1 else "red, green, blue"
        notes.append(
            f"{model.config.in_chans} channel(s), channel(s) {','.join(map(str, drawn))} drawn as {what}; "
            f"normalised with the run's {describe(mean, std)}"
        )
    render(result, notes, scale=max(1, 224 // model.config.img_size), bands=bands).save(out, format="PNG")
    return out, notes
