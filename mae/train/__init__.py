"""Training MAE, one concern per module, wired by thin trainers (`pretrain.py`, `finetune.py`, `linprobe.py`).

- `data`: the image folders (pre-training: ``DATA/train`` or ``DATA``; classification: ``DATA/train`` and
  ``DATA/val``), the pre-training transform and the loaders;
- `augment`: the fine-tuning (timm), linear-probe and evaluation transforms;
- `crop`: the linear probe's random resized crop (no retry loop);
- `mixup`: Mixup / CutMix (timm) and the loss that goes with them;
- `optim`: the official pre-training weight-decay groups and AdamW;
- `lars`: LARS (You et al., 2017), the linear probe's optimizer;
- `schedule`: per-iteration linear warmup, then half-cycle cosine, at the fractional epoch;
- `precision`: autocast and the gradient scaler for ``--dtype``;
- `run_checkpoint`: ``checkpoint-{epoch}.pth`` in the official layout, written atomically, and resume;
- `distributed`: DistributedDataParallel under ``torchrun`` (rank, world size, device, reductions);
- `metrics`: running averages, the progress bar and ``log.txt``;
- `log_sinks`: the per-iteration figures off a terminal (a line every ``--print_freq``) and to TensorBoard;
- `engine`: the loop every recipe shares (lr per iteration, accumulation, scaled steps);
- `engine_pretrain`, `engine_finetune`: one epoch of each (the official engines), and the evaluation;
- `runs`: what every command does around its loop (seed, output folder, checkpoints, resume, Ctrl-C);
- `flags`: official flag names, with their dashed spellings;
- `pretrain`, `finetune`, `linprobe`, `evaluate`: the commands: their flags and the trainers that wire the pieces.

Nothing here is imported by ``import mae``: torchvision, Pillow, tqdm and timm are needed only to train.
"""
