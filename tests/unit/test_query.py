"""Query strategies: item ids (not positions), most informative first, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from alwb.errors import AlwbError, EmptyPoolError
from alwb.learning.query import list_strategies, select, uncertainty_scores

PROPS = settings(deadline=None, max_examples=50, derandomize=True, database=None)
MEASURED = ("entropy", "margin", "least-confidence")
TOL = 1e-9


def brute_scores(proba: np.ndarray, strategy: str) -> np.ndarray:
    """Informativeness by the textbook formulas (larger = more informative)."""
    p = np.asarray(proba, dtype=np.float64)
    if strategy == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    if strategy == "margin":
        top = -np.sort(-p, axis=1)
        return -(top[:, 0] - top[:, 1])
    if strategy == "least-confidence":
        return 1.0 - p.max(axis=1)
    raise AssertionError(strategy)


# Four rows on which the three strategies disagree (ids deliberately not in row order).
IDS = np.array([1003, 1010, 1001, 1042])
PROBA = np.array(
    [
        [0.50, 0.50, 0.00],  # A: margin 0,    entropy 0.693, max 0.50
        [0.40, 0.30, 0.30],  # B: margin 0.10, entropy 1.089, max 0.40
        [0.70, 0.15, 0.15],  # C: margin 0.55, entropy 0.819, max 0.70
        [0.55, 0.44, 0.01],  # D: margin 0.11, entropy 0.736, max 0.55
    ]
)
EXPECTED = {
    "entropy": [1010, 1001, 1042, 1003],  # B C D A
    "margin": [1003, 1010, 1042, 1001],  # A B D C
    "least-confidence": [1010, 1003, 1042, 1001],  # B A D C
}


def test_strategies_are_listed() -> None:
    assert set(list_strategies()) == {*MEASURED, "diverse", "typiclust", "auto", "random"}


@pytest.mark.parametrize("strategy", MEASURED)
def test_select_returns_ids_most_informative_first(strategy: str) -> None:
    ids, scores = select(PROBA, IDS, 4, strategy)
    assert ids.tolist() == EXPECTED[strategy]
    assert ids.dtype == np.int64
    order = np.argsort(-brute_scores(PROBA, strategy), kind="stable")
    assert ids.tolist() == IDS[order].tolist()
    assert scores is not None
    np.testing.assert_allclose(scores, brute_scores(PROBA, strategy)[order], atol=TOL)


@pytest.mark.parametrize("strategy", MEASURED)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_select_top_n(strategy: str, n: int) -> None:
    ids, scores = select(PROBA, IDS.tolist(), n, strategy)
    assert ids.tolist() == EXPECTED[strategy][:n]
    assert scores is not None and scores.shape == (n,)


@pytest.mark.parametrize("strategy", [*MEASURED, "random"])
def test_n_larger_than_pool_is_clipped(strategy: str) -> None:
    ids, _ = select(PROBA, IDS, 50, strategy)
    assert sorted(ids.tolist()) == sorted(IDS.tolist())


@pytest.mark.parametrize("strategy", [*MEASURED, "random"])
def test_n_zero_selects_nothing(strategy: str) -> None:
    ids, scores = select(PROBA, IDS, 0, strategy)
    assert ids.size == 0 and scores is None


@pytest.mark.parametrize("strategy", [*MEASURED, "random"])
def test_empty_pool_raises(strategy: str) -> None:
    with pytest.raises(EmptyPoolError):
        select(np.zeros((0, 3)), [], 5, strategy)
    with pytest.raises(EmptyPoolError):
        select(None, np.array([], dtype=np.int64), 5, strategy)


def test_unknown_strategy_raises() -> None:
    with pytest.raises(AlwbError, match="unknown strategy"):
        select(PROBA, IDS, 2, "bald")
    with pytest.raises(AlwbError, match="unknown strategy"):
        uncertainty_scores(PROBA, "bald")


@pytest.mark.parametrize("strategy", MEASURED)
def test_measured_strategy_without_probabilities_raises(strategy: str) -> None:
    with pytest.raises(AlwbError, match="needs a trained model") as exc:
        select(None, IDS, 2, strategy)
    assert not isinstance(exc.value, EmptyPoolError)


def test_random_has_no_uncertainty_score() -> None:
    with pytest.raises(AlwbError):
        uncertainty_scores(PROBA, "random")


def test_probabilities_must_match_the_ids() -> None:
    with pytest.raises(ValueError, match="rows"):
        select(PROBA[:3], IDS, 2, "margin")


@pytest.mark.parametrize("strategy", MEASURED)
def test_uncertainty_scores_match_numpy(strategy: str) -> None:
    np.testing.assert_allclose(uncertainty_scores(PROBA, strategy), brute_scores(PROBA, strategy), atol=TOL)


def test_random_is_distinct_ids_and_seeded() -> None:
    pool = np.arange(1000, 1100, dtype=np.int64)
    a, sa = select(None, pool, 10, "random", rng=np.random.default_rng(42))
    b, _ = select(None, pool, 10, "random", rng=np.random.default_rng(42))
    c, _ = select(None, pool, 10, "random", rng=np.random.default_rng(43))
    assert sa is None
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 10 and set(a.tolist()) <= set(pool.tolist())
    # without an rng it is still deterministic
    assert select(None, pool, 10, "random")[0].tolist() == select(None, pool, 10, "random")[0].tolist()


def test_random_ignores_probabilities() -> None:
    ids, scores = select(PROBA, IDS, 2, "random", rng=np.random.default_rng(0))
    assert scores is None
    assert len(set(ids.tolist())) == 2 and set(ids.tolist()) <= set(IDS.tolist())


# ---------------------------------------------------------------------------- properties
@st.composite
def proba_and_ids(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 30))
    k = draw(st.integers(2, 6))
    raw = draw(arrays(np.float64, (n, k), elements=st.floats(0, 1, allow_nan=False, allow_infinity=False)))
    if draw(st.booleans()):  # exact duplicate rows make exact ties
        raw[n // 2 :] = raw[: n - n // 2]
    raw = raw + 1e-6 * draw(st.booleans())  # sometimes no exact zeros
    sums = raw.sum(axis=1, keepdims=True)
    proba = np.where(sums > 0, raw / np.where(sums > 0, sums, 1), 1.0 / k)
    perm = draw(st.permutations(range(n)))
    ids = 1000 + 7 * np.asarray(perm, dtype=np.int64)
    return proba, ids


@PROPS
@given(proba_and_ids(), st.sampled_from(MEASURED), st.integers(1, 40))
def test_select_matches_brute_force(data: tuple[np.ndarray, np.ndarray], strategy: str, n: int) -> None:
    proba, ids = data
    picked, scores = select(proba, ids, n, strategy)
    expect = brute_scores(proba, strategy)
    by_id = dict(zip(ids.tolist(), expect.tolist(), strict=True))
    m = min(n, len(ids))
    assert picked.shape == (m,) and scores is not None and scores.shape == (m,)
    assert len(set(picked.tolist())) == m
    assert set(picked.tolist()) <= set(ids.tolist())
    chosen = np.array([by_id[i] for i in picked.tolist()])
    # the returned scores are the scores of the returned ids
    np.testing.assert_allclose(scores, chosen, atol=TOL)
    # most informative first, ties by id
    assert np.all(np.diff(scores) <= 0)
    for j in range(m - 1):
        if scores[j] == scores[j + 1]:
            assert picked[j] < picked[j + 1]
    # nothing left out is more informative than anything chosen (up to rounding)
    rest = [v for i, v in by_id.items() if i not in set(picked.tolist())]
    if rest:
        assert max(rest) <= chosen.min() + TOL
    # the chosen scores are the top-m scores
    np.testing.assert_allclose(np.sort(chosen)[::-1], np.sort(expect)[::-1][:m], atol=TOL)


@PROPS
@given(proba_and_ids(), st.sampled_from(MEASURED))
def test_uncertainty_scores_property(data: tuple[np.ndarray, np.ndarray], strategy: str) -> None:
    proba, _ = data
    got = uncertainty_scores(proba, strategy)
    assert got.shape == (len(proba),)
    np.testing.assert_allclose(got, brute_scores(proba, strategy), atol=TOL)
    k = proba.shape[1]
    if strategy == "entropy":
        assert np.all(got >= -TOL) and np.all(got <= np.log(k) + TOL)
    elif strategy == "margin":
        assert np.all(got <= TOL) and np.all(got >= -1 - TOL)
    else:
        assert np.all(got >= -TOL) and np.all(got <= 1 - 1 / k + TOL)


@PROPS
@given(st.integers(1, 60), st.integers(0, 80), st.integers(0, 2**32 - 1))
def test_random_property(pool_size: int, n: int, seed: int) -> None:
    pool = 5000 + 3 * np.arange(pool_size, dtype=np.int64)[::-1]
    a, sa = select(None, pool, n, "random", rng=np.random.default_rng(seed))
    b, _ = select(None, pool, n, "random", rng=np.random.default_rng(seed))
    assert sa is None
    assert a.tolist() == b.tolist()
    assert len(a) == min(n, pool_size)
    assert len(set(a.tolist())) == len(a)
    assert set(a.tolist()) <= set(pool.tolist())


def test_the_cli_knows_every_strategy_without_importing_modal() -> None:
    from alwb.config import STRATEGY_NAMES

    assert tuple(list_strategies()) == STRATEGY_NAMES


def test_every_strategy_is_one_table_entry_with_a_pick() -> None:
    """One interface: each registered strategy says what it needs and picks from Candidates (ids, scores)."""
    from alwb.learning.query import STRATEGIES, Candidates, strategy

    rng = np.random.default_rng(0)
    ids = np.arange(100, 140, dtype=np.int64)
    proba = rng.dirichlet(np.ones(3), size=ids.size)
    emb = rng.normal(size=(ids.size, 4))
    feats = (ids, emb, None)
    for name, strat in STRATEGIES.items():
        assert strat.needs in ("model", "features", "nothing") and callable(strat.pick), name
        c = Candidates(ids, np.random.default_rng(1), proba=proba, embed=lambda: emb, features=feats)
        got, scores = strat.pick(c, 5)
        assert len(got) == 5 and len(set(got.tolist())) == 5 and set(got.tolist()) <= set(ids.tolist()), name
        assert (scores is None) == (name == "random"), name
    # margin picks what select() picks; auto follows the project's handover
    c = Candidates(ids, np.random.default_rng(1), proba=proba)
    assert strategy("margin").pick(c, 5)[0].tolist() == select(proba, ids, 5, "margin")[0].tolist()
    handed = Candidates(ids, np.random.default_rng(1), proba=proba, auto_use="margin")
    assert strategy("auto").pick(handed, 5)[0].tolist() == select(proba, ids, 5, "margin")[0].tolist()
    with pytest.raises(AlwbError, match="unknown strategy"):
        strategy("oracle")
