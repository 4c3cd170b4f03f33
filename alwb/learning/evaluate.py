"""Held-out metrics per round: accuracy with a Wilson 95% interval, macro-F1, balanced accuracy, recalls, confusion."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (SciPy's ``binomtest``); ``(nan, nan)`` when ``n == 0``."""
    if n == 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def classification_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics of predictions against labels (class indices ``0..K-1``), JSON-able.

    Returns accuracy, ``accuracy_low``/``accuracy_high`` (Wilson 95%), ``macro_f1``, ``balanced_accuracy``,
    ``recall`` per class (``None`` for a class with no example), ``confusion`` (rows true, columns predicted)
    and ``n``.
    """
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

    yt = np.asarray(y_true, dtype=np.int64)
    yp = np.asarray(y_pred, dtype=np.int64)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {yt.shape} vs {yp.shape}")
    k = len(classes)
    n = int(yt.size)
    if n == 0:
        return {
            "n": 0,
            "accuracy": None,
            "accuracy_low": None,
            "accuracy_high": None,
            "macro_f1": None,
            "balanced_accuracy": None,
            "recall": {c: None for c in classes},
            "confusion": [],
        }
    correct = int((yt == yp).sum())
    low, high = wilson_interval(correct, n)
    labels = list(range(k))
    cm = confusion_matrix(yt, yp, labels=labels)
    support = cm.sum(axis=1)
    recall = {c: (float(cm[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    present = sorted(set(yt.tolist()))
    with warnings.catch_warnings():
        # a round may see one class only, or predict classes absent from the labels: expected, not news
        warnings.simplefilter("ignore", UserWarning)
        macro_f1 = float(f1_score(yt, yp, labels=present, average="macro", zero_division=0))
        balanced = float(balanced_accuracy_score(yt, yp)) if present else None
    return {
        "n": n,
        "accuracy": correct / n,
        "accuracy_low": low,
        "accuracy_high": high,
        "macro_f1": macro_f1,
        "balanced_accuracy": balanced,
        "recall": recall,
        "confusion": cm.tolist(),
    }
