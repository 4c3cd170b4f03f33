"""The stop advice: the learning-curve forecast on synthetic curves with known parameters, kappa, the stop set and
the recommendation (alwb.learning.advice)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from alwb.learning.advice import (
    MIN_ROUNDS,
    Costs,
    CurveFamily,
    advise,
    cohen_kappa,
    forecast,
    plain_power_law,
    recommend,
    stable_over,
    stop_set,
)

LABELS = np.arange(1, 11) * 100.0


def curve(n: np.ndarray, a: float = 0.93, b: float = 1.1, c: float = 0.5) -> np.ndarray:
    """A saturating power law with known parameters."""
    return a - b * np.power(n, -c)


def rounds_of(acc: list[float], n_val: int = 500, kappas: list[float | None] | None = None) -> list[dict]:
    """Store-shaped rounds (what :meth:`alwb.store.Store.rounds` returns) with these validation accuracies."""
    out = []
    for i, a in enumerate(acc, 1):
        metrics: dict = {"val": {"n": n_val, "accuracy": a}}
        if kappas is not None and i > 1 and kappas[i - 2] is not None:
            metrics["stability"] = {"previous_round": i - 1, "kappa": kappas[i - 2], "changed": 0.01, "n": 900}
        out.append({"number": i, "status": "done", "n_labeled": int(LABELS[i - 1]), "metrics": metrics})
    return out


def test_forecast_recovers_a_noiseless_curve() -> None:
    fc = forecast(LABELS[:6], curve(LABELS[:6]), 100_000)
    assert fc is not None
    at = np.array([1000.0, 2000.0, 5000.0])
    mid, low, high = fc.predict(at)
    assert np.allclose(mid, curve(at), atol=0.003)
    assert np.all(low <= curve(at)) and np.all(curve(at) <= high)
    # labels to reach a target: the inverse of the known curve, n = (b / (a - t))^(1/c)
    need, _, _ = fc.labels_for(0.91)
    assert need == pytest.approx((1.1 / (0.93 - 0.91)) ** 2, rel=0.1)
    assert fc.labels_for(0.95)[0] is None  # above the asymptote: it cannot tell


def test_forecast_takes_other_curve_families_of_any_size() -> None:
    """A two-parameter family without a ceiling (as bench/research/stopping.py tries) fits a log-linear curve."""
    loglin = CurveFamily(
        "loglin", lambda n, a, b: a + b * np.log(n), (0.0, 0.05), (-5.0, 0.0), (1.0, 1.0), ceiling=False
    )
    truth = -0.2 + 0.1 * np.log(LABELS)
    fc = forecast(LABELS[:6], truth[:6], 100_000, families=[loglin])
    assert fc is not None and loglin.k == 2
    mid, low, high = fc.predict([1000.0])
    assert mid[0] == pytest.approx(truth[9], abs=0.003) and low[0] <= truth[9] <= high[0]


def test_forecast_interval_covers_at_its_stated_rate() -> None:
    """Over many draws of known curves measured by one validation sample of 500 items (each item's outcome shared
    between rounds 80% of the time, as one sample measures every round), the 80% interval of the accuracy five
    rounds ahead holds the true accuracy at least at its stated rate, without being vacuous (on curves of its own
    family it over-covers: its scale was set on recorded curves, where the family is only an approximation)."""
    rng = np.random.default_rng(7)
    hits, errors, widths = [], [], []
    for i in range(40):
        a, b, c = rng.uniform(0.85, 0.97), rng.uniform(0.6, 2.0), rng.uniform(0.3, 0.8)
        truth = curve(LABELS, a, b, c)
        item = rng.random(500)  # the validation sample: how hard each item is
        val = np.array([np.where(rng.random(500) < 0.8, item < p, rng.random(500) < p).mean() for p in truth[:5]])
        fc = forecast(LABELS[:5], val, 500, draws=30, seed=i)
        assert fc is not None
        mid, low, high = fc.predict([LABELS[9]])
        hits.append(low[0] <= truth[9] <= high[0])
        errors.append(abs(mid[0] - truth[9]))
        widths.append(high[0] - low[0])
    assert 0.75 <= np.mean(hits) <= 0.98, np.mean(hits)
    assert np.median(errors) < 0.015 and np.median(widths) < 0.06


def test_forecast_is_deterministic() -> None:
    val = curve(LABELS[:5]) + np.array([0.004, -0.006, 0.002, 0.0, -0.003])
    one, two = forecast(LABELS[:5], val, 500), forecast(LABELS[:5], val, 500)
    assert one is not None and two is not None
    assert np.array_equal(one.predict([2000])[0], two.predict([2000])[0])


def test_no_forecast_before_enough_rounds() -> None:
    acc = list(curve(LABELS[: MIN_ROUNDS - 1]))
    assert forecast(LABELS[: MIN_ROUNDS - 1], acc, 500) is None
    adv = advise(rounds_of(acc))
    assert adv["forecast"] == [] and adv["stop"] is None
    assert "1 more round(s)" in adv["recommendation"]
    assert advise([])["forecast"] == []


def test_advice_forecasts_the_horizons_once_there_are_enough_rounds() -> None:
    steep = list(curve(LABELS[:6], b=3.0, c=0.4))  # +500 labels buy about 4.7 points
    adv = advise(rounds_of(steep, kappas=[0.8, 0.9, 0.95, 0.97, 0.98]), target=0.85)
    assert [r["labels"] for r in adv["forecast"]] == [700, 1100, 1600]
    for r in adv["forecast"]:
        assert set(r) == {"labels", "accuracy", "low", "high"}
        assert r["low"] <= r["accuracy"] <= r["high"]
    assert adv["kappa"] == [0.8, 0.9, 0.95, 0.97, 0.98]
    assert adv["recommendation"].startswith("keep labeling: +500 labels would buy about +")
    assert adv["target"]["labels"] > 600 and adv["target"]["sentence"].startswith("85.0% in about ")


def test_plain_power_law_fits_error_in_log_log() -> None:
    err = 0.5 * LABELS**-0.4
    assert plain_power_law(LABELS, 1 - err, [5000])[0] == pytest.approx(1 - 0.5 * 5000**-0.4, abs=1e-9)


def test_cohen_kappa_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 400)
    b = np.where(rng.random(400) < 0.8, a, rng.integers(0, 5, 400))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa([2, 2, 2], [2, 2, 2]) == 1.0  # one class, full agreement: no division by zero
    with pytest.raises(ValueError):
        cohen_kappa([0, 1], [0])


def test_stop_set_is_fixed_and_barely_moves_when_items_are_added() -> None:
    ids = np.arange(1, 5001)
    s = stop_set(ids, seed=3, size=500)
    assert s.size == 500 and np.array_equal(s, np.sort(s)) and np.array_equal(s, stop_set(ids[::-1], seed=3, size=500))
    assert not np.array_equal(s, stop_set(ids, seed=4, size=500))
    grown = stop_set(np.arange(1, 5501), seed=3, size=500)
    assert np.intersect1d(s, grown).size >= 430  # ~10% new items: about 10% of the set changes
    assert np.array_equal(stop_set(ids[:300], size=500), ids[:300])


def test_recommendation_stops_on_stable_predictions_and_weighs_costs() -> None:
    fc = forecast(LABELS[:6], curve(LABELS[:6]), 500)
    assert stable_over([0.5, 0.991, 0.995, 0.999]) and not stable_over([0.991, None, 0.999])
    stop, text = recommend(fc, [0.9, 0.991, 0.995, 0.999], n_rounds=6)
    assert stop is True and text.startswith("stop: predictions stable (kappa ≥ 0.99 over the last 3 rounds)")
    # +500 labels buy about 1 point here: a slow curve, where a plateau and a slow rise look alike (E59), so without
    # costs the advice gives the exchange rate and leaves the call to the person
    stop, text = recommend(fc, [0.9, 0.95], n_rounds=6)
    assert stop is None and text.startswith("your call: +500 labels would buy about +1.0 points")
    assert "about 520 labels a point" in text and "predictions still changing (kappa 0.950 last round)" in text
    steep = forecast(LABELS[:6], curve(LABELS[:6], b=3.0, c=0.4), 500)
    stop, text = recommend(steep, [0.9, 0.95], n_rounds=6)
    assert stop is False and text.startswith("keep labeling: +500 labels would buy about +4.7 points")
    # costs decide a slow curve: worth it at 1 a label and 1,000 a point, not at 10 a label
    assert recommend(fc, [0.9], n_rounds=6, costs=Costs(1, 1000))[0] is False
    stop, text = recommend(fc, [0.9], n_rounds=6, costs=Costs(10, 1000))
    assert stop is True and "not worth it at 10 a label and 1000 a point" in text


def test_pool_mix_weights_test_recalls_by_the_pools_class_shares() -> None:
    """A long-tailed pool tested on a balanced split: the simulator also reports accuracy on the pool's mix."""
    from alwb.simulate import pool_mix

    oracle = {1: 0, 2: 0, 3: 0, 4: 1, 5: 2}  # item id → class index: 3 of a, 1 of b, 1 of c
    assert pool_mix({"a": 1.0, "b": 0.5, "c": None}, oracle, ["a", "b", "c"]) == pytest.approx(3.5 / 4)
    assert pool_mix({"a": None, "b": None, "c": None}, oracle, ["a", "b", "c"]) is None
