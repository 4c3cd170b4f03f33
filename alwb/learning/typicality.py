"""Choosing typical items for a cold start (TypiClust), and the probe that hands over to margin sampling.

TypiClust (Hacohen, Dekel & Weinshall 2022, "Active learning on a budget", ``avihu111/TypiClust``) picks, at low
budgets, the most *typical* item of each dense region that has no label yet: the features (a self-supervised
backbone's, or the current model's) are clustered by k-means into ``labeled + n`` clusters (at most
:data:`MAX_CLUSTERS`), clusters are visited by fewest labels first and largest first, and each gives its unlabeled
item of highest typicality, the inverse mean distance to its ``k`` nearest neighbours within the cluster. The glue
is on scikit-learn (``KMeans``/``MiniBatchKMeans``, ``NearestNeighbors``, ``PCA``). Pools of over
:data:`FIT_ROWS` items are clustered, and their typicality measured, on a :data:`FIT_DIMS`-d PCA of a seeded
sample (:func:`_reduced`): seconds instead of tens of seconds a batch on a 50,000-item pool, the same accuracy
(docs/experiments.md E56).

At low budgets typical items beat uncertain ones; once the model is decent, uncertainty wins (Hacohen et al. 2022,
Lüth et al. 2023). :func:`probe_handover` decides which of the two to use next from the labeled validation sample,
never the test split: it plays one batch of each strategy on half of the validation items (a linear probe on the
features, trained on the labels so far), and measures the gain on the other half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: TypiClust's cap on the number of clusters (the reference implementation uses 500)
MAX_CLUSTERS = 500
#: neighbours behind an item's typicality (the reference uses 20)
K_NEIGHBOURS = 20
#: clusters smaller than this are only visited when no other cluster is left (the reference drops them)
MIN_CLUSTER = 5
#: pools of more rows are clustered on a PCA of a sample of this many rows (:func:`_cluster`)
FIT_ROWS = 10_000
#: the PCA's dimensions there
FIT_DIMS = 64


def _normalise(x: npt.ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norm, 1e-12)


def typicality(x: npt.ArrayLike, k: int = K_NEIGHBOURS) -> npt.NDArray[np.float64]:
    """Inverse mean Euclidean distance of each row to its ``k`` nearest other rows (``k`` capped at ``N - 1``)."""
    from sklearn.neighbors import NearestNeighbors

    a = np.asarray(x, dtype=np.float32)
    if len(a) <= 1:
        return np.ones(len(a))
    k = int(min(k, len(a) - 1))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(a).kneighbors(a)
    return 1.0 / (dist[:, 1:].mean(axis=1).astype(np.float64) + 1e-8)


def _reduced(x: np.ndarray, seed: int) -> tuple[np.ndarray, npt.NDArray[np.int64] | None]:
    """The features clusters and typicality are computed on, and the rows k-means is fitted to (None: all). Up to
    :data:`FIT_ROWS` rows, ``x`` itself; over that, its :data:`FIT_DIMS`-d PCA fitted to a seeded sample of
    :data:`FIT_ROWS` rows, and that sample: a typical batch on a 49,500-item pool in seconds, not 20-50 s
    (docs/experiments.md E56)."""
    from sklearn.decomposition import PCA

    if len(x) <= FIT_ROWS or x.shape[1] <= FIT_DIMS:
        return x, None
    sample = np.sort(np.random.default_rng(seed).choice(len(x), FIT_ROWS, replace=False))
    pca = PCA(FIT_DIMS, svd_solver="randomized", random_state=seed).fit(x[sample])
    return pca.transform(x).astype(np.float32), sample


def _cluster(x: np.ndarray, k: int, seed: int, fit_rows: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.int64]:
    """The k-means cluster of each row, fitted to ``fit_rows`` (None: every row)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if k <= 1:
        return np.zeros(len(x), dtype=np.int64)
    if k <= 50:
        km = KMeans(n_clusters=k, n_init=1, random_state=seed)
    else:  # the reference switches to a faster k-means above 50 clusters as well
        km = MiniBatchKMeans(n_clusters=k, n_init=1, random_state=seed, batch_size=4096)
    if fit_rows is None:
        return np.asarray(km.fit_predict(x), dtype=np.int64)
    km.fit(x[fit_rows])
    return np.asarray(km.predict(x), dtype=np.int64)


def select_typical(
    pool_emb: npt.ArrayLike,
    pool_ids: npt.ArrayLike,
    n: int,
    *,
    labeled_emb: npt.ArrayLike | None = None,
    seed: int = 0,
    max_clusters: int = MAX_CLUSTERS,
    k_neighbours: int = K_NEIGHBOURS,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """TypiClust: ``n`` pool items, the most typical of each least-labeled, largest cluster first.

    Returns ``(ids, typicality)`` in the order chosen (the first is the most typical item of the largest cluster
    without a label).
    """
    ids = np.asarray(pool_ids, dtype=np.int64)
    pool = _normalise(pool_emb)
    if len(pool) != ids.size:
        raise ValueError(f"pool_emb has {len(pool)} rows for {ids.size} items")
    n = int(min(n, ids.size))
    if n <= 0:
        return np.zeros(0, np.int64), np.zeros(0)
    lab = _normalise(labeled_emb) if labeled_emb is not None and len(labeled_emb) else np.zeros((0, pool.shape[1]))
    x = np.concatenate([lab, pool]).astype(np.float32)
    k = int(min(len(lab) + n, max_clusters, len(x)))
    x, fit_rows = _reduced(x, seed)
    assign = _cluster(x, k, seed, fit_rows)
    n_lab = len(lab)
    labeled_count = np.bincount(assign[:n_lab], minlength=k)
    sizes = np.bincount(assign, minlength=k)
    pool_assign = assign[n_lab:]
    taken = np.zeros(ids.size, dtype=bool)
    typ_cache: dict[int, np.ndarray] = {}
    out_rows: list[int] = []
    out_typ: list[float] = []
    for _ in range(n):
        free = np.bincount(pool_assign[~taken], minlength=k)
        open_ = free > 0
        if not open_.any():
            break
        big = open_ & (sizes >= MIN_CLUSTER)
        cand = np.flatnonzero(big if big.any() else open_)
        # fewest labels first, then the largest cluster, then the lowest cluster number (deterministic)
        c = int(cand[np.lexsort((cand, -sizes[cand], labeled_count[cand]))[0]])
        members = np.flatnonzero(pool_assign == c)
        if c not in typ_cache:
            rows_all = np.flatnonzero(assign == c)  # typicality within the whole cluster, labeled items included
            t_all = typicality(x[rows_all], k=min(k_neighbours, max(1, len(rows_all) // 2)))
            typ_cache[c] = t_all[np.isin(rows_all, members + n_lab)]
        t = np.where(taken[members], -np.inf, typ_cache[c])
        j = int(np.argmax(t))
        taken[members[j]] = True
        out_rows.append(int(members[j]))
        out_typ.append(float(t[j]))
        labeled_count[c] += 1
    return ids[np.asarray(out_rows, dtype=np.int64)], np.asarray(out_typ, dtype=np.float64)


@dataclass(frozen=True)
class Handover:
    """What the validation probe found: the strategy to use next and the probe's figures (accuracy points)."""

    use: str
    #: accuracy points a typical / a margin batch gained in the probe (None when the probe could not run)
    typical_gain: float | None
    margin_gain: float | None
    n_val: int
    reason: str

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (stored with the round's metrics)."""
        return {
            "use": self.use,
            "typical_gain": self.typical_gain,
            "margin_gain": self.margin_gain,
            "n_val": self.n_val,
            "reason": self.reason,
        }


#: the fewest labeled validation items the probe works with (two halves of at least 50)
MIN_PROBE_VAL = 100


def _probe_fit(x: np.ndarray, y: np.ndarray, classes: int, seed: int):  # noqa: ANN202 - sklearn estimator
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=300, random_state=seed)
    clf.fit(x, y)
    return clf


def _proba_all(clf, x: np.ndarray, classes: int) -> np.ndarray:  # noqa: ANN001
    p = np.zeros((len(x), classes))
    p[:, clf.classes_] = clf.predict_proba(x)
    return p


def probe_handover(
    train_emb: npt.ArrayLike,
    train_y: npt.ArrayLike,
    val_emb: npt.ArrayLike,
    val_y: npt.ArrayLike,
    batch: int,
    *,
    num_classes: int,
    seed: int = 0,
    repeats: int = 3,
) -> Handover:
    """Which strategy's next batch pays more, measured on the labeled validation sample.

    Each repeat splits the validation items at random into a stand-in pool and a stand-in test set, and swaps them:
    a logistic regression on the features of the training labels picks ``batch`` items of the stand-in pool by
    TypiClust and by margin (scaled to the stand-in pool: at most a third of it), each batch is added with its labels,
    and the accuracy gained on the stand-in test set is averaged. Margin is used once it gains at least as much.
    """
    xt, yt = _normalise(train_emb), np.asarray(train_y, dtype=np.int64)
    xv, yv = _normalise(val_emb), np.asarray(val_y, dtype=np.int64)
    nv = len(yv)
    if nv < MIN_PROBE_VAL or len(np.unique(yt)) < 2:
        why = f"{nv} labeled validation item(s), the probe needs {MIN_PROBE_VAL}" if nv < MIN_PROBE_VAL else "one class"
        return Handover("typiclust", None, None, nv, f"typical items first ({why})")
    rng = np.random.default_rng([seed, 11])
    gains: dict[str, list[float]] = {"typiclust": [], "margin": []}
    for _ in range(repeats):
        perm = rng.permutation(nv)
        halves = (perm[: nv // 2], perm[nv // 2 :])
        for a, b in (halves, halves[::-1]):
            k = int(max(1, min(batch, len(a) // 3)))
            base = _probe_fit(xt, yt, num_classes, seed)
            acc0 = float((base.predict(xv[b]) == yv[b]).mean())
            p = _proba_all(base, xv[a], num_classes)
            top2 = np.sort(p, axis=1)[:, -2:]
            margin_pick = np.argsort(top2[:, 1] - top2[:, 0], kind="stable")[:k]
            typ_ids, _ = select_typical(xv[a], np.arange(len(a)), k, labeled_emb=xt, seed=seed)
            for name, pick in (("margin", margin_pick), ("typiclust", typ_ids)):
                clf = _probe_fit(
                    np.concatenate([xt, xv[a][pick]]), np.concatenate([yt, yv[a][pick]]), num_classes, seed
                )
                gains[name].append(float((clf.predict(xv[b]) == yv[b]).mean()) - acc0)
    g_typ, g_mar = float(np.mean(gains["typiclust"])) * 100, float(np.mean(gains["margin"])) * 100
    use = "margin" if g_mar >= g_typ else "typiclust"
    reason = (
        f"validation probe ({nv} items): a margin batch gains {g_mar:+.1f} points, a typical batch {g_typ:+.1f}: "
        f"{'margin sampling from now on' if use == 'margin' else 'typical items again'}"
    )
    return Handover(use, g_typ, g_mar, nv, reason)
