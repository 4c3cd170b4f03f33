"""bench/research/stopping.py: the stop rules it compares alwb's advice with, and how it scores a stop."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

spec = importlib.util.spec_from_file_location("stopping", Path(__file__).parents[2] / "bench/research/stopping.py")
assert spec is not None and spec.loader is not None
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_kappa_average_is_the_mean_of_the_window() -> None:
    # small-text ≥ 1.3.3: stop once the mean of the last three kappas reaches 0.99
    assert bench.bv_kappa_average([0.9, 0.99, 0.995, 0.999, 0.97]) == [False, False, False, True, False]
    # before 1.3.3: stop once the kappas stop moving, however low they are
    assert bench.small_text_old_kappa_average([0.5, 0.9, 0.901, 0.902]) == [False, False, False, True]
    assert bench.small_text_old_kappa_average([np.nan, np.nan, np.nan]) == [False, False, True]


def test_stop_table_scores_labels_saved_and_accuracy_lost() -> None:
    n = np.arange(1, 11) * 100
    g = pd.DataFrame(
        {
            "n_labeled": n,
            "val_accuracy": 0.9 - 0.5 * n**-0.5,
            "val_n": 500,
            "test_accuracy": [0.80, 0.85, 0.87, 0.880, 0.885, 0.888, 0.889, 0.890, 0.890, 0.891],
            "kappa": [np.nan, 0.9, 0.95, 0.991, 0.992, 0.995, 0.999, 0.999, 1.0, 1.0],
        }
    )
    t = bench.stop_table([("run", g)], ["small-text KappaAverage", "small-text < 1.3.3"]).set_index("rule")
    # kappas 0.991, 0.992, 0.995 end at the sixth round (600 labels): 40% saved, 0.3 points lost
    assert t.loc["small-text KappaAverage", "stopped at"] == 600
    assert t.loc["small-text KappaAverage", "saved %"] == 40.0
    assert t.loc["small-text KappaAverage", "lost pts"] == 0.3
    assert bool(t.loc["small-text KappaAverage", "plateau"])  # 0.891 at the end, 0.888 at 60% of the labels
