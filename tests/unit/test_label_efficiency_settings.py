"""bench/research/label_efficiency.py: setting names parse into simulator settings."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alwb.config import TrainConfig

spec = importlib.util.spec_from_file_location(
    "label_efficiency", Path(__file__).parents[2] / "bench/research/label_efficiency.py"
)
assert spec is not None and spec.loader is not None
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

TH = TrainConfig.pseudo_threshold
ARGS = argparse.Namespace(
    initial=100,
    batch=100,
    budget=1000,
    val_size=500,
    device="cpu",
    epochs=0,
    score_limit=0,
    model="resnet18",
    augment=None,
)


@pytest.mark.parametrize(
    ("name", "pseudo", "balance", "cap", "steps", "th"),
    [
        ("plain", False, "none", 1.0, 2.0, TH),
        ("pseudo", True, "none", 1.0, 2.0, TH),
        ("pseudo+smote", True, "smote", 1.0, 2.0, TH),
        ("pseudo+cap2+steps3", True, "none", 2.0, 3.0, TH),
        ("pseudo+steps1.5", True, "none", 1.0, 1.5, TH),
        ("pseudo+th0.9", True, "none", 1.0, 2.0, 0.9),
    ],
)
def test_setting_names_round_trip(name: str, pseudo: bool, balance: str, cap: float, steps: float, th: float) -> None:
    s = bench.settings_for(name, ARGS)
    t = s.train
    assert (t.pseudo, t.balance, t.pseudo_cap, t.pseudo_steps, t.pseudo_threshold) == (pseudo, balance, cap, steps, th)
    assert s.name == name  # the folder and the curve's setting column carry the same name
    assert t.model == "resnet18"  # --model reaches the simulator
    assert t.augment == TrainConfig().augment  # everything else is the product's default


@pytest.mark.parametrize("name", ["pseudo+capx", "pseudo+fast", "steps", "cons1", "pseudo+flat"])
def test_unknown_parts_are_refused(name: str) -> None:
    with pytest.raises(SystemExit, match="unknown setting"):
        bench.settings_for(name, ARGS)


def _curves(rows: list[tuple[str, str, int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["strategy", "setting", "seed", "n_labeled", "test_accuracy"])


def test_paired_gain_is_per_seed_and_only_over_shared_seeds() -> None:
    df = _curves(
        [
            ("margin", "plain", 0, 100, 0.80),
            ("margin", "plain", 1, 100, 0.70),
            ("margin", "plain", 2, 100, 0.60),
            ("margin", "pseudo", 0, 100, 0.82),
            ("margin", "pseudo", 1, 100, 0.73),
            ("margin", "pseudo", 2, 100, 0.61),
            ("margin", "pseudo", 9, 100, 0.99),  # no baseline for seed 9: left out
            ("random", "plain", 0, 100, 0.75),
        ]
    )
    g = bench.paired(df, ("margin", "plain")).set_index(["strategy", "setting", "n_labeled"])
    r = g.loc[("margin", "pseudo", 100)]
    assert r["seeds"] == 3
    assert r["gain"] == pytest.approx(0.02)  # differences 0.02, 0.03, 0.01: the seeds' spread cancels out
    assert r["std"] == pytest.approx(0.01)
    half = 4.302653 * 0.01 / 3**0.5  # t(0.975, 2 degrees of freedom)
    assert (r["low"], r["high"]) == (pytest.approx(0.02 - half, abs=1e-6), pytest.approx(0.02 + half, abs=1e-6))
    one = g.loc[("random", "plain", 100)]
    assert one["seeds"] == 1 and one["gain"] == pytest.approx(-0.05)
    assert np.isnan(one["low"]) and np.isnan(one["high"])
    assert ("margin", "plain", 100) not in g.index


def test_paired_names_what_the_curves_hold_when_the_baseline_is_missing() -> None:
    df = _curves([("margin", "plain", 0, 100, 0.8), ("random", "plain", 0, 100, 0.7)])
    with pytest.raises(ValueError, match="margin/pseudo.*margin/plain, random/plain"):
        bench.paired(df, ("margin", "pseudo"))


def test_warm_ratio_setting_name() -> None:
    s = bench.settings_for("pseudo+warm1", ARGS)
    assert (s.train.pseudo, s.train.warm_epochs_ratio, s.name) == (True, 1.0, "pseudo+warm1")
    assert bench.settings_for("plain", ARGS).train.warm_epochs_ratio == TrainConfig.warm_epochs_ratio
    # from scratch, the warm ratio is not used and does not name the setting
    assert bench.settings_for("scratch+warm1", ARGS).name == "scratch"
