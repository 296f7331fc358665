"""Training MAE, one concern per module, wired by thin trainers (`pretrain.py`).

- `data`: the official pre-training transform, the image folder (``DATA/train`` or ``DATA``) and its loader;
- `optim`: the official weight-decay groups and AdamW;
- `schedule`: per-iteration linear warmup, then half-cycle cosine, at the fractional epoch;
- `precision`: autocast and the gradient scaler for ``--dtype``;
- `run_checkpoint`: ``checkpoint-{epoch}.pth`` in the official layout, written atomically, and resume;
- `distributed`: DistributedDataParallel under ``torchrun`` (rank, world size, device, reductions);
- `metrics`: running averages, the progress bar and ``log.txt``;
- `engine_pretrain`: one epoch of pre-training (the official ``engine_pretrain.train_one_epoch``);
- `flags`: official flag names, with their dashed spellings;
- `pretrain`: the ``mae pretrain`` command: its flags and the trainer that wires the pieces.

Nothing here is imported by ``import mae``: torchvision, Pillow and tqdm are needed only to train.
"""
