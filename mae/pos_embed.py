"""Fixed 2-D sin-cos position embeddings (He et al., 2022, Appendix A.1: "we use the fixed 2D sine-cosine
position embeddings" in both encoder and decoder; Vaswani et al., 2017, §3.5 for the 1-D form).

Layout, exactly as in the official tables: for a D-channel table, channels [0, D/2) encode the patch's
*column* index and channels [D/2, D) its *row* index; each half is [sin | cos] of the position times
D/4 frequencies 1 / 10000^(i / (D/4)). Computed in float64, returned in the requested dtype. With a
class token, row 0 is all zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _sincos_1d(embed_dim: int, positions: Tensor) -> Tensor:
    """[M] float64 positions -> [M, embed_dim] table laid out as [sin | cos]."""
    # Tần số giảm dần theo cấp số nhân, giống mã hoá vị trí của Transformer gốc: omega_i = 1 / 10000^(i / (D/2)).
    omega = torch.arange(embed_dim // 2, dtype=torch.float64, device="cpu") / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # [D/2]
    out = positions[:, None] * omega[None, :]  # [M, D/2], tích ngoài vị trí x tần số
    return torch.cat([out.sin(), out.cos()], dim=1)  # [M, D]


def get_2d_sincos_pos_embed(
    embed_dim: int,
    grid_size: int | tuple[int, int],
    cls_token: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fixed 2-D sin-cos table: [h*w, D], or [1 + h*w, D] with a zero class-token row first.

    grid_size: patches per side (square) or (h, w) = (rows, columns). Patches are numbered row by row.
    embed_dim must be divisible by 4.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim ({embed_dim}) must be divisible by 4 for a 2-D sin-cos table")
    h, w = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    # Always on the CPU (a model built under `torch.device("meta")` still gets a real table).
    rows = torch.arange(h, dtype=torch.float64, device="cpu").repeat_interleave(w)  # [h*w]: 0,0,..,1,1,..
    cols = torch.arange(w, dtype=torch.float64, device="cpu").repeat(h)  # [h*w]: 0,1,..,0,1,..
    # Nửa đầu các kênh mã hoá chỉ số cột, nửa sau mã hoá chỉ số hàng (đúng bố cục của bảng gốc).
    table = torch.cat([_sincos_1d(embed_dim // 2, cols), _sincos_1d(embed_dim // 2, rows)], dim=1)
    if cls_token:
        # Token [CLS] không có vị trí trên lưới: hàng 0 bằng 0.
        table = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64, device="cpu"), table], dim=0)
    return table.to(dtype)


def interpolate_pos_embed(pos_embed: Tensor, new_grid_size: int | tuple[int, int], num_extra_tokens: int = 1) -> Tensor:
    """Resize a position table to another patch grid: [1, E + L, D] -> [1, E + h*w, D].

    The E extra (class-token) rows are kept as they are; the L patch rows, a square grid, are resized
    with bicubic interpolation (align_corners=False), as the official fine-tuning code does for other
    resolutions. Computed in float32 at least, returned in the input dtype.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"expected a position table [1, E + L, D]; got shape {tuple(pos_embed.shape)}")
    new_h, new_w = (new_grid_size, new_grid_size) if isinstance(new_grid_size, int) else new_grid_size
    dim = pos_embed.shape[-1]
    extra, patches = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    side = round(patches.shape[1] ** 0.5)
    if side * side != patches.shape[1]:
        raise ValueError(
            f"the table has {patches.shape[1]} patch rows after {num_extra_tokens} extra token(s), "
            "which is not a square grid"
        )
    if (side, side) == (new_h, new_w):
        return pos_embed
    dtype = pos_embed.dtype
    # Nội suy bicubic trên lưới patch; hàng của token [CLS] giữ nguyên.
    grid = patches.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)  # [1, D, side, side]
    grid = F.interpolate(grid, size=(new_h, new_w), mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim)  # [1, h*w, D]
    return torch.cat([extra.float(), patches], dim=1).to(dtype)
