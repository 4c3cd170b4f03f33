"""The 2-D map of the embeddings: UMAP (umap-learn) on a 50-dimensional PCA projection.

UMAP was measured against scikit-learn's PCA + t-SNE on the same rows (``bench/speed/insight_map.py``,
docs/speed.md) and kept for its time at 100,000 points. Below :data:`MIN_UMAP` points the map is the first two
principal components (UMAP needs a neighbourhood).
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

MIN_UMAP = 30
PCA_DIM = 50


def layout_2d(
    emb: npt.ArrayLike, *, method: str = "umap", seed: int | None = 0, n_neighbors: int = 15
) -> tuple[npt.NDArray[np.float32], str, float]:
    """``(xy, method used, seconds)``: float32 ``(n, 2)`` coordinates of the rows of ``emb``.

    ``method``: ``umap`` or ``tsne`` (PCA then t-SNE); ``pca`` (the first two components). ``seed`` None lets UMAP
    use both cores (it is single-threaded when seeded).
    """
    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    x = np.asarray(emb, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), np.float32), "pca", 0.0
    x = x - x.mean(axis=0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norm, 1e-12)
    if n < MIN_UMAP or method == "pca":
        k = min(2, x.shape[1], n)
        xy = np.zeros((n, 2), np.float32)
        if n > 1:
            xy[:, :k] = PCA(n_components=k, random_state=0).fit_transform(x)
        return xy, "pca", time.perf_counter() - t0
    d = min(PCA_DIM, x.shape[1], n - 1)
    z = PCA(n_components=d, svd_solver="randomized", random_state=0).fit_transform(x).astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (n - 1) / 3)).fit_transform(z)
        return xy.astype(np.float32), "tsne", time.perf_counter() - t0
    if method != "umap":
        raise ValueError(f"method must be umap, tsne or pca, not {method!r}")
    import umap

    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, n - 1), min_dist=0.1, n_components=2, random_state=seed, low_memory=True
    )
    xy = reducer.fit_transform(z)
    return np.asarray(xy, dtype=np.float32), "umap", time.perf_counter() - t0
