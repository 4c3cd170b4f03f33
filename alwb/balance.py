"""Class imbalance: class weights for the loss (SMOTE / ADASYN on embeddings build on this)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def class_weights(y: npt.ArrayLike, num_classes: int) -> npt.NDArray[np.float64]:
    """``balanced`` weights (scikit-learn's ``compute_class_weight``) for classes present; 1.0 for absent ones.

    Parameters
    ----------
    y : (N,) int array of class indices in ``0..num_classes-1``.
    """
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(y, dtype=np.int64)
    w = np.ones(num_classes, dtype=np.float64)
    present = np.unique(y)
    if present.size:
        w[present] = compute_class_weight("balanced", classes=present, y=y)
    return w
