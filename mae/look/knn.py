"""Weighted k-nearest-neighbour classification on L2-normalised features, DINO's protocol (Caron et al.,
2021, §4.1 and ``eval_knn.py``'s ``knn_classifier``; after Wu et al., 2018).

Each test feature's k most cosine-similar training features vote for their labels, each with weight
``exp(similarity / T)`` (T = 0.07); the classes are ranked by their summed votes. Top-1: the first is the
label; top-5: the label is among the first ``min(5, k)`` (DINO's rule: a top-5 of fewer than 5
neighbours counts only the classes they name), and at most as many as there are classes.

Departure: ties are broken, where DINO leaves them to ``topk`` and ``sort`` (whose order among equal
values PyTorch does not specify): among equally similar training features at the k-th place, the ones
first in the training order are taken; among classes with equal votes, the lower label comes first. Votes
are summed in float64, neighbour by neighbour in rank order, so equal votes are equal on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

NB_KNN = 20  # DINO's recommended k ("20 is usually working the best")
TEMPERATURE = 0.07  # DINO's --temperature
CHUNK = 256  # test images per similarity product: [CHUNK, train images] at a time


@dataclass
class KnnResult:
    """Top-1 / top-5 accuracy (percent) of a k-NN classifier over ``images`` test images."""

    k: int
    top1: float
    top5: float
    images: int


def neighbours(similarity: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest similarities of each row and their columns [B, k], largest first; at a tie across the
    k-th place, the lowest columns (see the module docstring)."""
    values, indices = similarity.topk(k, dim=1, largest=True, sorted=True)
    # Hàng có giá trị bằng nhau vắt qua vị trí thứ k: chọn lại bằng sắp xếp ổn định (cột nhỏ trước).
    tied = (similarity >= values[:, -1:]).sum(dim=1) > k
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        v, i = similarity[rows].sort(dim=1, descending=True, stable=True)
        values[rows], indices[rows] = v[:, :k], i[:, :k]
    return values, indices


def class_votes(similarity: Tensor, labels: Tensor, temperature: float, num_classes: int) -> Tensor:
    """Summed votes [B, num_classes] of the neighbours (similarities [B, k], their labels [B, k])."""
    weights = similarity.double().div(temperature).exp()  # exp(sim / T): láng giềng gần hơn nặng phiếu hơn
    votes = torch.zeros(similarity.shape[0], num_classes, dtype=torch.float64, device=similarity.device)
    for j in range(similarity.shape[1]):  # cộng lần lượt theo thứ hạng: cùng phiếu thì cùng tổng, mọi thiết bị
        votes.scatter_add_(1, labels[:, j : j + 1], weights[:, j : j + 1])
    return votes


@torch.no_grad()
def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    k: int = NB_KNN,
    temperature: float = TEMPERATURE,
    num_classes: int | None = None,
) -> KnnResult:
    """DINO's weighted k-NN: features [N, D] (normalised here, L2 per row), labels [N] (0 .. classes - 1).

    ``num_classes``: default, one more than the largest label. ValueError when k is not between 1 and the
    number of training features, or a label is out of range.
    """
    n_train = train_features.shape[0]
    if not 1 <= k <= n_train:
        raise ValueError(f"k = {k} neighbours needs 1 <= k <= the {n_train} training images: lower --nb_knn")
    if temperature <= 0:
        raise ValueError(f"--temperature must be > 0; got {temperature}")
    classes = num_classes if num_classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    if train_labels.min() < 0 or max(int(train_labels.max()), int(test_labels.max())) >= classes:
        raise ValueError(f"labels must lie in 0 .. {classes - 1} (one per class); a folder without classes has none")
    train = F.normalize(train_features.float(), dim=1)  # [Ntrain, D], độ dài 1: tích vô hướng = cosine
    test = F.normalize(test_features.float().to(train.device), dim=1)
    train_labels = train_labels.to(train.device)
    test_labels = test_labels.to(train.device)
    top = min(5, k, classes)
    correct1 = correct5 = 0
    for start in range(0, test.shape[0], CHUNK):
        similarity = test[start : start + CHUNK] @ train.T  # [B, Ntrain]
        values, indices = neighbours(similarity, k)
        votes = class_votes(values, train_labels[indices], temperature, classes)
        ranking = votes.argsort(dim=1, descending=True, stable=True)[:, :top]  # cùng phiếu: nhãn nhỏ trước
        hits = ranking.eq(test_labels[start : start + CHUNK, None])
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.sum())
    n = test.shape[0]
    if n == 0:
        raise ValueError("no test images to classify")
    return KnnResult(k=k, top1=100.0 * correct1 / n, top5=100.0 * correct5 / n, images=n)
