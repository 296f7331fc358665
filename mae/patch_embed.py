"""Images to patches and back (He et al., 2022, §3 "Masking"; Dosovitskiy et al., 2021, §3.1).

`PatchEmbed` is the linear projection of non-overlapping patches, written as a Conv2d whose kernel and
stride are the patch size. `patchify` / `unpatchify` cut an image into flat patch vectors in the
official pixel layout (row of patches, column of patches; inside a patch: row, column, channel), which is
the layout of the reconstruction target and of the decoder's prediction.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def check_images(
    imgs: object,
    in_chans: int | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    floating: bool = True,
) -> None:
    """Raise a ValueError (TypeError for a non-tensor) that says what is wrong with a batch of images.

    imgs: [N, C, H, W], floating point unless `floating=False`. Each other check runs when its argument
    is given: `in_chans` channels, `patch_size` divides H and W, and H = W = `img_size` (the size the model
    was built for).
    """
    if not isinstance(imgs, Tensor):
        raise TypeError(f"expected a torch.Tensor of images [N, C, H, W]; got {type(imgs).__name__}")
    if imgs.ndim != 4:
        hint = " For a single image use imgs.unsqueeze(0)." if imgs.ndim == 3 else ""
        raise ValueError(
            f"expected a batch of images with 4 dimensions [N, C, H, W]; got shape {tuple(imgs.shape)} "
            f"({imgs.ndim} dimensions).{hint}"
        )
    if floating and not imgs.is_floating_point():
        raise ValueError(
            f"expected floating-point images (normalised pixels); got dtype {imgs.dtype}. "
            "Convert with imgs.float() and normalise (ImageNet mean/std) first."
        )
    c, h, w = imgs.shape[1:]
    if in_chans is not None and c != in_chans:
        raise ValueError(
            f"expected {in_chans} channels (in_chans={in_chans}); got {c} in shape {tuple(imgs.shape)}. "
            "Check the channel order is [N, C, H, W], or build the model with in_chans matching your data."
        )
    if patch_size is not None and (h % patch_size or w % patch_size):
        raise ValueError(
            f"image size {h}x{w} is not divisible by the patch size {patch_size}; "
            f"crop or resize to a multiple of {patch_size}"
        )
    if img_size is not None and (h, w) != (img_size, img_size):
        if h != w:
            raise ValueError(
                f"expected square {img_size}x{img_size} images; got {h}x{w}. Non-square inputs are not "
                "supported (the position table is a square grid): resize or center-crop to a square."
            )
        raise ValueError(
            f"expected {img_size}x{img_size} images (the model's img_size); got {h}x{w}. "
            f"Build the model for this size instead: mae.create_model(name, img_size={h})."
        )


class PatchEmbed(nn.Module):
    """Split an image into patches and project each to `embed_dim`: [N, C, H, W] -> [N, L, D].

    Patches are numbered row by row (L = H/p * W/p). Attribute names follow the official/timm module
    (`proj`, `patch_size` as a pair, `num_patches`) so official code that reads them keeps working.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        # Một phép chiếu tuyến tính cho mỗi patch, viết gọn bằng Conv2d có kernel = stride = kích thước patch.
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.as_linear = False  # True: the same projection as one product (`set_patch_embed_linear`)

    def forward(self, imgs: Tensor) -> Tensor:
        """imgs: [N, C, H, W] -> patch embeddings [N, L, D]."""
        check_images(imgs, self.in_chans, self.img_size[0], self.patch_size[0])
        if self.as_linear:
            return self._by_linear(imgs)
        x = self.proj(imgs)  # [N, D, H/p, W/p]
        return x.flatten(2).transpose(1, 2)  # [N, L, D]

    def _by_linear(self, imgs: Tensor) -> Tensor:
        """The convolution's arithmetic as one linear product over the patches' pixels, in the kernel's own
        layout (channel, row, column): the same sums, in another order (float32 rounding apart)."""
        n, c, h, w = imgs.shape
        p = self.patch_size[0]
        x = imgs.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # [N, h, w, C, p, p]
        x = x.reshape(n, (h // p) * (w // p), c * p * p)  # [N, L, C*p*p]
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)  # [D, C*p*p]
        return F.linear(x, weight, self.proj.bias)  # [N, L, D]


def set_patch_embed_linear(module: nn.Module, enabled: bool) -> None:
    """Switch every `PatchEmbed` inside `module` between its convolution (False, the default and the official
    module) and the same projection as one linear product (True).

    Why: PyTorch's CPU convolution under float16 autocast is very slow where a product is not (measured on a
    2-core Xeon with AMX: ViT-B's patch embedding, batch 8, forward and backward, 6.6 s by the convolution
    against 24 ms as a product; under bf16 34 ms against 10 ms). The parameters and the checkpoint keys stay
    those of the convolution.
    """
    for m in module.modules():
        if isinstance(m, PatchEmbed):
            m.as_linear = enabled


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """Cut images into flat patches: [N, C, H, W] -> [N, L, p*p*C].

    Works for any channel count and any H, W divisible by p (H and W may differ). Patches are numbered
    row by row; inside a patch the layout is (row, column, channel), as in the official code.
    """
    check_images(imgs, patch_size=patch_size, floating=False)
    p = patch_size
    n, c, h, w = imgs.shape
    x = imgs.reshape(n, c, h // p, p, w // p, p)  # [N, C, h, p, w, p]
    x = x.permute(0, 2, 4, 3, 5, 1)  # [N, h, w, p, p, C]
    return x.reshape(n, (h // p) * (w // p), p * p * c)  # [N, L, p*p*C]


def unpatchify(x: Tensor, patch_size: int, grid_size: tuple[int, int] | None = None) -> Tensor:
    """Inverse of `patchify`: [N, L, p*p*C] -> [N, C, h*p, w*p].

    grid_size: patches per column and per row (h, w); default: a square grid, h = w = sqrt(L).
    The channel count is read from the last dimension.
    """
    if not isinstance(x, Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected patches [N, L, p*p*C] (3 dimensions); got {shape}")
    p = patch_size
    n, length, patch_dim = x.shape
    if patch_dim % (p * p):
        raise ValueError(
            f"last dimension {patch_dim} is not p*p*C for patch size {p} (p*p = {p * p} does not divide it)"
        )
    c = patch_dim // (p * p)
    if grid_size is None:
        side = round(length**0.5)
        if side * side != length:
            raise ValueError(f"{length} patches do not form a square grid; pass grid_size=(h, w)")
        grid_size = (side, side)
    h, w = grid_size
    if h * w != length:
        raise ValueError(f"grid_size {h}x{w} = {h * w} patches, but x has {length}")
    x = x.reshape(n, h, w, p, p, c)  # [N, h, w, p, p, C]
    x = x.permute(0, 5, 1, 3, 2, 4)  # [N, C, h, p, w, p]
    return x.reshape(n, c, h * p, w * p)
