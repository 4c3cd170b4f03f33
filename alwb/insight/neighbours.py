"""Nearest neighbours on embeddings: the shared first step of near-duplicates, outliers, leakage and similar images.

Embeddings are L2-normalised (so Euclidean distance orders pairs as cosine distance does) and, above
:data:`REDUCED_DIM` dimensions, projected on their first principal components (fitted on at most
:data:`PCA_ROWS` rows) and normalised again: an exact brute-force search over 50,000 items then takes seconds, not
minutes, on two cores (docs/results.md has the figures and the near-duplicate precision it keeps).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: dimensions kept for the neighbour search
REDUCED_DIM = 128
#: rows the projection is fitted on
PCA_ROWS = 10_000


def prepare(emb: npt.ArrayLike, *, dim: int = REDUCED_DIM, seed: int = 0) -> npt.NDArray[np.float32]:
    """float32 ``(n, min(D, dim))`` unit vectors for the neighbour search (see the module docstring)."""
    x = np.asarray(emb, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, D), got {x.shape}")
    x = _unit(x)
    if x.shape[1] > dim and x.shape[0] > dim:
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(seed)
        fit_rows = x if len(x) <= PCA_ROWS else x[np.sort(rng.choice(len(x), PCA_ROWS, replace=False))]
        pca = PCA(n_components=dim, svd_solver="randomized", random_state=seed).fit(fit_rows)
        x = _unit(pca.transform(x).astype(np.float32))
    return np.ascontiguousarray(x, dtype=np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    norm[norm < 1e-12] = 1.0
    return (x / norm).astype(np.float32)


def knn(x: npt.NDArray[np.float32], k: int = 10) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """``(distances, indices)``, each ``(n, k')`` with ``k' = min(k, n - 1)``: every row's nearest other rows,
    nearest first (scikit-learn ``NearestNeighbors``, exact brute force)."""
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    kk = min(int(k), n - 1)
    if kk < 1:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    nn = NearestNeighbors(n_neighbors=kk + 1, algorithm="brute", metric="euclidean", n_jobs=1).fit(x)
    dist, idx = nn.kneighbors(x)
    return drop_self(dist.astype(np.float32), idx.astype(np.int64), kk)


def drop_self(
    dist: npt.NDArray[np.float32], idx: npt.NDArray[np.int64], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Remove each row's own index from its neighbour list (not always the first column: an identical row may tie
    with it), keeping ``k`` neighbours."""
    n = len(idx)
    own = idx == np.arange(n)[:, None]
    keep = ~own
    # a row whose own index did not come back (ties): drop its last neighbour instead
    missing = ~own.any(axis=1)
    keep[missing, -1] = False
    out_d = dist[keep].reshape(n, -1)[:, :k]
    out_i = idx[keep].reshape(n, -1)[:, :k]
    return out_d, out_i


def nearest_to(
    x: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """``(distances, indices)`` of the ``k`` rows of ``x`` nearest to each query row (nearest first)."""
    from sklearn.neighbors import NearestNeighbors

    kk = min(int(k), len(x))
    if kk < 1 or len(queries) == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    nn = NearestNeighbors(n_neighbors=kk, algorithm="brute", metric="euclidean", n_jobs=1).fit(x)
    dist, idx = nn.kneighbors(queries)
    return dist.astype(np.float32), idx.astype(np.int64)
