"""Per-sample random masking and its inverse (He et al., 2022, §3 "Masking" and "MAE encoder/decoder").

The encoder sees only a random subset of patches. Following the official implementation, a sample's
patches are shuffled by sorting one uniform noise value per patch; the first `int(L * (1 - ratio))`
(lowest noise) are kept. The decoder undoes the shuffle after appending one shared mask token per
removed patch. With the same global seed, the mask equals the official one: exactly one
`torch.rand(N, L)` is drawn, on the device of the tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def check_mask_ratio(mask_ratio: object) -> float:
    """Return `mask_ratio` as a float, or raise ValueError unless it lies in [0, 1)."""
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)):
        raise ValueError(f"mask_ratio must be a number in [0, 1); got {mask_ratio!r}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(
            f"mask_ratio must be in [0, 1) (the fraction of patches removed; the paper uses 0.75); got {mask_ratio}"
        )
    return float(mask_ratio)


def draw_noise(n: int, length: int, device: torch.device) -> Tensor:
    """One `torch.rand(N, L)` from the global generator. Kept out of torch.compile graphs, whose own random
    numbers differ from eager ones: compiled or not, a seed gives the same (official) mask."""
    if torch.compiler.is_compiling():
        return _outside_graph()(n, length, device)
    return _rand(n, length, device)


_eager_rand: Callable[[int, int, torch.device], Tensor] | None = None


def _rand(n: int, length: int, device: torch.device) -> Tensor:
    return torch.rand(n, length, device=device)


def _outside_graph() -> Callable[[int, int, torch.device], Tensor]:
    """`_rand` wrapped by `torch.compiler.disable`, made at the first compiled call: the wrapper imports
    torch._dynamo (over a second), which `import mae` should not pay for when nothing is compiled."""
    global _eager_rand
    if _eager_rand is None:
        _eager_rand = torch.compiler.disable(_rand)  # type: ignore[no-untyped-call]
    return _eager_rand


def kept_count(length: int, mask_ratio: float) -> int:
    """How many of ``length`` patches the encoder keeps: ``int(length * (1 - mask_ratio))`` (the official rounding)."""
    return int(length * (1 - mask_ratio))


def random_masking(x: Tensor, mask_ratio: float, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a random subset of tokens per sample.

    x: [N, L, D] tokens. noise: optional [N, L] values whose ascending order decides what is kept; when
    None, one `torch.rand(N, L)` is drawn from the global generator (so a shared seed gives the official
    mask).

    Returns (x_kept [N, K, D] in shuffled order, mask [N, L] with 0 = keep and 1 = remove,
    ids_restore [N, L] with the position of each original token in the shuffled order),
    where K = int(L * (1 - mask_ratio)).
    """
    mask_ratio = check_mask_ratio(mask_ratio)
    n, length, dim = x.shape
    if noise is None:
        noise = draw_noise(n, length, x.device)  # nhiễu đều trong [0, 1)
    elif not isinstance(noise, Tensor) or tuple(noise.shape) != (n, length):
        shape = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of shape [N, L] = [{n}, {length}] (one value per patch); got {shape}")
    elif noise.device != x.device:
        raise ValueError(f"noise is on {noise.device} but the tokens are on {x.device}; move it with noise.to()")
    len_keep = kept_count(length, mask_ratio)

    # Sắp xếp nhiễu tăng dần cho từng mẫu: nhiễu nhỏ thì giữ, nhiễu lớn thì bỏ.
    ids_shuffle = torch.argsort(noise, dim=1)  # [N, L]
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # hoán vị ngược, để decoder xếp lại đúng thứ tự
    ids_keep = ids_shuffle[:, :len_keep]  # [N, K]
    x_kept = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, dim))  # [N, K, D]

    # Mặt nạ nhị phân: 0 là giữ, 1 là bỏ; tạo theo thứ tự đã xáo rồi đưa về thứ tự gốc.
    mask = torch.ones([n, length], device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)  # [N, L]
    return x_kept, mask, ids_restore


def unshuffle(x_kept: Tensor, mask_token: Tensor, ids_restore: Tensor) -> Tensor:
    """Inverse of `random_masking` for the decoder: [N, K, D] kept tokens -> [N, L, D] full sequence.

    Every removed position receives `mask_token` ([1, 1, D], shared and learned); every kept token goes
    back to its original position.
    """
    n, kept, dim = x_kept.shape
    length = ids_restore.shape[1]
    # Thêm một mask token cho mỗi patch bị bỏ, rồi hoán vị ngược để mọi token về đúng vị trí gốc.
    mask_tokens = mask_token.repeat(n, length - kept, 1)  # [N, L - K, D]
    x = torch.cat([x_kept, mask_tokens], dim=1)  # [N, L, D], thứ tự đã xáo
    return torch.gather(x, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, dim))  # [N, L, D]
