"""Likely label errors: out-of-sample probabilities from K-fold heads on the cached embeddings, ranked by cleanlab.

Every labeled item gets class probabilities from a classifier head (:func:`alwb.learning.head.fit_head`, the project's
own
logistic regression) that did not see it: the labeled items are split into :data:`FOLDS` stratified folds and each
fold is scored by a head fitted on the others, so no CNN is retrained. ``cleanlab.filter.find_label_issues``
(confident learning, ``prune_by_noise_rate``) says which labels are likely wrong and
``cleanlab.rank.get_label_quality_scores`` (self-confidence) ranks them; the suggested class is the most probable one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: folds of the cross-validation
FOLDS = 5
#: inverse L2 strength of the heads: stronger than a round's head (0.03, or the backbone's own, 0.1 for
#: EfficientNet-Lite), because a head that fits noisy labels less closely flags them better. On CIFAR-10 (2,000
#: EfficientNet-Lite0 embeddings, 5% random flips, seed 0) precision of the top 100 flags was 0.65 at C = 0.01,
#: 0.60 at 0.03 and 0.10 (``bench/research/insight.py labels``; docs/results.md has all seeds)
ISSUE_C = 0.01
#: above this many labeled items the embeddings are first projected on :data:`HEAD_DIM` principal components (the
#: five fits then stay within minutes at 50,000 items on two cores); below, the full embeddings are used (PCA-256
#: cost 2-4 points of out-of-sample accuracy at 2,000 items)
PCA_ABOVE = 20_000
HEAD_DIM = 256


@dataclass
class LabelIssues:
    """Flags on labeled items (rows of the arrays given), most likely wrong first.

    ``rows``: the flagged rows; ``suggested``: the most probable class of each (index); ``score``: 1 − the label's
    quality (self-confidence), so higher is more likely wrong; ``quality``/``probs``: every row's quality score and
    out-of-sample probabilities.
    """

    rows: npt.NDArray[np.int64]
    suggested: npt.NDArray[np.int64]
    score: npt.NDArray[np.float64]
    quality: npt.NDArray[np.float64]
    probs: npt.NDArray[np.float32]


def out_of_sample_probs(
    emb: npt.ArrayLike,
    y: npt.ArrayLike,
    num_classes: int,
    *,
    folds: int = FOLDS,
    c: float | None = None,
    seed: int = 0,
    dim: int = HEAD_DIM,
    pca_above: int = PCA_ABOVE,
) -> npt.NDArray[np.float32]:
    """float32 ``(n, num_classes)``: each item's class probabilities from a head fitted without it.

    Folds are stratified; a class with fewer items than folds still gets a probability (the heads of the folds
    that hold it cannot predict it, which is what an out-of-sample estimate should say).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    from ..learning.head import fit_head

    x = np.asarray(emb, dtype=np.float32)
    yy = np.asarray(y, dtype=np.int64)
    n = len(yy)
    if n < 2:
        raise ValueError("label issues need at least two labeled items")
    if x.shape[1] > dim and n > pca_above:
        from sklearn.decomposition import PCA

        x = PCA(n_components=dim, svd_solver="randomized", random_state=seed).fit_transform(x).astype(np.float32)
    k = max(2, min(int(folds), n))
    counts = np.bincount(yy, minlength=num_classes)
    if counts[counts > 0].max() >= k:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    out = np.zeros((n, num_classes), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the least populated class has only 1 member"
        for train, test in splitter.split(x, yy):
            head = fit_head(
                x[train], yy[train], num_classes, c=ISSUE_C if c is None else c, seed=seed, standardise_with=x
            )
            out[test] = head.predict_proba(x[test])
    return out


def find_issues(labels: npt.ArrayLike, probs: npt.ArrayLike) -> LabelIssues:
    """cleanlab on out-of-sample probabilities: the flagged rows ranked, with scores and suggestions.

    Classes that no label uses are left out for cleanlab (it needs every column to be a class seen in ``labels``)
    and the rest renormalised; suggestions are among the used classes.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    yy = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    used = np.unique(yy)
    if used.size < 2:  # one class: nothing to confuse it with
        q = np.ones(len(yy))
        return LabelIssues(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), q, p.astype(np.float32))
    remap = np.full(p.shape[1], -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    pu = p[:, used]
    pu = np.clip(pu, 1e-9, None)
    pu /= pu.sum(axis=1, keepdims=True)
    yu = remap[yy]
    quality = get_label_quality_scores(yu, pu, method="self_confidence")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = find_label_issues(yu, pu, return_indices_ranked_by="self_confidence", n_jobs=1)
    rows = np.asarray(rows, dtype=np.int64)
    suggested = used[np.argmax(pu[rows], axis=1)] if rows.size else np.zeros(0, np.int64)
    return LabelIssues(rows, suggested.astype(np.int64), 1.0 - quality[rows], quality, p.astype(np.float32))


def label_issues(
    emb: npt.ArrayLike, y: npt.ArrayLike, num_classes: int, *, folds: int = FOLDS, c: float | None = None, seed: int = 0
) -> LabelIssues:
    """:func:`out_of_sample_probs` then :func:`find_issues`."""
    probs = out_of_sample_probs(emb, y, num_classes, folds=folds, c=c, seed=seed)
    return find_issues(y, probs)
