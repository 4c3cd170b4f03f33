"""Near-duplicates and validation leakage.

Two items are near-duplicates when their embeddings are closer than :data:`DEFAULT_FACTOR` times the median
nearest-neighbour distance of the whole set, cleanlab's rule (``NearDuplicateIssueManager``: a threshold relative to
the median distance, so it adapts to the backbone and the data); pairs are joined into groups (connected
components). Identical files never reach the store (the import skips a SHA-256 it has), so every group here is of
different files: crops, resizes, re-encodes, bursts.

The validation sample is "leaked" where one of its items has a near-copy among the training items: its accuracy
then measures memory as much as the model. :func:`leakage` says how many and what the accuracy is without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: a pair closer than this times the median nearest-neighbour distance is a near-duplicate. Chosen on
#: ``bench/research/insight.py duplicates`` (docs/results.md): on 397 hymenoptera photos with 150 made near-copies
#: (crops, resizes, JPEG re-encodes, colour shifts; EfficientNet-Lite0) every factor up to 0.9 had precision 1.00 and
#: 0.6 found 53% of the pairs (cleanlab's default 0.13 found 8%); on 2,000 CIFAR-10 images, where near-copies are
#: rare, 0.6 grouped 4 images, 0.7 grouped 36 and 0.8 joined 194 into chains: above 0.6 the rule starts grouping
#: look-alikes in a set of similar pictures
DEFAULT_FACTOR = 0.6


@dataclass
class Groups:
    """Near-duplicate groups: ``groups`` holds row indices (largest groups first), ``threshold`` the distance used,
    ``median`` the median nearest-neighbour distance it was taken from."""

    groups: list[npt.NDArray[np.int64]]
    threshold: float
    median: float


def threshold_of(nn_dist: npt.NDArray[np.float32], factor: float = DEFAULT_FACTOR) -> tuple[float, float]:
    """``(threshold, median)``: ``factor`` times the median of the rows' nearest-neighbour distances."""
    if nn_dist.size == 0 or nn_dist.shape[1] == 0:
        return 0.0, 0.0
    median = max(float(np.median(nn_dist[:, 0])), 1e-12)
    return float(factor) * median, median


def group_pairs(
    nn_dist: npt.NDArray[np.float32], nn_idx: npt.NDArray[np.int64], threshold: float
) -> list[npt.NDArray[np.int64]]:
    """Connected components of the neighbour pairs closer than ``threshold`` (size ≥ 2, largest first, then by
    their first row)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(nn_idx)
    rows, cols = np.nonzero(nn_dist < threshold)
    if rows.size == 0:
        return []
    graph = coo_matrix((np.ones(rows.size), (rows, nn_idx[rows, cols])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    counts = np.bincount(comp)
    out = [np.flatnonzero(comp == c) for c in np.flatnonzero(counts >= 2)]
    out.sort(key=lambda g: (-len(g), int(g[0])))
    return out


def near_duplicates(
    nn_dist: npt.NDArray[np.float32], nn_idx: npt.NDArray[np.int64], factor: float = DEFAULT_FACTOR
) -> Groups:
    """Near-duplicate groups from a neighbour graph (:func:`alwb.insight.neighbours.knn`)."""
    threshold, median = threshold_of(nn_dist, factor)
    return Groups(group_pairs(nn_dist, nn_idx, threshold), threshold, median)


@dataclass
class Leakage:
    """Validation items with a near-copy among the training items, and the accuracy with and without them.

    ``accuracy``/``interval`` are over every labeled validation item the model scored, ``accuracy_without`` /
    ``interval_without`` over those without a copy (Wilson 95%); None where there is no model or no item left.
    ``pairs`` maps a leaked validation row to its nearest training row.
    """

    validation_items: int
    validation_items_with_copy: int
    leaked: list[int]
    pairs: dict[int, int]
    accuracy: float | None = None
    interval: tuple[float, float] | None = None
    accuracy_without: float | None = None
    interval_without: tuple[float, float] | None = None
    scored: int = 0

    def to_dict(self) -> dict:
        """The JSON of ``alwb issues --json`` (key ``leakage``)."""
        return {
            "validation_items_with_copy": self.validation_items_with_copy,
            "accuracy_without": self.accuracy_without,
            "interval_without": list(self.interval_without) if self.interval_without else None,
            "validation_items": self.validation_items,
            "accuracy": self.accuracy,
            "interval": list(self.interval) if self.interval else None,
        }


def leaked_rows(
    x: npt.NDArray[np.float32], val_rows: Sequence[int], train_rows: Sequence[int], threshold: float
) -> dict[int, int]:
    """Validation row → its nearest training row, for the validation rows whose nearest training row is closer
    than ``threshold`` (``x`` from :func:`alwb.insight.neighbours.prepare`)."""
    from .neighbours import nearest_to

    v = np.asarray(val_rows, dtype=np.int64)
    t = np.asarray(train_rows, dtype=np.int64)
    if v.size == 0 or t.size == 0:
        return {}
    dist, idx = nearest_to(x[t], x[v], 1)
    close = dist[:, 0] < threshold
    return {int(v[i]): int(t[idx[i, 0]]) for i in np.flatnonzero(close)}


def leakage(
    val_ids: Sequence[int],
    leaked_ids: dict[int, int],
    truth: dict[int, str],
    predicted: dict[int, str],
) -> Leakage:
    """The leakage figure: ``val_ids`` the labeled validation items, ``leaked_ids`` those with a near-copy in
    training (→ the copy), ``truth`` / ``predicted`` their labels and the current model's guesses."""
    from ..learning.evaluate import wilson_interval

    val = [int(i) for i in val_ids]
    leaked = sorted(i for i in leaked_ids if i in set(val))
    out = Leakage(len(val), len(leaked), leaked, {i: leaked_ids[i] for i in leaked})
    scored = [i for i in val if i in predicted and i in truth]
    out.scored = len(scored)
    if scored:
        right = sum(predicted[i] == truth[i] for i in scored)
        out.accuracy, out.interval = right / len(scored), wilson_interval(right, len(scored))
        clean = [i for i in scored if i not in leaked_ids]
        if clean:
            right_c = sum(predicted[i] == truth[i] for i in clean)
            out.accuracy_without = right_c / len(clean)
            out.interval_without = wilson_interval(right_c, len(clean))
    return out
