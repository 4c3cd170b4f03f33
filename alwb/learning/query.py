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

from ..errors import AlwbError, EmptyPoolError


class StoredProba(BaseEstimator):
    """Estimator adapter: ``X`` holds row positions into ``proba``; ``predict_proba`` looks them up."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = proba

    def predict_proba(self, X: npt.ArrayLike) -> np.ndarray:  # noqa: N803 - sklearn naming
        """Stored probabilities of the rows ``X[:, 0]``."""
        rows = np.asarray(X, dtype=np.int64).reshape(-1)
        return np.asarray(self.proba[rows], dtype=np.float64)


Picked = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64] | None]


@dataclass
class Candidates:
    """What a strategy chooses from: the unlabeled pool items and what is known of them (rows aligned with ``ids``).

    ``proba``: the model's class probabilities (strategies that need a model); ``embed``: the scores' embeddings of
    the same rows, computed only when asked (``diverse``); ``features``: ``(ids kept, their embeddings, the labeled
    items' embeddings)`` of :meth:`alwb.project.Project.features` (strategies that choose by features);
    ``auto_use``: what ``auto`` uses now (the project's handover, :meth:`alwb.project.Project.auto_strategy`).
    """

    ids: npt.NDArray[np.int64]
    rng: np.random.Generator
    proba: np.ndarray | None = None
    embed: Callable[[], np.ndarray] | None = None
    features: tuple[npt.NDArray[np.int64], np.ndarray, np.ndarray | None] | None = None
    auto_use: str = "typiclust"


@dataclass(frozen=True)
class Strategy:
    """A named query strategy: ``pick(candidates, n)`` returns ``(ids, scores)``, most informative first.

    ``needs``: ``model`` (class probabilities), ``features`` (embeddings of the pool, possible before any model)
    or ``nothing``. ``modal`` / ``measure``: modAL's selection function and its measure (larger = more
    informative) for the uncertainty strategies, used by :func:`select` and :func:`uncertainty_scores`.
    """

    name: str
    needs: str
    pick: Callable[[Candidates, int], Picked]
    description: str
    modal: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    measure: Callable[[BaseEstimator, np.ndarray], np.ndarray] | None = None


def _neg_margin(clf: BaseEstimator, x: np.ndarray) -> np.ndarray:
    return -classifier_margin(clf, x)


def _uncertainty(name: str) -> Callable[[Candidates, int], Picked]:
    def pick(c: Candidates, n: int) -> Picked:
        return select(c.proba, c.ids, n, name, rng=c.rng)

    return pick


def _diverse(c: Candidates, n: int) -> Picked:
    assert c.proba is not None and c.embed is not None, "diverse needs the model's probabilities and embeddings"
    return select_diverse(c.proba, c.embed(), c.ids, n, seed=int(c.rng.integers(2**31)))


def _typiclust(c: Candidates, n: int) -> Picked:
    from .typicality import select_typical

    assert c.features is not None, "typiclust needs the pool's features"
    kept, emb_pool, emb_labeled = c.features
    return select_typical(emb_pool, kept, n, labeled_emb=emb_labeled, seed=int(c.rng.integers(2**31)))


def _auto(c: Candidates, n: int) -> Picked:
    return STRATEGIES[c.auto_use].pick(c, n)


def _random(c: Candidates, n: int) -> Picked:
    return select(None, c.ids, n, "random", rng=c.rng)


STRATEGIES: dict[str, Strategy] = {
    "entropy": Strategy(
        "entropy", "model", _uncertainty("entropy"), "highest predictive entropy", entropy_sampling, classifier_entropy
    ),
    "margin": Strategy(
        "margin",
        "model",
        _uncertainty("margin"),
        "smallest gap between the two top classes",
        margin_sampling,
        _neg_margin,
    ),
    "least-confidence": Strategy(
        "least-confidence",
        "model",
        _uncertainty("least-confidence"),
        "lowest top-class probability",
        uncertainty_sampling,
        classifier_uncertainty,
    ),
    "diverse": Strategy(
        "diverse",
        "model",
        _diverse,
        "margin sampling spread over k-means clusters of the embeddings (no near-duplicates in a batch)",
        margin_sampling,
        _neg_margin,
    ),
    "typiclust": Strategy(
        "typiclust",
        "features",
        _typiclust,
        "the most typical item of each dense region of the features without a label (TypiClust, cold start)",
    ),
    "auto": Strategy(
        "auto",
        "features",
        _auto,
        "alwb's measured choice: on a pretrained backbone's features typical items first, margin sampling once a "
        "probe on the validation sample says it pays more; margin sampling when training from scratch",
    ),
    "random": Strategy("random", "nothing", _random, "uniform random baseline"),
}

#: Strategies that choose by the features alone (no model needed when the features exist before the first round).
FEATURE_STRATEGIES = frozenset(name for name, st in STRATEGIES.items() if st.needs == "features")


def strategy(name: str) -> Strategy:
    """The registered strategy ``name``; :class:`AlwbError` naming the choices for an unknown one."""
    return _get(name)


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
        raise AlwbError(f"strategy {strategy!r} chooses by features: use alwb.learning.typicality.select_typical")
    if strat.modal is None or proba is None:
        if strat.modal is not None:
            raise AlwbError(f"strategy {strategy!r} needs a trained model")
        rng = rng or np.random.default_rng(0)
        return rng.choice(ids, size=n, replace=False), None
    if len(proba) != ids.size:
        raise ValueError(f"proba has {len(proba)} rows for {ids.size} items")
    rows = np.arange(ids.size).reshape(-1, 1)
    picked, _ = strat.modal(StoredProba(proba), rows, n_instances=n)
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
