"""Class imbalance: class weights, SMOTE / ADASYN on embeddings (tiny classes too), the refit linear head."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alwb.learning.balance import class_weights, fit_linear_head, resample_embeddings

PROPS = settings(deadline=None, max_examples=40, derandomize=True, database=None)

COUNTS = [[50, 5, 1], [50, 2, 2], [1, 1], [30, 1, 0], [10, 10], [12], [40, 8, 3], [50, 1, 1], [3, 1], [0, 4, 9]]


def make_data(counts: list[int], *, spread: float = 3.0, dim: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, one per class (``spread`` apart), in class order; a count of 0 leaves the class absent."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(c, k, dtype=np.int64) for k, c in enumerate(counts)])
    x = rng.normal(size=(len(y), dim)) + spread * y[:, None]
    return x.astype(np.float32), y


# ---------------------------------------------------------------------------------------------- class weights
def test_class_weights_balanced_formula() -> None:
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    w = class_weights(y, 3, power=1.0)
    np.testing.assert_allclose(w, [10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])
    assert w.dtype == np.float64
    # weighted counts are equal across present classes
    np.testing.assert_allclose(w * np.bincount(y), [10 / 3] * 3)


def test_class_weights_default_is_the_inverse_square_root_of_frequency() -> None:
    y = np.array([0] * 16 + [1] * 4 + [2] * 1)
    w = class_weights(y, 3)
    np.testing.assert_allclose(w / w[0], [1.0, 2.0, 4.0])  # 16 : 4 : 1 labels
    assert np.mean(w[y]) == pytest.approx(1.0)  # the loss keeps its scale
    # a 557 : 3 split (margin sampling on a 50:1 pool) gets a ratio of about 14, not 186
    y = np.array([0] * 557 + [1] * 3)
    w = class_weights(y, 2)
    assert w[1] / w[0] == pytest.approx(np.sqrt(557 / 3))
    np.testing.assert_allclose(class_weights(y, 2, power=0.0), [1.0, 1.0])


def test_class_weights_absent_classes_get_one() -> None:
    y = np.array([0, 0, 0, 2])
    np.testing.assert_allclose(class_weights(y, 4, power=1.0), [4 / 6, 1.0, 4 / 2, 1.0])
    w = class_weights(y, 4)
    assert w[1] == w[3] == 1.0
    assert w[2] > w[0]


def test_class_weights_empty_and_single_class() -> None:
    np.testing.assert_array_equal(class_weights(np.zeros(0, dtype=np.int64), 3), np.ones(3))
    np.testing.assert_allclose(class_weights([1, 1, 1], 2), [1.0, 1.0])
    np.testing.assert_allclose(class_weights([0, 1, 2, 0, 1, 2], 3), np.ones(3))


@PROPS
@given(
    st.integers(1, 8).flatmap(lambda k: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), max_size=80))),
    st.sampled_from([0.0, 0.5, 1.0]),
)
def test_class_weights_property(data: tuple[int, list[int]], power: float) -> None:
    k, y = data
    yy = np.array(y, dtype=np.int64)
    w = class_weights(yy, k, power=power)
    assert w.shape == (k,)
    counts = np.bincount(yy, minlength=k)
    present = counts > 0
    np.testing.assert_allclose(w[~present], 1.0)
    if present.any():
        # proportional to (1 / count) ** power, and the mean weight over the samples is 1
        expected = counts[present].astype(float) ** -power
        np.testing.assert_allclose(w[present] / w[present][0], expected / expected[0])
        assert np.mean(w[yy]) == pytest.approx(1.0)
        if power == 1.0:  # balanced: every present class carries the same total weight
            np.testing.assert_allclose(w[present] * counts[present], len(y) / present.sum())


# ---------------------------------------------------------------------------------------------- resampling
@pytest.mark.parametrize("method", ["smote", "adasyn"])
@pytest.mark.parametrize("counts", COUNTS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("spread", [3.0, 0.3])  # separated blobs, then overlapping ones (ADASYN really runs)
def test_resample_keeps_originals_and_raises_minorities(method: str, counts: list[int], spread: float) -> None:
    x, y = make_data(counts, spread=spread)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warnings leak out either
        xr, yr = resample_embeddings(x, y, method=method, seed=0)
    assert xr.dtype == np.float64 and yr.dtype == np.int64
    assert xr.ndim == 2 and xr.shape[1] == x.shape[1] and yr.shape == (xr.shape[0],)
    np.testing.assert_array_equal(xr[: len(y)], x.astype(np.float64))
    np.testing.assert_array_equal(yr[: len(y)], y)
    before = np.bincount(y, minlength=len(counts))
    after = np.bincount(yr, minlength=len(counts))
    assert len(after) == len(counts)  # no new class appears
    present = before > 0
    assert np.all(after[~present] == 0)
    assert np.all(after[present] >= before[present])
    majority = before.max()
    if present.sum() >= 2:
        # the majority class is never oversampled (classes of one are first lifted to two, whatever the majority;
        # ADASYN may overshoot the majority count for a minority class)
        assert after[int(before.argmax())] == max(majority, 2)
        minority = present & (before < majority)
        assert np.all(after[minority] > before[minority])
        if method == "smote":
            assert np.all(after[present] == max(majority, 2))  # SMOTE balances exactly
        else:
            assert np.all(after[present] >= 2)
    else:  # a single class: nothing to balance
        assert len(yr) == len(y)
    assert np.all(np.isfinite(xr))


@pytest.mark.parametrize("method", ["smote", "adasyn"])
@pytest.mark.parametrize("counts", [[50, 5, 1], [40, 8, 3], [30, 4], [20, 2, 6]], ids=str)
def test_synthetic_points_interpolate_within_their_class(method: str, counts: list[int]) -> None:
    x, y = make_data(counts, spread=0.5, seed=3)
    xr, yr = resample_embeddings(x, y, method=method, seed=1)
    new_x, new_y = xr[len(y) :], yr[len(y) :]
    assert len(new_y) > 0
    for k in np.unique(new_y):
        members = x[y == k].astype(np.float64)
        lo, hi = members.min(axis=0), members.max(axis=0)
        pts = new_x[new_y == k]
        assert np.all(pts >= lo - 1e-9) and np.all(pts <= hi + 1e-9), f"class {k} has points outside its box"


def test_single_example_class_is_duplicated_exactly() -> None:
    x, y = make_data([20, 1])
    xr, yr = resample_embeddings(x, y, method="smote")
    lone = x[y == 1][0].astype(np.float64)
    np.testing.assert_allclose(xr[yr == 1], np.broadcast_to(lone, (20, x.shape[1])))


def test_resample_is_seeded() -> None:
    x, y = make_data([40, 8, 3], spread=0.5)
    a = resample_embeddings(x, y, method="adasyn", seed=5)
    b = resample_embeddings(x, y, method="adasyn", seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_resample_unknown_method() -> None:
    x, y = make_data([5, 5])
    with pytest.raises(ValueError, match="smote or adasyn"):
        resample_embeddings(x, y, method="tomek")


@PROPS
@given(
    counts=st.lists(st.integers(0, 12), min_size=1, max_size=4).filter(lambda c: sum(c) > 0),
    method=st.sampled_from(["smote", "adasyn"]),
    k_neighbors=st.integers(1, 6),
)
def test_resample_property(counts: list[int], method: str, k_neighbors: int) -> None:
    x, y = make_data(counts, spread=0.7, dim=3, seed=sum(counts))
    xr, yr = resample_embeddings(x, y, method=method, k_neighbors=k_neighbors)
    np.testing.assert_array_equal(xr[: len(y)], x.astype(np.float64))
    np.testing.assert_array_equal(yr[: len(y)], y)
    before = np.bincount(y, minlength=len(counts))
    after = np.bincount(yr, minlength=len(counts))
    assert len(after) == len(counts)
    assert np.all(after >= before) and np.all(after[before == 0] == 0)
    if np.count_nonzero(before) >= 2:
        assert after[int(before.argmax())] == max(before.max(), 2)
        assert np.all(after[before > 0] >= 2)
    else:
        assert len(yr) == len(y)


# ---------------------------------------------------------------------------------------------- linear head
def predict(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.float64) @ w.T + b).argmax(axis=1)


def test_head_fits_a_separable_problem_and_never_predicts_absent_classes() -> None:
    x, y = make_data([20, 20, 0, 20], spread=4.0, dim=5)
    w, b = fit_linear_head(x, y, 4)
    assert w.shape == (4, 5) and b.shape == (4,)
    np.testing.assert_array_equal(predict(w, b, x), y)
    np.testing.assert_array_equal(w[2], 0.0)
    assert b[2] < b[[0, 1, 3]].min() - 10
    # far from the data too, the absent class never wins
    far = np.random.default_rng(1).normal(scale=100.0, size=(500, 5))
    assert 2 not in predict(w, b, far).tolist()


def test_head_binary_matches_logistic_probabilities() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = make_data([15, 25], spread=1.0, dim=3)
    w, b = fit_linear_head(x, y, 2, c=1.0)
    np.testing.assert_array_equal(predict(w, b, x), LogisticRegression(C=1.0, max_iter=2000).fit(x, y).predict(x))
    logits = x.astype(np.float64) @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(x, y).predict_proba(x)
    np.testing.assert_allclose(p, ref, atol=1e-4)


def test_head_binary_among_more_classes() -> None:
    x, y = make_data([0, 10, 0, 10], spread=4.0)
    w, b = fit_linear_head(x, y, 4)
    np.testing.assert_array_equal(predict(w, b, x), y)
    assert set(predict(w, b, np.random.default_rng(0).normal(scale=50.0, size=(300, 4))).tolist()) <= {1, 3}


def test_head_single_class() -> None:
    x, y = make_data([0, 7, 0])
    w, b = fit_linear_head(x, y, 3)
    np.testing.assert_array_equal(w, 0.0)
    assert b[1] > b[0] and b[1] > b[2]
    assert set(predict(w, b, x).tolist()) == {1}


def test_head_after_smote_predicts_the_minority() -> None:
    x, y = make_data([60, 3], spread=3.0)
    xr, yr = resample_embeddings(x, y, method="smote")
    w, b = fit_linear_head(xr, yr, 2)
    np.testing.assert_array_equal(predict(w, b, x), y)
