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


def test_test_size_is_read_off_the_accuracies() -> None:
    """E59 fits the forecast to the test curve with the test split's binomial noise: its size from the counts."""
    rng = np.random.default_rng(0)
    for size in (500, 1139, 10_000):
        acc = rng.integers(size // 2, size, 12) / size
        assert bench._test_size(acc) == size


def test_apply_rule_scores_plateau_and_rising_runs_at_the_first_stop() -> None:
    """E59's table: the first round a rule holds; plateau runs meet the issue's rule with ≥ 30% saved and ≤ 1 point
    lost; rising runs are counted when stopped and when losing over a point; never stopping saves and loses nothing."""
    rows = pd.DataFrame(
        {
            "file": ["f"] * 6,
            "run": ["flat"] * 3 + ["rising"] * 3,
            "plateau": [True] * 3 + [False] * 3,
            "saved": [70.0, 60.0, 40.0] * 2,
            "lost": [3.0, 0.8, 0.2, 9.0, 6.0, 2.0],
            "val_mid": [3.0, 0.9, 0.5, 5.0, 4.0, 0.9],
        }
    )
    one = bench.apply_rule(rows, rows["val_mid"] < 1.0, "gain < 1")
    # the plateau run stops at its second round (60% saved, 0.8 lost): met; the rising one at its third, losing 2
    assert one["plateau runs meeting the rule"] == "1/1 (100%)"
    assert one["rising runs stopped"] == "1/1" and one["rising runs losing > 1 pt"] == 1
    assert one["worst loss (pts)"] == 2.0
    never = bench.apply_rule(rows, rows["val_mid"] < 0.0, "never")
    assert never["plateau runs meeting the rule"] == "0/1 (0%)" and never["rising runs stopped"] == "0/1"
    assert never["worst loss (pts)"] == 0.0
