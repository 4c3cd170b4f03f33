"""TypiClust selection and the validation probe that hands ``auto`` over to margin sampling."""

from __future__ import annotations

import numpy as np
import pytest

from alwb.learning.query import select
from alwb.learning.typicality import MIN_PROBE_VAL, probe_handover, select_typical, typicality

CENTRES = np.array([[8.0, 0.0], [0.0, 8.0], [-8.0, -8.0]])


def blobs(n_per: int, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + spread * rng.standard_normal((n_per, 2)) for c in CENTRES])
    return x, np.repeat(np.arange(len(CENTRES)), n_per)


def test_typicality_is_highest_in_the_dense_middle() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal((200, 2)) * 0.2, [[5.0, 5.0]]])  # a dense cloud and one outlier
    t = typicality(x, k=10)
    assert t.argmin() == 200
    assert np.linalg.norm(x[t.argmax()]) < 0.3


def test_one_typical_item_per_blob_near_its_centre() -> None:
    # typicality is measured on L2-normalised features (as TypiClust does), so the blobs are far apart in angle
    x, y = blobs(60)
    ids = np.arange(1000, 1000 + len(x))
    picked, typ = select_typical(x, ids, 3, seed=0)
    assert picked.dtype == np.int64 and len(set(picked.tolist())) == 3
    rows = picked - 1000
    assert sorted(y[rows].tolist()) == [0, 1, 2]  # every dense region once
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for r in rows:  # each pick lies near its blob's middle (in the normalised space)
        same = unit[y == y[r]]
        assert np.linalg.norm(unit[r] - same.mean(0)) < np.median(np.linalg.norm(same - same.mean(0), axis=1))
    assert np.all(np.isfinite(typ))


def test_a_large_pool_is_clustered_on_a_sample_and_still_gives_one_typical_item_per_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over FIT_ROWS rows, clusters and typicality come from a PCA of a seeded sample (E56): the picks still cover
    every dense region once, each near its middle, and the same seed gives the same picks."""
    import alwb.learning.typicality as typ

    monkeypatch.setattr(typ, "FIT_ROWS", 500)
    monkeypatch.setattr(typ, "FIT_DIMS", 8)
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((4, 32)) * 6
    y = np.repeat(np.arange(4), 400)
    x = centres[y] + rng.standard_normal((len(y), 32))
    reduced, fit_rows = typ._reduced(typ._normalise(x), seed=0)
    assert reduced.shape == (len(x), 8) and fit_rows is not None and len(fit_rows) == 500
    picked, t = select_typical(x, np.arange(len(x)), 4, seed=0)
    assert sorted(y[picked].tolist()) == [0, 1, 2, 3] and np.all(np.isfinite(t))
    for r in picked:  # each pick lies near its region's middle in the features typicality was measured on
        same = reduced[y == y[r]]
        assert np.linalg.norm(reduced[r] - same.mean(0)) < np.median(np.linalg.norm(same - same.mean(0), axis=1))
    assert select_typical(x, np.arange(len(x)), 4, seed=0)[0].tolist() == picked.tolist()
    # a pool within the limit is clustered on its own features, as before
    small, none = typ._reduced(typ._normalise(x[:400]), seed=0)
    assert none is None and small.shape == (400, 32)


def test_labeled_regions_are_visited_last() -> None:
    x, y = blobs(60)
    ids = np.arange(len(x))
    # every item of the first blob is labeled already: each cluster there holds labels, the others hold none
    picked, _ = select_typical(x, ids, 3, labeled_emb=x[y == 0], seed=0)
    assert 0 not in y[picked].tolist() and set(y[picked].tolist()) == {1, 2}


def test_never_the_same_item_twice_and_n_capped_by_the_pool() -> None:
    x, _ = blobs(4)
    ids = np.arange(12)
    picked, _ = select_typical(x, ids, 50, seed=3)
    assert sorted(picked.tolist()) == list(range(12))
    assert select_typical(x, ids, 0)[0].size == 0
    with pytest.raises(ValueError):
        select_typical(x, ids[:5], 2)


def test_deterministic_for_a_seed() -> None:
    x, _ = blobs(40, seed=2)
    ids = np.arange(len(x))
    assert np.array_equal(select_typical(x, ids, 7, seed=5)[0], select_typical(x, ids, 7, seed=5)[0])


def test_model_free_strategies_are_refused_by_select() -> None:
    from alwb.errors import AlwbError

    with pytest.raises(AlwbError, match="features"):
        select(np.full((3, 2), 0.5), [1, 2, 3], 1, "typiclust")


def test_probe_needs_enough_validation_items() -> None:
    x, y = blobs(20)
    h = probe_handover(
        x[:10], y[:10], x[10 : 10 + MIN_PROBE_VAL - 1], y[10 : 10 + MIN_PROBE_VAL - 1], 10, num_classes=3
    )
    assert h.use == "typiclust" and h.typical_gain is None and "needs" in h.reason


def test_probe_measures_both_batches_on_the_validation_items() -> None:
    # overlapping classes: one label per class leaves the boundary wrong, so a batch is worth something
    x, y = blobs(150, seed=4, spread=5.0)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train = order[:6]
    val = order[6:306]
    h = probe_handover(x[train], y[train], x[val], y[val], 20, num_classes=3, seed=0)
    assert h.use in ("typiclust", "margin") and h.n_val == 300
    assert h.typical_gain is not None and h.margin_gain is not None
    assert (h.use == "margin") == (h.margin_gain >= h.typical_gain)
    assert "validation probe (300 items)" in h.reason
    again = probe_handover(x[train], y[train], x[val], y[val], 20, num_classes=3, seed=0)
    assert again == h
    assert set(h.to_dict()) == {"use", "typical_gain", "margin_gain", "n_val", "reason"}
