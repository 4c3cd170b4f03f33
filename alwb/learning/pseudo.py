"""Choosing pseudo-labels: confident unlabeled items join training, chosen anew each round."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def choose_pseudo_labels(
    proba: npt.ArrayLike,
    item_ids: npt.ArrayLike,
    human_counts: npt.ArrayLike,
    *,
    threshold: float = 0.95,
    cap_ratio: float = 1.0,
    min_cap: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Pick confident predictions as pseudo-labels.

    Parameters
    ----------
    proba : (N, K) class probabilities of unlabeled pool items (never validation items).
    item_ids : (N,) their item ids.
    human_counts : (K,) human (and imported) labels per class.
    threshold : minimum top-class probability.
    cap_ratio : at most ``max(min_cap, cap_ratio * human_counts[k])`` pseudo-labels for class ``k`` (the most
        confident first), so a class the person has barely labeled is not flooded with the model's guesses; a
        class with no label gets none unless ``min_cap`` > 0.
    rng : when given, a class with more confident items than its cap gets a random subset of them (the whole
        confident range, not only the most prototypical, which add least); without it the most confident first.

    Returns
    -------
    (ids, classes, confidences), sorted by item id.
    """
    p = np.asarray(proba, dtype=np.float64)
    ids = np.asarray(item_ids, dtype=np.int64)
    counts = np.asarray(human_counts, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != ids.shape[0]:
        raise ValueError(f"proba must be (N, K) with N = len(item_ids); got {p.shape} and {ids.shape}")
    if counts.shape != (p.shape[1],):
        raise ValueError(f"human_counts must have one entry per class ({p.shape[1]}), got {counts.shape}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    if p.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0)
    cls = p.argmax(axis=1)
    conf = p.max(axis=1)
    keep_ids, keep_cls, keep_conf = [], [], []
    for k in range(p.shape[1]):
        cap = int(max(min_cap, np.floor(cap_ratio * counts[k])))
        sel = np.flatnonzero((cls == k) & (conf >= threshold))
        if cap <= 0 or sel.size == 0:
            continue
        if rng is not None and sel.size > cap:
            chosen = np.sort(rng.choice(sel, size=cap, replace=False))
        else:
            chosen = sel[np.lexsort((ids[sel], -conf[sel]))[:cap]]
        keep_ids.append(ids[chosen])
        keep_cls.append(np.full(chosen.size, k, dtype=np.int64))
        keep_conf.append(conf[chosen])
    if not keep_ids:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0)
    out_ids = np.concatenate(keep_ids)
    order = np.argsort(out_ids, kind="stable")
    return out_ids[order], np.concatenate(keep_cls)[order], np.concatenate(keep_conf)[order]
