"""Pseudo-label choice: threshold, per-class caps relative to human labels, ordering, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alwb.experimental.semi import flat_counts
from alwb.learning.plan import Geometry
from alwb.learning.pseudo import choose_pseudo_labels

PROPS = settings(deadline=None, max_examples=40, derandomize=True, database=None)


def reference(
    proba: np.ndarray, ids: np.ndarray, counts: np.ndarray, threshold: float, cap_ratio: float, min_cap: int
) -> list[tuple[int, int, float]]:
    """Brute force: per class, confident items sorted by (confidence desc, id asc), the first ``cap`` kept."""
    chosen: list[tuple[int, int, float]] = []
    for k in range(proba.shape[1]):
        cap = max(min_cap, math.floor(cap_ratio * float(counts[k])))
        rows = [
            (-float(proba[i].max()), int(ids[i]), i)
            for i in range(len(ids))
            if int(proba[i].argmax()) == k and proba[i].max() >= threshold
        ]
        for _, item_id, i in sorted(rows)[: max(cap, 0)]:
            chosen.append((item_id, k, float(proba[i].max())))
    return sorted(chosen)


def as_rows(out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[tuple[int, int, float]]:
    ids, cls, conf = out
    return [(int(i), int(c), float(p)) for i, c, p in zip(ids, cls, conf, strict=True)]


def test_threshold_is_respected() -> None:
    proba = np.array([[0.96, 0.04], [0.94, 0.06], [0.95, 0.05], [0.02, 0.98], [0.5, 0.5]])
    ids = np.array([10, 11, 12, 13, 14])
    got_ids, got_cls, got_conf = choose_pseudo_labels(proba, ids, [100, 100], threshold=0.95)
    assert got_ids.tolist() == [10, 12, 13]  # 0.95 itself is accepted, 0.94 is not
    assert got_cls.tolist() == [0, 0, 1]
    np.testing.assert_allclose(got_conf, [0.96, 0.95, 0.98])
    assert got_ids.dtype == np.int64 and got_cls.dtype == np.int64 and got_conf.dtype == np.float64


def test_cap_is_floor_of_ratio_times_human_counts_most_confident_first_ties_by_id() -> None:
    # class 0: five confident items, two of them tied at 0.99; class 1: three confident items
    proba = np.array(
        [
            [0.97, 0.03],  # id 50
            [0.99, 0.01],  # id 40
            [0.99, 0.01],  # id 30  (tie with 40: smaller id first)
            [0.98, 0.02],  # id 20
            [0.96, 0.04],  # id 60
            [0.01, 0.99],  # id 5
            [0.03, 0.97],  # id 6
            [0.02, 0.98],  # id 7
        ]
    )
    ids = np.array([50, 40, 30, 20, 60, 5, 6, 7])
    # cap 0 = floor(0.5 * 5) = 2 -> ids 30, 40 (both 0.99; 20 at 0.98 is next); cap 1 = floor(0.5 * 3) = 1 -> id 5
    got = as_rows(choose_pseudo_labels(proba, ids, [5, 3], threshold=0.9, cap_ratio=0.5))
    assert [(i, c) for i, c, _ in got] == [(5, 1), (30, 0), (40, 0)]
    # a cap of one per class with the tie: the smaller id wins
    got = as_rows(choose_pseudo_labels(proba, ids, [1, 1], threshold=0.9, cap_ratio=1.0))
    assert [(i, c) for i, c, _ in got] == [(5, 1), (30, 0)]
    # a generous cap takes every confident item
    got = as_rows(choose_pseudo_labels(proba, ids, [100, 100], threshold=0.9))
    assert [i for i, _, _ in got] == sorted(ids.tolist())


def test_class_without_human_labels_gets_none_unless_min_cap() -> None:
    proba = np.array([[0.99, 0.01, 0.0], [0.0, 0.99, 0.01], [0.0, 0.02, 0.98], [0.0, 0.01, 0.99]])
    ids = np.array([1, 2, 3, 4])
    got_ids, got_cls, _ = choose_pseudo_labels(proba, ids, [3, 3, 0], threshold=0.9)
    assert got_ids.tolist() == [1, 2]
    assert 2 not in got_cls.tolist()
    got_ids, got_cls, _ = choose_pseudo_labels(proba, ids, [3, 3, 0], threshold=0.9, min_cap=1)
    assert got_ids.tolist() == [1, 2, 4]  # the most confident of class 2 only
    assert got_cls.tolist() == [0, 1, 2]


def test_zero_cap_ratio_chooses_nothing() -> None:
    proba = np.array([[0.99, 0.01], [0.01, 0.99]])
    got_ids, got_cls, got_conf = choose_pseudo_labels(proba, [1, 2], [10, 10], cap_ratio=0.0)
    assert got_ids.size == got_cls.size == got_conf.size == 0


def test_empty_input() -> None:
    ids, cls, conf = choose_pseudo_labels(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), [1, 2, 3])
    assert ids.shape == cls.shape == conf.shape == (0,)
    assert ids.dtype == np.int64 and cls.dtype == np.int64


def test_nothing_confident_returns_empty() -> None:
    ids, cls, conf = choose_pseudo_labels(np.full((4, 2), 0.5), [1, 2, 3, 4], [5, 5], threshold=0.9)
    assert ids.size == cls.size == conf.size == 0
    assert ids.dtype == np.int64


@pytest.mark.parametrize(
    ("proba", "ids", "counts"),
    [
        (np.zeros(3), [1, 2, 3], [1, 1, 1]),  # 1-D probabilities
        (np.zeros((3, 2)), [1, 2], [1, 1]),  # rows != ids
        (np.zeros((2, 2)), [1, 2], [1, 1, 1]),  # counts of the wrong length
        (np.zeros((2, 2)), [1, 2], [[1, 1]]),  # counts of the wrong shape
        (np.zeros((2, 2, 1)), [1, 2], [1, 1]),  # 3-D probabilities
    ],
)
def test_shape_errors(proba: np.ndarray, ids: list[int], counts: list[int]) -> None:
    with pytest.raises(ValueError):
        choose_pseudo_labels(proba, ids, counts)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
def test_threshold_out_of_range(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        choose_pseudo_labels(np.full((1, 2), 0.5), [1], [1, 1], threshold=threshold)


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int]:
    n = draw(st.integers(0, 30))
    k = draw(st.integers(1, 4))
    # coarse probabilities so that ties in confidence and threshold boundaries are common
    raw = np.array(draw(st.lists(st.integers(0, 8), min_size=n * k, max_size=n * k)), dtype=np.float64)
    raw = raw.reshape(n, k) + 1e-3
    proba = raw / raw.sum(axis=1, keepdims=True) if n else np.zeros((0, k))
    ids = np.array(draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True)), dtype=np.int64)
    counts = np.array(draw(st.lists(st.integers(0, 6), min_size=k, max_size=k)), dtype=np.int64)
    threshold = draw(st.sampled_from([0.3, 0.5, 0.6, 0.8, 0.95, 1.0]))
    cap_ratio = draw(st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0]))
    min_cap = draw(st.integers(0, 2))
    return proba, ids, counts, threshold, cap_ratio, min_cap


@PROPS
@given(problems())
def test_matches_brute_force(problem: tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int]) -> None:
    proba, ids, counts, threshold, cap_ratio, min_cap = problem
    out = choose_pseudo_labels(proba, ids, counts, threshold=threshold, cap_ratio=cap_ratio, min_cap=min_cap)
    got = as_rows(out)
    assert got == reference(proba, ids, counts, threshold, cap_ratio, min_cap)
    got_ids, got_cls, got_conf = out
    # sorted by id, a subset of the input, classes are the argmax, confidences pass the threshold
    assert np.all(np.diff(got_ids) > 0)
    assert set(got_ids.tolist()) <= set(ids.tolist())
    row = {int(i): r for r, i in enumerate(ids)}
    for i, c, p in got:
        assert c == int(proba[row[i]].argmax())
        assert p == pytest.approx(float(proba[row[i]].max())) and p >= threshold
    # per-class caps
    for k in range(proba.shape[1]):
        assert int(np.sum(got_cls == k)) <= max(min_cap, math.floor(cap_ratio * counts[k]))
        if counts[k] == 0 and min_cap == 0:
            assert k not in got_cls.tolist()
    assert got_conf.dtype == np.float64


@PROPS
@given(problems())
def test_input_order_does_not_matter(problem: tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int]) -> None:
    proba, ids, counts, threshold, cap_ratio, min_cap = problem
    perm = np.random.default_rng(len(ids)).permutation(len(ids))
    a = choose_pseudo_labels(proba, ids, counts, threshold=threshold, cap_ratio=cap_ratio, min_cap=min_cap)
    b = choose_pseudo_labels(proba[perm], ids[perm], counts, threshold=threshold, cap_ratio=cap_ratio, min_cap=min_cap)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@PROPS
@given(st.integers(0, 10_000), st.integers(1, 30), st.floats(0.1, 2.0))
def test_random_choice_takes_the_cap_from_the_whole_confident_range(seed: int, n_human: int, cap_ratio: float) -> None:
    """With an ``rng``, each class still gets exactly its cap (or all its confident items), all of them confident
    and of that class; which ones is a draw, the same for the same seed."""
    gen = np.random.default_rng(seed)
    proba = gen.dirichlet(np.full(3, 0.2), size=200)
    ids = np.arange(1000, 1200)
    counts = np.array([n_human, n_human // 2, 0])
    got = choose_pseudo_labels(proba, ids, counts, threshold=0.8, cap_ratio=cap_ratio, rng=np.random.default_rng(1))
    again = choose_pseudo_labels(proba, ids, counts, threshold=0.8, cap_ratio=cap_ratio, rng=np.random.default_rng(1))
    top = choose_pseudo_labels(proba, ids, counts, threshold=0.8, cap_ratio=cap_ratio)
    for a, b in zip(got, again, strict=True):
        np.testing.assert_array_equal(a, b)
    got_ids, got_cls, got_conf = got
    assert np.all(np.diff(got_ids) > 0)
    rows = got_ids - 1000
    np.testing.assert_array_equal(proba[rows].argmax(axis=1), got_cls)
    np.testing.assert_allclose(proba[rows].max(axis=1), got_conf)
    assert np.all(got_conf >= 0.8)
    for k in range(3):  # the same number per class as the most-confident rule
        assert (got_cls == k).sum() == (top[1] == k).sum()
    assert not (got_cls == 2).any()  # a class without human labels gets none


def test_random_choice_reaches_below_the_most_confident() -> None:
    conf = np.linspace(0.9, 0.999, 100)
    proba = np.stack([conf, 1 - conf], axis=1)
    ids = np.arange(100)
    top_ids, _, _ = choose_pseudo_labels(proba, ids, np.array([10, 10]), threshold=0.9)
    rnd_ids, _, _ = choose_pseudo_labels(proba, ids, np.array([10, 10]), threshold=0.9, rng=np.random.default_rng(0))
    assert set(top_ids) == set(range(90, 100))
    assert len(rnd_ids) == 10 and set(rnd_ids) != set(top_ids)


def test_pseudo_labels_add_steps_instead_of_taking_them_from_the_human_labels() -> None:
    from alwb.config import TrainConfig
    from alwb.learning.round import epochs_with_extra as _epochs_with_extra
    from alwb.learning.train import auto_epochs

    cfg = TrainConfig(batch_size=64, pseudo_steps=2.0)
    geo = Geometry("scratch", "smallcnn", 28, 1)
    human = auto_epochs(1000, 64, warm=True, cfg=cfg)  # 25 epochs of 16 steps
    assert human * 16 == 400
    assert _epochs_with_extra(1000, 1000, cfg, geo, init_state={}) == human
    assert _epochs_with_extra(1000, 2000, cfg, geo, init_state={}) * 32 >= 800 - 32  # twice the data, twice the steps
    assert math.ceil(800 / 79) == _epochs_with_extra(1000, 5000, cfg, geo, init_state={})  # at most twice the steps
    three = cfg.with_(pseudo_steps=3.0)
    assert math.ceil(1200 / 79) == _epochs_with_extra(1000, 5000, three, geo, init_state={})  # at most three times
    cold = auto_epochs(1000, 64, warm=False, cfg=cfg)
    assert _epochs_with_extra(1000, 1000, cfg, geo, init_state=None) == cold


# flat caps (research, alwb.experimental): one cap for every labeled class
def test_flat_caps_share_the_total_evenly_among_labeled_classes() -> None:
    # 12 confident items for each of three classes; human labels 8, 2, 0 (mean over labeled classes: 5)
    proba = np.repeat(np.eye(3) * 0.97 + 0.01, 12, axis=0)
    ids = np.arange(36)
    own = as_rows(choose_pseudo_labels(proba, ids, [8, 2, 0]))
    flat = as_rows(choose_pseudo_labels(proba, ids, flat_counts([8, 2, 0])))
    assert [sum(c == k for _, c, _ in own) for k in range(3)] == [8, 2, 0]
    assert [sum(c == k for _, c, _ in flat) for k in range(3)] == [5, 5, 0]  # the unlabeled class still gets none
    half = as_rows(choose_pseudo_labels(proba, ids, flat_counts([8, 2, 0]), cap_ratio=0.5))
    assert [sum(c == k for _, c, _ in half) for k in range(3)] == [2, 2, 0]
    # no human label anywhere: nothing, as without flat caps
    assert choose_pseudo_labels(proba, ids, flat_counts([0, 0, 0]))[0].size == 0


@PROPS
@given(problems())
def test_flat_caps_match_brute_force(problem: tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int]) -> None:
    proba, ids, counts, threshold, cap_ratio, min_cap = problem
    labeled = counts > 0
    even = np.where(labeled, counts.sum() / max(1, int(labeled.sum())), 0.0)
    got = choose_pseudo_labels(
        proba, ids, flat_counts(counts), threshold=threshold, cap_ratio=cap_ratio, min_cap=min_cap
    )
    assert as_rows(got) == reference(proba, ids, even, threshold, cap_ratio, min_cap)
