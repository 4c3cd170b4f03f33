"""Held-out metrics (Wilson interval, macro-F1, balanced accuracy, recalls, confusion) and class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from alwb.learning.evaluate import classification_metrics, wilson_interval

PROPS = settings(deadline=None, max_examples=50, derandomize=True, database=None)
pytestmark = [
    pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true"),
    pytest.mark.filterwarnings("ignore:A single label was found"),
]


def wilson_formula(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    z = norm.ppf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


# ---------------------------------------------------------------------------- Wilson interval
def test_wilson_known_values() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=5e-4)
    assert high == pytest.approx(0.9433, abs=5e-4)
    low, high = wilson_interval(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=5e-4)


def test_wilson_extremes() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=5e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(0.7225, abs=5e-4)


def test_wilson_empty_is_nan() -> None:
    low, high = wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)


def test_wilson_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


def test_wilson_wider_at_higher_confidence() -> None:
    lo95, hi95 = wilson_interval(30, 50)
    lo99, hi99 = wilson_interval(30, 50, confidence=0.99)
    assert lo99 < lo95 < 0.6 < hi95 < hi99
    assert (lo99, hi99) == pytest.approx(wilson_formula(30, 50, 0.99), abs=1e-9)


@PROPS
@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_property(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert low < high
    assert (low, high) == pytest.approx(wilson_formula(k, n), abs=1e-9)
    # symmetric: failures mirror successes
    low2, high2 = wilson_interval(n - k, n)
    assert (low2, high2) == pytest.approx((1 - high, 1 - low), abs=1e-9)


# ---------------------------------------------------------------------------- classification metrics
CLASSES = ["cat", "dog", "bird", "fish"]


def test_metrics_worked_example() -> None:
    y_true = [0, 0, 0, 1, 1, 2]  # no "fish" at all
    y_pred = [0, 0, 1, 1, 3, 2]  # one "fish" prediction
    m = classification_metrics(y_true, y_pred, CLASSES)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert (m["accuracy_low"], m["accuracy_high"]) == pytest.approx(wilson_interval(4, 6))
    assert m["recall"] == {"cat": pytest.approx(2 / 3), "dog": 0.5, "bird": 1.0, "fish": None}
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro"))
    assert m["confusion"] == [
        [2, 1, 0, 0],
        [0, 1, 0, 1],
        [0, 0, 1, 0],
        [0, 0, 0, 0],
    ]


def test_metrics_confusion_includes_classes_absent_from_both() -> None:
    m = classification_metrics([1, 1], [1, 1], CLASSES)
    assert np.asarray(m["confusion"]).shape == (4, 4)
    assert m["confusion"][1][1] == 2 and sum(map(sum, m["confusion"])) == 2
    assert m["recall"] == {"cat": None, "dog": 1.0, "bird": None, "fish": None}
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["balanced_accuracy"] == 1.0


def test_metrics_empty() -> None:
    m = classification_metrics([], [], CLASSES)
    assert m["n"] == 0
    for key in ("accuracy", "accuracy_low", "accuracy_high", "macro_f1", "balanced_accuracy"):
        assert m[key] is None
    assert m["recall"] == {c: None for c in CLASSES}


def test_metrics_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], [0], CLASSES)


def test_metrics_are_json_able() -> None:
    import json

    m = classification_metrics(np.array([0, 1, 2]), np.array([0, 2, 2]), CLASSES)
    assert json.loads(json.dumps(m)) == m


@PROPS
@given(
    st.integers(2, 6).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60),
        )
    )
)
def test_metrics_match_sklearn(data: tuple[int, list[tuple[int, int]]]) -> None:
    k, pairs = data
    classes = [f"c{i}" for i in range(k)]
    yt = np.array([t for t, _ in pairs])
    yp = np.array([p for _, p in pairs])
    m = classification_metrics(yt, yp, classes)
    present = sorted(set(yt.tolist()))
    assert m["n"] == len(pairs)
    assert m["accuracy"] == pytest.approx(accuracy_score(yt, yp))
    assert m["accuracy_low"] <= m["accuracy"] <= m["accuracy_high"]
    assert m["macro_f1"] == pytest.approx(f1_score(yt, yp, labels=present, average="macro", zero_division=0))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(yt, yp))
    cm = np.asarray(m["confusion"])
    assert cm.shape == (k, k)
    np.testing.assert_array_equal(cm, confusion_matrix(yt, yp, labels=list(range(k))))
    assert cm.sum() == len(pairs)
    for i, c in enumerate(classes):
        if i in present:
            assert m["recall"][c] == pytest.approx(np.mean(yp[yt == i] == i))
        else:
            assert m["recall"][c] is None
    recalls = [r for r in m["recall"].values() if r is not None]
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls))
