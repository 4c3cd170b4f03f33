"""Class imbalance: class weights for the loss (SMOTE / ADASYN on embeddings build on this)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: exponent on the ``balanced`` weights: 1 is inverse class frequency, 0 no weighting
WEIGHT_POWER = 0.5


def class_weights(y: npt.ArrayLike, num_classes: int, *, power: float = WEIGHT_POWER) -> npt.NDArray[np.float64]:
    """Loss weights per class: scikit-learn's ``balanced`` weights raised to ``power`` (inverse square root of the
    class frequency by default), scaled so that the mean weight over the samples is 1; 1.0 for absent classes.

    The square root, not full inverse frequency: with full inverse frequency a class with a handful of labels
    outweighs a common one by two orders of magnitude, and at the small CNN's learning rate the steps that meet the
    rare images are dominated by them (measured on a long-tailed pool: ``docs/results.md``).

    Parameters
    ----------
    y : (N,) int array of class indices in ``0..num_classes-1``.
    power : 1 for ``balanced`` weights, 0 for none.
    """
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(y, dtype=np.int64)
    w = np.ones(num_classes, dtype=np.float64)
    present = np.unique(y)
    if present.size:
        w[present] = compute_class_weight("balanced", classes=present, y=y) ** power
        w[present] *= y.size / w[y].sum()
    return w


def resample_embeddings(
    emb: npt.ArrayLike, y: npt.ArrayLike, *, method: str = "smote", k_neighbors: int = 5, seed: int = 0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Oversample minority classes in embedding space with imbalanced-learn; safe for tiny classes.

    ``method`` is ``smote`` or ``adasyn``. ``k_neighbors`` shrinks to fit the smallest class with at least two
    examples; classes with a single example (where interpolation is impossible) are first duplicated by
    ``RandomOverSampler`` up to two, and when every class is that small the result is plain random oversampling.
    ADASYN refuses some distributions (no minority example has majority neighbours): SMOTE is used then.
    Returns ``(X, y)`` including the originals first.
    """
    from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler

    x = np.asarray(emb, dtype=np.float64)
    yy = np.asarray(y, dtype=np.int64)
    if method not in ("smote", "adasyn"):
        raise ValueError(f"method must be smote or adasyn, not {method!r}")
    classes, counts = np.unique(yy, return_counts=True)
    if classes.size < 2:
        return x, yy
    if counts.min() < 2:
        # lift single-example classes to two so that neighbours exist
        strategy = {int(c): max(2, int(n)) for c, n in zip(classes, counts, strict=True)}
        x, yy = RandomOverSampler(sampling_strategy=strategy, random_state=seed).fit_resample(x, yy)
        classes, counts = np.unique(yy, return_counts=True)
    k = int(min(k_neighbors, counts.min() - 1))
    if k < 1 or counts.min() == counts.max():
        return RandomOverSampler(random_state=seed).fit_resample(x, yy) if counts.min() != counts.max() else (x, yy)
    if method == "adasyn":
        try:
            return ADASYN(n_neighbors=k, random_state=seed).fit_resample(x, yy)
        except (ValueError, RuntimeError):
            pass
    return SMOTE(k_neighbors=k, random_state=seed).fit_resample(x, yy)


def fit_linear_head(
    emb: npt.ArrayLike,
    y: npt.ArrayLike,
    num_classes: int,
    *,
    seed: int = 0,
    c: float = 1.0,
    sample_weight: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Multinomial logistic regression (scikit-learn) on embeddings -> ``(weight (K, D), bias (K,))``.

    Classes absent from ``y`` get zero weights and a bias far below the others, so they are never predicted.
    ``sample_weight`` (``(N,)``, e.g. ``class_weights(y, K)[y]``) weights each example's loss.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(emb, dtype=np.float64)
    yy = np.asarray(y, dtype=np.int64)
    present = np.unique(yy)
    w = np.zeros((num_classes, x.shape[1]))
    b = np.full(num_classes, -30.0)
    if present.size == 1:
        b[present[0]] = 0.0
        return w, b
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, yy, sample_weight=sw)
    coef, icpt = clf.coef_, clf.intercept_
    if present.size == 2:  # binary: sklearn stores one row for the positive class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        icpt = np.array([-icpt[0] / 2, icpt[0] / 2])
    w[clf.classes_] = coef
    b[clf.classes_] = icpt
    return w, b
