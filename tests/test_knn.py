"""`mae.look.knn`: DINO's weighted k-NN against a brute-force classifier written here in numpy (every
similarity, a full sort per test image, votes summed in Python), on random features (a class smaller than
k, k from 1 to more than a class) and on features built so that neighbours and votes tie exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mae.look.knn import knn_classify


def brute_force(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, k: int, t: float, c: int
) -> tuple[float, float, int]:
    """Top-1 / top-5 (percent), as the module docstring of `mae.look.knn` says, in float64 numpy and Python;
    and the number of test images whose two first classes have equal votes."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    hit1 = hit5 = tied = 0
    for q, label in zip(test, test_labels, strict=True):
        sims = train @ q
        order = np.lexsort((np.arange(len(train)), -sims))[:k]  # most similar first; ties: first in the data
        votes = [0.0] * c
        for j in order:
            votes[train_labels[j]] += float(np.exp(sims[j] / t))
        ranking = sorted(range(c), key=lambda cls: (-votes[cls], cls))  # equal votes: lower label first
        hit1 += ranking[0] == label
        hit5 += label in ranking[: min(5, k, c)]
        tied += votes[ranking[0]] == votes[ranking[1]]
    return 100.0 * hit1 / len(test), 100.0 * hit5 / len(test), tied


def _ours(train: np.ndarray, tl: np.ndarray, test: np.ndarray, vl: np.ndarray, k: int, c: int) -> tuple[float, float]:
    r = knn_classify(
        torch.from_numpy(train).float(), torch.from_numpy(tl), torch.from_numpy(test).float(), torch.from_numpy(vl),
        k=k, temperature=0.07, num_classes=c,
    )  # fmt: skip
    return r.top1, r.top5


@pytest.mark.parametrize("k", [1, 3, 5, 20, 60])
def test_random_features_equal_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    sizes = [3, 25, 40, 12, 30, 50, 20]  # class 0 has fewer training images than k = 5, 20, 60
    tl = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    centres = rng.normal(size=(len(sizes), 16))
    train = centres[tl] * 0.6 + rng.normal(size=(len(tl), 16))
    vl = rng.integers(0, len(sizes), 300)
    test = centres[vl] * 0.6 + rng.normal(size=(300, 16))
    *expected, _ = brute_force(train, tl, test, vl, k, 0.07, len(sizes))
    assert _ours(train, tl, test, vl, k, len(sizes)) == tuple(expected)
    assert 0 < expected[0] < 100  # neither trivial nor hopeless: a wrong vote changes the figure


def test_exact_ties_equal_brute_force() -> None:
    """Features with entries +-1/2 in 4 dimensions have length 1 and dot products in {-1, -1/2, 0, 1/2, 1}, exact
    in float32 and float64: many training features tie at the k-th place, and classes tie in votes. Random
    labels, then every such vector once in every class (all classes' votes equal but for the k-th place)."""
    rng = np.random.default_rng(0)
    corners = np.array(list(itertools.product([-0.5, 0.5], repeat=4)))  # the 16 such vectors
    test = corners[rng.integers(0, 16, 200)]
    vl = rng.integers(0, 6, 200)
    random_labels = (corners[rng.integers(0, 16, 80)], rng.integers(0, 6, 80))
    every_class = (np.repeat(corners, 6, axis=0), np.tile(np.arange(6), 16))
    for (train, tl), k in itertools.product([random_labels, every_class], (1, 7, 12, 20)):
        sims = test @ train.T
        kth = -np.sort(-sims, axis=1)[:, k - 1]
        assert ((sims >= kth[:, None]).sum(1) > k).mean() > 0.5  # most rows tie across the k-th place
        top1, top5, tied = brute_force(train, tl, test, vl, k, 0.07, 6)
        assert _ours(train, tl, test, vl, k, 6) == (top1, top5), k
        if tl is every_class[1] and k in (12, 20):
            assert tied > 10, (k, tied)  # equal votes at the first place: the tie rule decides top-1


def test_top5_with_fewer_neighbours_or_classes() -> None:
    """DINO's rule: top-5 looks at the first min(5, k) classes (and here, at most the number of classes)."""
    train = np.eye(3)
    tl = np.array([0, 1, 2])
    test = np.array([[1.0, 0.2, 0.1]])
    assert _ours(train, tl, test, np.array([2]), 2, 3) == (0.0, 0.0)  # neighbours: class 0 then 1
    assert _ours(train, tl, test, np.array([2]), 3, 3) == (0.0, 100.0)


def test_bad_k_and_labels_are_refused() -> None:
    feats, labels = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="k = 5 neighbours needs"):
        knn_classify(feats, labels, feats, labels, k=5)
    with pytest.raises(ValueError, match="labels must lie in"):
        knn_classify(feats, torch.tensor([-1, -1, -1, -1]), feats, labels, k=2)
