"""The pre-norm Transformer block of ViT, used by MAE's encoder and decoder (He et al., 2022, §3;
Dosovitskiy et al., 2021, Eq. 2-3): x + Attn(LN(x)), then x + MLP(LN(x)). For fine-tuning, each residual
branch can be dropped per sample (stochastic depth, Huang et al., 2016; MAE Appendix A.1 uses it).
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


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a random subset of samples and scale the
    rest by 1 / keep_prob, so the expectation is unchanged. The identity in eval mode or at rate 0."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path rate must be in [0, 1); got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        # Mỗi mẫu giữ hoặc bỏ cả nhánh: một giá trị Bernoulli cho mỗi mẫu, phát sóng lên các chiều còn lại.
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        return x * keep.div_(keep_prob)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Block(nn.Module):
    """Pre-norm Transformer block: [B, N, C] -> [B, N, C].

    Sub-module names and order (norm1, attn, norm2, mlp) follow the official checkpoint, which also fixes
    the order in which their default initialisation draws random numbers. `drop_path` is the stochastic
    depth rate of both residual branches (no parameters, so the keys do not change).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        norm_layer: Callable[[int], nn.Module],
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        # Chuẩn hoá trước (pre-norm) rồi cộng phần dư: ổn định khi xếp chồng nhiều khối.
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
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
