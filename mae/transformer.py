"""The pre-norm Transformer block of ViT, used by MAE's encoder and decoder (He et al., 2022, §3;
Dosovitskiy et al., 2021, Eq. 2-3): x + Attn(LN(x)), then x + MLP(LN(x)).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .attention import Attention


class Mlp(nn.Module):
    """Two linear layers with an exact (erf) GELU between them: [.., C] -> [.., C]."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()  # erf form, not the tanh approximation, as in the official model
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm Transformer block: [B, N, C] -> [B, N, C].

    Sub-module names and order (norm1, attn, norm2, mlp) follow the official checkpoint, which also fixes
    the order in which their default initialisation draws random numbers.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        # Chuẩn hoá trước (pre-norm) rồi cộng phần dư: ổn định khi xếp chồng nhiều khối.
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


def init_official(module: nn.Module) -> None:
    """The official initialisation of every Linear and LayerNorm inside `module`.

    Linear: xavier-uniform weight (following the JAX ViT), zero bias. LayerNorm: weight 1, bias 0.
    Linears are visited in registration order, so the random draws come in the official order. Meta
    tensors (a model built for its sizes only) are left alone.
    """
    for m in module.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            continue
        if isinstance(m, nn.Linear):
            # Xavier-uniform như ViT bản JAX (không dùng khởi tạo mặc định của PyTorch).
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)
