"""alwb.round.training_estimate: how long a CPU fine-tuning round will train, said after its first epochs."""

from __future__ import annotations

import pytest

from alwb.round import training_estimate


def test_the_estimate_follows_the_latest_epoch_not_the_slow_first_one() -> None:
    # the first epoch carries start-up costs (10 s), the next ones take 1 s each: 20 epochs take about 29 s, not 200
    assert training_estimate(0.0, [10.0, 11.0], 20) == pytest.approx(29.0)
    assert training_estimate(0.0, [10.0], 20) == pytest.approx(200.0)  # one epoch: all it can go by
    assert training_estimate(5.0, [6.0, 8.0, 10.0], 3) == pytest.approx(5.0)  # finished: the time it took


def test_an_estimate_needs_an_epoch() -> None:
    with pytest.raises(ValueError):
        training_estimate(0.0, [], 5)
