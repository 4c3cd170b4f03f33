"""alwb.insight's parts on arrays whose answers are known: thresholds, groups, leakage, outliers, out-of-sample
probabilities, cleanlab's ranking; and the verdicts store (one transaction, both backends)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from store_checks import label_history

from alwb.errors import LabelError
from alwb.insight import duplicates, label_issues, neighbours, outliers
from alwb.learning.evaluate import wilson_interval
from alwb.store import LabelRow, Store
from alwb.store.flags import Verdict


def _clusters(seed: int = 0) -> np.ndarray:
    """Unit vectors in 16-D: 40 random directions (no two close), then copies of rows 0 and 1 at small distances."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def test_threshold_is_a_fraction_of_the_median_nearest_neighbour_distance() -> None:
    d = np.array([[1.0, 2.0], [3.0, 4.0], [2.0, 9.0]], dtype=np.float32)
    thr, med = duplicates.threshold_of(d, 0.5)
    assert med == 2.0 and thr == 1.0


def test_pairs_below_the_threshold_are_grouped_and_just_above_are_not() -> None:
    x = _clusters()
    d0, _ = neighbours.knn(x, 5)
    median = float(np.median(d0[:, 0]))
    near = x[0] + 0.3 * median * _unit_orth(x[0], 1)  # 0.3 × median away from row 0
    far = x[1] + 0.7 * median * _unit_orth(x[1], 2)  # 0.7 × median away from row 1
    y = np.vstack([x, near, far]).astype(np.float32)
    d, i = neighbours.knn(y, 5)
    g = duplicates.near_duplicates(d, i, factor=0.5)
    groups = [sorted(a.tolist()) for a in g.groups]
    assert [0, 40] in groups
    assert not any(41 in a for a in groups)
    assert g.threshold == pytest.approx(0.5 * g.median)


def _unit_orth(v: np.ndarray, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed).standard_normal(v.shape).astype(np.float32)
    r -= r.dot(v) * v
    return r / np.linalg.norm(r)


def test_identical_rows_group_together_and_drop_self_survives_ties() -> None:
    x = _clusters()
    y = np.vstack([x, x[3], x[3]])  # three identical rows: 3, 40, 41
    d, i = neighbours.knn(y, 4)
    for row in range(len(y)):
        assert row not in i[row].tolist()
    g = duplicates.near_duplicates(d, i)
    assert [sorted(a.tolist()) for a in g.groups] == [[3, 40, 41]]


def test_prepare_projects_to_unit_vectors_of_reduced_dimension() -> None:
    x = np.random.default_rng(0).standard_normal((300, 200)).astype(np.float32)
    p = neighbours.prepare(x, dim=64)
    assert p.shape == (300, 64)
    assert np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)


def test_leaked_rows_are_validation_rows_with_a_training_copy() -> None:
    x = _clusters()
    y = np.vstack([x, x[5], x[6]]).astype(np.float32)  # 40 = copy of 5, 41 = copy of 6
    val, train = [40, 41, 7], [5, 8, 9]  # 6 is not a training row
    got = duplicates.leaked_rows(y, val, train, threshold=1e-3)
    assert got == {40: 5}


def test_leakage_accuracy_without_the_leaked_items() -> None:
    val = list(range(10))
    truth = {i: "a" for i in val}
    predicted = {i: ("a" if i < 8 else "b") for i in val}  # 8 of 10 right
    leak = duplicates.leakage(val, {0: 100, 1: 101, 2: 102}, truth, predicted)  # three right ones leaked
    assert leak.validation_items_with_copy == 3 and leak.validation_items == 10
    assert leak.accuracy == pytest.approx(0.8)
    assert leak.accuracy_without == pytest.approx(5 / 7)
    assert leak.interval_without == pytest.approx(wilson_interval(5, 7))
    d = leak.to_dict()
    assert set(d) >= {"validation_items_with_copy", "accuracy_without", "interval_without"}


def test_leakage_without_a_model_has_no_accuracy() -> None:
    leak = duplicates.leakage([1, 2], {1: 5}, {1: "a", 2: "a"}, {})
    assert leak.validation_items_with_copy == 1 and leak.accuracy is None and leak.accuracy_without is None


def test_outliers_are_far_above_the_usual_distance() -> None:
    rng = np.random.default_rng(0)
    d = np.sort(rng.uniform(0.9, 1.1, size=(200, 10)).astype(np.float32), axis=1)
    d[17] += 3.0
    scores = outliers.outlier_scores(d)
    assert outliers.flag_outliers(scores).tolist() == [17]
    assert scores[17] > 3.5


def test_out_of_sample_probabilities_never_see_their_own_label() -> None:
    """A class with one item: a head that had seen it would give it a high probability; out of sample it gets
    almost none, and cleanlab flags nothing on clean, separable classes."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 32)) * 4
    y = np.repeat([0, 1, 2], 30)
    x = (centres[y] + rng.standard_normal((90, 32))).astype(np.float32)
    y_odd = y.copy()
    y_odd[0] = 3  # the only item of class 3
    p = label_issues.out_of_sample_probs(x, y_odd, 4)
    assert p[0, 3] < 0.05
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-4)
    clean = label_issues.label_issues(x, y, 3)
    assert clean.rows.size == 0


def test_flipped_labels_are_flagged_first_with_the_true_class_suggested() -> None:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((4, 32)) * 6
    y = np.repeat([0, 1, 2, 3], 40)
    x = (centres[y] + rng.standard_normal((160, 32))).astype(np.float32)
    noisy = y.copy()
    flipped = [3, 50, 97, 140]
    for i in flipped:
        noisy[i] = (y[i] + 1) % 4
    found = label_issues.label_issues(x, noisy, 5)  # class 4 is never used
    assert sorted(found.rows[:4].tolist()) == flipped
    assert all(found.suggested[k] == y[r] for k, r in enumerate(found.rows[:4]))
    assert np.all(np.diff(found.score) <= 1e-9)  # most likely wrong first


# ------------------------------------------------------------------------------------------- the verdicts store
@pytest.fixture
def store(store_location: str | Path) -> Store:
    s = Store(store_location, create=True)
    s.add_classes(["cat", "dog"])
    with s.transaction():
        s.con.executemany(
            "INSERT INTO items(id, path, sha256, size, width, height, status, added_at)"
            " VALUES(?, ?, ?, 1, 8, 8, 'ok', 0)",
            [(i, f"/img/{i}.png", f"{i:064x}") for i in range(1, 6)],
        )
    s.add_labels([LabelRow(i, "cat") for i in range(1, 6)], annotator="ann")
    yield s
    s.close()


def test_verdicts_and_their_labels_are_one_transaction(store: Store) -> None:
    verdicts = [
        Verdict(1, "label", "dog", given="cat", suggested="dog", score=0.9),  # changed
        Verdict(2, "label", "cat", given="cat", suggested="dog", score=0.8),  # kept
        Verdict(3, "outlier", None, given="cat", score=4.0),  # none of these
        Verdict(4, "outlier", None, given="cat", score=5.0, remove=True),  # removed
    ]
    written = store.record_verdicts(verdicts, "rev", "b1", time.time())
    assert written == 2  # item 1 to dog, item 3 to none
    rows = store.flag_verdicts()
    assert [(r["item_id"], r["verdict"]) for r in rows] == [(1, "changed"), (2, "kept"), (3, "none"), (4, "removed")]
    assert rows[0]["label_id"] is not None and rows[1]["label_id"] is None
    cur = {r["item_id"]: r["class"] for r in store.current_labels(include_none=True)}
    assert cur[1] == "dog" and cur[2] == "cat" and cur[3] is None
    assert store.item(4)["status"] == "rejected"
    assert [r["class"] for r in label_history(store, 1)] == ["cat", "dog"]  # the history is kept


def test_a_bad_verdict_writes_nothing(store: Store) -> None:
    before = store.label_state()
    with pytest.raises(LabelError):
        store.record_verdicts(
            [Verdict(1, "label", "dog", given="cat"), Verdict(2, "label", "horse", given="cat")], "rev", "b2", 0.0
        )
    assert store.label_state() == before and store.flag_verdicts() == []
    assert store.item(1) is not None and {r["class"] for r in store.current_labels()} == {"cat"}
