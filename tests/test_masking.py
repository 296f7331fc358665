"""Random masking invariants (for any N, L, ratio), the one global draw, and errors for bad arguments."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mae.masking import check_mask_ratio, random_masking, unshuffle

ratios = st.floats(0.0, 1.0, exclude_max=True, allow_nan=False)


def distinct_noise(n: int, length: int, seed: int) -> torch.Tensor:
    """Noise without ties: a random permutation of 0..L-1 per sample, scaled into [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(length, generator=g) for _ in range(n)]).float() / length


@given(n=st.integers(1, 4), length=st.integers(1, 64), d=st.integers(1, 5), ratio=ratios, seed=st.integers(0, 999))
def test_invariants(n: int, length: int, d: int, ratio: float, seed: int) -> None:
    x = torch.randn(n, length, d)
    noise = distinct_noise(n, length, seed)
    kept, mask, ids_restore = random_masking(x, ratio, noise)
    k = int(length * (1 - ratio))
    assert kept.shape == (n, k, d)
    assert mask.shape == (n, length) and mask.dtype == torch.float32
    assert torch.all((mask == 0) | (mask == 1))
    assert torch.all(mask.sum(1) == length - k)
    # ids_restore inverts the shuffle: sorting by noise, then by ids_restore, is the identity.
    ids_shuffle = torch.argsort(noise, dim=1)
    assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(length).expand(n, -1))
    for i in range(n):
        kept_ids = torch.nonzero(mask[i] == 0).flatten()
        # The kept set is the lowest-noise set, in ascending noise order.
        lowest = torch.topk(noise[i], k, largest=False).indices
        assert torch.equal(torch.sort(kept_ids).values, torch.sort(lowest).values)
        assert torch.equal(kept[i], x[i, ids_shuffle[i, :k]])
        if 0 < k < length:
            assert noise[i, mask[i] == 0].max() < noise[i, mask[i] == 1].min()


@given(n=st.integers(1, 4), length=st.integers(1, 64), d=st.integers(1, 5), ratio=ratios, seed=st.integers(0, 999))
def test_unshuffle_puts_every_token_back(n: int, length: int, d: int, ratio: float, seed: int) -> None:
    x = torch.randn(n, length, d)
    kept, mask, ids_restore = random_masking(x, ratio, distinct_noise(n, length, seed))
    mask_token = torch.full((1, 1, d), float("nan"))
    full = unshuffle(kept, mask_token, ids_restore)
    assert full.shape == (n, length, d)
    visible = mask == 0
    assert torch.equal(full[visible], x[visible])  # kept tokens back at their positions
    assert torch.isnan(full[~visible]).all()  # mask tokens exactly where patches were removed


def test_draws_exactly_one_rand_n_by_l_from_the_global_generator() -> None:
    x = torch.randn(3, 10, 4)
    torch.manual_seed(123)
    _, mask, ids_restore = random_masking(x, 0.6)
    after = torch.rand(1)
    torch.manual_seed(123)
    noise = torch.rand(3, 10)
    expected_after = torch.rand(1)
    _, mask2, ids2 = random_masking(x, 0.6, noise)
    assert torch.equal(mask, mask2) and torch.equal(ids_restore, ids2)
    assert torch.equal(after, expected_after)  # the generator advanced by exactly N*L values


def test_ratio_zero_keeps_everything_and_kept_count_uses_int() -> None:
    x = torch.randn(2, 196, 3)
    kept, mask, _ = random_masking(x, 0.0)
    assert kept.shape[1] == 196 and mask.sum() == 0
    kept, mask, _ = random_masking(x, 0.75)
    assert kept.shape[1] == int(196 * 0.25) == 49
    kept, _, _ = random_masking(torch.randn(1, 10, 1), 0.8)
    assert kept.shape[1] == int(10 * (1 - 0.8)) == 1  # int() truncates 1.9999999999999996, as the official code


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan"), "0.75", None, True])
def test_bad_ratio(ratio: object) -> None:
    with pytest.raises(ValueError, match="mask_ratio must be"):
        random_masking(torch.randn(1, 4, 2), ratio)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask_ratio must be"):
        check_mask_ratio(ratio)


@pytest.mark.parametrize("noise", [torch.rand(2, 5), torch.rand(3, 4), torch.rand(12), torch.rand(3, 4, 1), [0.1] * 4])
def test_noise_of_the_wrong_shape(noise: object) -> None:
    with pytest.raises(ValueError, match=r"noise must be a tensor of shape \[N, L\] = \[3, 5\]"):
        random_masking(torch.randn(3, 5, 2), 0.5, noise)  # type: ignore[arg-type]


def test_noise_on_another_device() -> None:
    with pytest.raises(ValueError, match="noise is on meta but the tokens are on cpu"):
        random_masking(torch.randn(1, 4, 2), 0.5, torch.rand(1, 4, device="meta"))
