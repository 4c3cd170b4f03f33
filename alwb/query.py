"""Query strategies over stored class probabilities, through modAL's functions.

modAL's strategies take ``(classifier, X, n_instances)`` and call ``classifier.predict_proba(X)``. The pool is
already scored, so :class:`StoredProba` is a tiny estimator whose ``predict_proba`` returns the stored
probabilities of the rows it is given: modAL computes the measure and the selection, alwb maps positions back to
item ids. Strategies return item ids, never positions, ordered most informative first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from modAL.uncertainty import (
    classifier_entropy,
    classifier_margin,
    classifier_uncertainty,
    entropy_sampling,
    margin_sampling,
    uncertainty_sampling,
)
from sklearn.base import BaseEstimator

from .errors import AlwbError, EmptyPoolError


class StoredProba(BaseEstimator):
    """Estimator adapter: ``X`` holds row positions into ``proba``; ``predict_proba`` looks them up."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = proba

    def predict_proba(self, X: npt.ArrayLike) -> np.ndarray:  # noqa: N803 - sklearn naming
        """Stored probabilities of the rows ``X[:, 0]``."""
        rows = np.asarray(X, dtype=np.int64).reshape(-1)
        return np.asarray(self.proba[rows], dtype=np.float64)


@dataclass(frozen=True)
class Strategy:
    """A named query strategy: modAL's selection function and its measure (larger = more informative)."""

    name: str
    select: Callable[..., tuple[np.ndarray, np.ndarray]] | None
    measure: Callable[[BaseEstimator, np.ndarray], np.ndarray] | None
    description: str


def _neg_margin(clf: BaseEstimator, x: np.ndarray) -> np.ndarray:
    return -classifier_margin(clf, x)


STRATEGIES: dict[str, Strategy] = {
    "entropy": Strategy("entropy", entropy_sampling, classifier_entropy, "highest predictive entropy"),
    "margin": Strategy("margin", margin_sampling, _neg_margin, "smallest gap between the two top classes"),
    "least-confidence": Strategy(
        "least-confidence", uncertainty_sampling, classifier_uncertainty, "lowest top-class probability"
    ),
    "diverse": Strategy(
        "diverse",
        margin_sampling,
        _neg_margin,
        "margin sampling spread over k-means clusters of the embeddings (no near-duplicates in a batch)",
    ),
    "typiclust": Strategy(
        "typiclust",
        None,
        None,
        "the most typical item of each dense region of the features without a label (TypiClust, cold start)",
    ),
    "auto": Strategy(
        "auto",
        None,
        None,
        "typical items first, margin sampling once a probe on the validation sample says it pays more",
    ),
    "random": Strategy("random", None, None, "uniform random baseline"),
}

#: Strategies that choose by the features alone (no model needed when the features exist before the first round).
FEATURE_STRATEGIES = frozenset({"typiclust", "auto"})


def list_strategies() -> list[str]:
    """Names accepted by :func:`select`."""
    return list(STRATEGIES)


def uncertainty_scores(proba: np.ndarray, strategy: str) -> np.ndarray:
    """Informativeness of each row (larger = more informative), computed by modAL's measure.

    ``proba``: ``(N, K)`` class probabilities. Margin scores are the negated margin.
    """
    strat = _get(strategy)
    if strat.measure is None:
        raise AlwbError(f"strategy {strategy!r} has no uncertainty score")
    rows = np.arange(len(proba)).reshape(-1, 1)
    return np.asarray(strat.measure(StoredProba(proba), rows), dtype=np.float64)


def select(
    proba: np.ndarray | None,
    item_ids: npt.ArrayLike,
    n: int,
    strategy: str,
    *,
    rng: np.random.Generator | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64] | None]:
    """Choose ``n`` items among ``item_ids`` (rows of ``proba``), most informative first.

    Returns ``(ids, scores)``; ``scores`` is ``None`` for random selection. When ``proba`` is ``None`` (no model
    yet) only ``random`` is possible: callers fall back explicitly, modAL's zeros are never used as scores.
    """
    ids = np.asarray(item_ids, dtype=np.int64)
    strat = _get(strategy)
    if ids.size == 0:
        raise EmptyPoolError("no unlabeled items left to query")
    n = int(min(n, ids.size))
    if n <= 0:
        return np.zeros(0, dtype=np.int64), None
    if strategy in FEATURE_STRATEGIES:
        raise AlwbError(f"strategy {strategy!r} chooses by features: use alwb.typicality.select_typical")
    if strat.select is None or proba is None:
        if strat.select is not None:
            raise AlwbError(f"strategy {strategy!r} needs a trained model")
        rng = rng or np.random.default_rng(0)
        return rng.choice(ids, size=n, replace=False), None
    if len(proba) != ids.size:
        raise ValueError(f"proba has {len(proba)} rows for {ids.size} items")
    rows = np.arange(ids.size).reshape(-1, 1)
    picked, _ = strat.select(StoredProba(proba), rows, n_instances=n)
    picked = np.asarray(picked, dtype=np.int64).reshape(-1)
    scores = uncertainty_scores(np.asarray(proba[picked]), strategy)
    order = np.lexsort((ids[picked], -scores))  # most informative first, ties by id
    return ids[picked][order], scores[order]


def select_diverse(
    proba: np.ndarray,
    emb: np.ndarray,
    item_ids: npt.ArrayLike,
    n: int,
    *,
    candidates_per_item: int = 10,
    seed: int = 0,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """A batch that is uncertain and diverse (Zhdanov 2019, "diverse mini-batch active learning").

    modAL's margin sampling pre-selects the ``candidates_per_item * n`` most uncertain items; scikit-learn's
    k-means groups their embeddings into ``n`` clusters, and the most uncertain item of each cluster is taken.
    Returns ``(ids, scores)`` most informative first.
    """
    from sklearn.cluster import KMeans

    ids = np.asarray(item_ids, dtype=np.int64)
    if ids.size == 0:
        raise EmptyPoolError("no unlabeled items left to query")
    n = int(min(n, ids.size))
    m = int(min(ids.size, max(n, candidates_per_item * n)))
    rows = np.arange(ids.size).reshape(-1, 1)
    cand, _ = margin_sampling(StoredProba(proba), rows, n_instances=m)
    cand = np.asarray(cand, dtype=np.int64).reshape(-1)
    scores = uncertainty_scores(np.asarray(proba[cand]), "margin")
    if n == m:
        chosen = np.arange(m)
    else:
        x = np.asarray(emb[cand], dtype=np.float64)
        labels = KMeans(n_clusters=n, n_init=1, random_state=seed).fit_predict(x)
        chosen = np.asarray(
            [np.flatnonzero(labels == c)[np.argmax(scores[labels == c])] for c in np.unique(labels)], dtype=np.int64
        )
        if chosen.size < n:  # k-means may leave clusters empty on duplicates: fill by uncertainty
            rest = np.setdiff1d(np.arange(m), chosen)
            chosen = np.concatenate([chosen, rest[np.argsort(-scores[rest], kind="stable")][: n - chosen.size]])
    out_ids, out_scores = ids[cand][chosen], scores[chosen]
    order = np.lexsort((out_ids, -out_scores))
    return out_ids[order], out_scores[order]


def _get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise AlwbError(f"unknown strategy {name!r} (choose from: {', '.join(STRATEGIES)})") from None
