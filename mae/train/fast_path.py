"""What ``--fast`` chooses for a training run on its device and precision, said in the run's "device:" line.

Every choice is opt-in (the default path stays bit-equal to the official engine) and held to a stated
tolerance against the default (`tests/test_fast_path.py`, `tests/test_onednn.py`):
- linear layers (float32 on the CPU): each product shape by MKL or oneDNN, whichever timed faster here
  (`mae/onednn.py`); under autocast or on a GPU the products are autocast's, untouched;
- the attention kernel: SDPA or the written-out path, timed per shape on the CPU, SDPA on CUDA
  (`mae/attention_kernel.py`); on a 2-core Xeon with AMX the written-out path won in bf16, SDPA in float32;
- the patch embedding (under bf16 or float16 autocast on the CPU): one linear product over the patches'
  pixels instead of the convolution, the same arithmetic (`mae.patch_embed.set_patch_embed_linear`): the CPU's
  reduced-precision convolution is slow (float16: 6.6 s against 24 ms for ViT-B's at batch 8, forward and
  backward); by rule, not timed (timing the slow convolution would itself take seconds);
- AdamW by PyTorch's fused kernel (`mae.train.optim.set_fused_adamw`; LARS, the linear probe's optimizer, has
  none): ViT-B's step took 0.085 s against 0.35 s by the default implementation on that CPU.
``torch.compile`` stays its own flag (``--compile``): compiling takes minutes on a small CPU, and pays only
over long runs (`benchmarks/README.md`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..attention_kernel import AttentionTiming, choose_attention
from ..masking import kept_count
from ..onednn import set_onednn_linear
from ..patch_embed import set_patch_embed_linear
from .optim import set_fused_adamw


@dataclass(frozen=True)
class FastPath:
    """The choices ``--fast`` made for one run (all off: the default path)."""

    enabled: bool = False
    onednn: bool = False
    attention: tuple[AttentionTiming, ...] = ()
    patch_embed_linear: bool = False
    fused_adamw: bool = False

    def describe(self) -> str:
        """``"; --fast: ..."`` for the run's device line ("" without ``--fast``)."""
        if not self.enabled:
            return ""
        parts = []
        if self.onednn:
            parts.append("linear layers by MKL or oneDNN per product shape (timed at first use)")
        if self.attention:
            parts.append(f"attention {attention_summary(self.attention)}")
        if self.patch_embed_linear:
            parts.append("patch embedding as one linear product")
        parts.append("fused AdamW" if self.fused_adamw else "the optimizer unchanged (it has no fused kernel)")
        return "; --fast: " + ", ".join(parts)


def attention_summary(timings: tuple[AttentionTiming, ...]) -> str:
    """``"written out (timed: 0.35x, 0.44x SDPA's time)"``: the kernel chosen, and why."""
    written = sum(t.written_out for t in timings)
    kind = "written out" if written == len(timings) else "SDPA" if not written else "written out where faster"
    ratios = [t.written_s / t.fused_s for t in timings if t.written_s is not None and t.fused_s]
    if not ratios:
        return f"{kind} (the rule on a GPU)"
    shown = ", ".join(f"{r:.2f}x" for r in ratios)
    return f"{kind} (timed: the written-out path took {shown} SDPA's time)"


def mae_tokens(num_patches: int, mask_ratio: float) -> dict[str, int]:
    """The sequence lengths of an MAE's attentions: the encoder sees the class token and the kept patches,
    the decoder the class token and every patch."""
    return {"blocks": 1 + kept_count(num_patches, mask_ratio), "decoder_blocks": 1 + num_patches}


def classifier_tokens(num_patches: int) -> dict[str, int]:
    """The sequence length of a ViT classifier's attentions: the class token and every patch."""
    return {"blocks": 1 + num_patches}


def apply_fast_path(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    enabled: bool,
    device: torch.device,
    dtype: torch.dtype,
    batch: int,
    tokens: Mapping[str, int],
) -> FastPath:
    """Make ``--fast``'s choices for ``model`` and ``optimizer`` (in place) and return them. Without
    ``enabled`` nothing changes, except that the optimizer keeps its default implementation across a resume
    (a checkpoint written with ``--fast`` would otherwise switch it to the fused kernel)."""
    if not enabled:
        set_fused_adamw(optimizer, False)
        return FastPath()
    onednn = device.type == "cpu" and dtype == torch.float32
    if onednn:
        set_onednn_linear(model, True)
    attention = tuple(choose_attention(model, device, dtype, batch, tokens))
    patch_linear = device.type == "cpu" and dtype != torch.float32
    set_patch_embed_linear(model, patch_linear)
    fused = set_fused_adamw(optimizer, True)
    return FastPath(True, onednn, attention, patch_linear, fused)
