"""The validation draw: a uniform sample without replacement, reproducible per seed whatever the order of the ids."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alwb.project import draw_validation


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(0, 10_000), min_size=0, max_size=80, unique=True),
    size=st.integers(0, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_draw_is_a_subset_of_the_asked_size_and_ignores_the_order(ids: list[int], size: int, seed: int) -> None:
    drawn = draw_validation(ids, size, seed)
    assert drawn.dtype == np.int64
    assert len(drawn) == min(size, len(ids))
    assert len(set(drawn.tolist())) == len(drawn)
    assert set(drawn.tolist()) <= set(ids)
    np.testing.assert_array_equal(draw_validation(list(reversed(ids)), size, seed), drawn)


def test_every_item_is_equally_likely() -> None:
    """2,000 seeds drawing 10 of 50 items: each item's count is Binomial(2000, 0.2) (mean 400, sd 17.9)."""
    ids = np.arange(100, 150)
    counts = np.zeros(50)
    for seed in range(2000):
        counts[draw_validation(ids, 10, seed) - 100] += 1
    assert counts.sum() == 20_000
    assert np.all(np.abs(counts - 400) < 4 * 17.9)
    chi2 = float(((counts - 400) ** 2 / 400).sum())
    assert chi2 < 85.4  # the 99.9% point of chi-square with 49 degrees of freedom


def test_seeds_give_different_draws() -> None:
    ids = np.arange(1000)
    a, b = draw_validation(ids, 50, 0), draw_validation(ids, 50, 1)
    assert len(set(a.tolist()) & set(b.tolist())) < 25
