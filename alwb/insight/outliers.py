"""Outliers: images far from everything, by their mean distance to their k nearest neighbours.

The score is that distance divided by its median over the set (1: a typical image; 2: twice as far from its
neighbours as a typical one). An item is flagged when its distance is more than :data:`ROBUST_Z` robust standard
deviations (1.4826 × the median absolute deviation) above the median, the usual rule for a skewed score, and the
flags are capped at :data:`MAX_FLAGS` per project.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: neighbours averaged (cleanlab's ``OutOfDistribution`` default)
K = 10
#: robust z-score above which an item is an outlier
ROBUST_Z = 3.5
#: at most this many outliers are offered
MAX_FLAGS = 200


def outlier_scores(nn_dist: npt.NDArray[np.float32], k: int = K) -> npt.NDArray[np.float64]:
    """Mean distance to the ``k`` nearest neighbours over its median (see the module docstring); ``(n,)``."""
    if nn_dist.size == 0:
        return np.zeros(len(nn_dist))
    d = nn_dist[:, : max(1, k)].mean(axis=1, dtype=np.float64)
    med = float(np.median(d))
    return d / med if med > 0 else np.zeros_like(d)


def flag_outliers(
    scores: npt.NDArray[np.float64], *, z: float = ROBUST_Z, cap: int = MAX_FLAGS
) -> npt.NDArray[np.int64]:
    """Rows flagged as outliers, most isolated first."""
    if scores.size < 3:
        return np.zeros(0, np.int64)
    med = float(np.median(scores))
    mad = 1.4826 * float(np.median(np.abs(scores - med)))
    if mad <= 0:
        return np.zeros(0, np.int64)
    rows = np.flatnonzero((scores - med) / mad > z)
    return rows[np.argsort(-scores[rows], kind="stable")][:cap].astype(np.int64)
