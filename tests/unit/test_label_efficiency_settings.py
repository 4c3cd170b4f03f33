"""bench/label_efficiency.py: setting names parse into simulator settings."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from alwb.config import TrainConfig

spec = importlib.util.spec_from_file_location(
    "label_efficiency", Path(__file__).parents[2] / "bench/label_efficiency.py"
)
assert spec is not None and spec.loader is not None
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

TH = TrainConfig.pseudo_threshold
ARGS = argparse.Namespace(initial=100, batch=100, budget=1000, val_size=500, device="cpu", epochs=0, score_limit=0)


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
    assert (s.pseudo, s.balance, s.pseudo_cap, s.pseudo_steps, s.pseudo_threshold) == (pseudo, balance, cap, steps, th)
    assert s.name == name  # the folder and the curve's setting column carry the same name


@pytest.mark.parametrize("name", ["pseudo+capx", "pseudo+fast", "steps"])
def test_unknown_parts_are_refused(name: str) -> None:
    with pytest.raises(SystemExit, match="unknown setting"):
        bench.settings_for(name, ARGS)
