"""``mae pretrain --knn_every N``: the k-NN accuracy of the encoder being trained, every N epochs, on the
data's own ``train/`` and ``val/`` class folders — an online health check that no official script has.

The protocol is `mae knn`'s (DINO's weighted k-NN, k = 20, T = 0.07, class-token features, the evaluation
transform), run on the model as it is at the end of the epoch, in eval mode, under the training's autocast.
The random number generators are saved before and restored after (the loaders draw a seed), so a run with
the check trains bit for bit as one without it. Under DDP every process computes the same figure on every
image (no collective: no process waits on another); the main process logs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from ..encoder import MAEEncoder
from .encoder_file import LoadedEncoder
from .features import extract
from .knn import NB_KNN, TEMPERATURE, knn_classify


class OnlineKnn:
    """The check's data, built and checked before training: ValueError when DATA lacks ``train/`` or ``val/``
    class folders, or has fewer training images than k."""

    def __init__(
        self, data_path: str | Path, input_size: int, in_chans: int, batch_size: int, num_workers: int
    ) -> None:
        from ..train.augment import eval_transform
        from ..train.data import build_classification_datasets

        root = Path(data_path).expanduser()
        if not (root / "train").is_dir() or not (root / "val").is_dir():
            raise ValueError(
                f"--knn_every needs --data_path {root} to hold train/ and val/ with one sub-folder of images per "
                "class (the k-NN check's labels); drop --knn_every, or add val/"
            )
        transform = eval_transform(input_size)
        self.train, self.val, self.classes = build_classification_datasets(root, transform, transform, None, in_chans)
        if len(self.train) < NB_KNN:
            raise ValueError(f"--knn_every: {root}/train has {len(self.train)} images, fewer than k = {NB_KNN}")
        self.batch_size, self.num_workers = batch_size, num_workers

    def __call__(
        self,
        model: MAEEncoder,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        autocast: Callable[[], AbstractContextManager[object]],
    ) -> dict[str, float]:
        """``{"knn_top1", "knn_top5"}`` (percent) of ``model`` now; leaves it in the mode it found it in."""
        was_training = model.training
        loaded = LoadedEncoder(model, "full", "", tuple(mean), tuple(std), "")
        common = {"batch_size": self.batch_size, "num_workers": self.num_workers, "device": device}
        try:
            # Giữ nguyên dãy số ngẫu nhiên của quá trình huấn luyện: loader của phép thử cũng rút một seed.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                train = extract(loaded, self.train, autocast=autocast, progress=False, **common)  # type: ignore[arg-type]
                val = extract(loaded, self.val, autocast=autocast, progress=False, **common)  # type: ignore[arg-type]
        finally:
            model.train(was_training)
        result = knn_classify(
            train.cls, train.labels, val.cls, val.labels, k=NB_KNN, temperature=TEMPERATURE, num_classes=self.classes
        )
        return {"knn_top1": result.top1, "knn_top5": result.top5}
