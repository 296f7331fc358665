"""Gradient checkpointing (Chen et al., 2016, "Training Deep Nets with Sublinear Memory Cost"): keep only each
Transformer block's input in the forward, and run the block again in the backward to get what its gradient
needs. `--grad_checkpointing` of `mae pretrain` / `mae finetune`; `model.set_grad_checkpointing(True)` (timm's
and transformers' name) on the encoder, the decoder, the MAE or the classifier.

Every block is wrapped in `torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)`, the variant torch
recommends (it works with DDP's hooks, `no_sync` accumulation and `torch.compile`):
- stochastic depth (`DropPath`) draws its keep/drop mask in the forward: `preserve_rng_state=True` saves the
  generator's state before each block and restores it for the recompute, so the recompute draws the same
  mask, and the generator after the backward is where the plain run leaves it;
- the recompute runs under the autocast of the forward (checkpoint records the CPU and device autocast state
  and re-enters it), so under bf16 it computes in bf16 as the forward did.
The recompute runs the same kernels on the same inputs, so the gradients are bit for bit those of the plain run
(`tests/test_grad_checkpointing.py`, float32 and bf16 autocast on the CPU, with accumulation and DDP; under
`torch.compile` too, checked by hand on a tiny model). Not checked here: CUDA, where kernels that are not
deterministic from run to run (atomic adds in some backward kernels) differ between two plain runs as much.

Only when autograd records (`torch.is_grad_enabled()`): an evaluation under `no_grad` runs the blocks plainly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def run_blocks(blocks: Iterable[nn.Module], x: Tensor, checkpointed: bool) -> Tensor:
    """Apply ``blocks`` in order to ``x`` [N, T, C]; with ``checkpointed``, each block recomputed in the backward."""
    if not (checkpointed and torch.is_grad_enabled()):
        for blk in blocks:
            x = blk(x)
        return x
    for blk in blocks:
        # Đánh đổi bộ nhớ lấy tính toán: chỉ giữ đầu vào của khối, không giữ các activation bên trong (attention,
        # MLP); khi backward, khối được chạy lại từ đầu vào đó (thêm khoảng một lượt forward) để có lại chúng.
        # preserve_rng_state: lượt chạy lại rút cùng mặt nạ drop path như lượt forward.
        x = checkpoint(blk, x, use_reentrant=False, preserve_rng_state=True)
    return x


class GradCheckpointing:
    """The model-level switch, mixed into `MAEEncoder` and `MAEDecoder` (one switch for both halves of an MAE)."""

    grad_checkpointing: bool = False  # off: every activation kept for the backward, as the official models

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every Transformer block (encoder and decoder) in the backward instead of storing its
        activations: much less memory for about one more forward of the blocks (timm's method name)."""
        self.grad_checkpointing = enable
