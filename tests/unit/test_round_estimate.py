"""alwb.learning.trainers.training_estimate: how long a CPU fine-tuning round will train, said after its first
epochs."""

from __future__ import annotations

import pytest

from alwb.learning.trainers import training_estimate


def test_the_estimate_follows_the_latest_epoch_not_the_slow_first_one() -> None:
    # the first epoch carries start-up costs (10 s), the next ones take 1 s each: 20 epochs take about 29 s, not 200
    assert training_estimate(0.0, [10.0, 11.0], 20) == pytest.approx(29.0)
    assert training_estimate(0.0, [10.0], 20) == pytest.approx(200.0)  # one epoch: all it can go by
    assert training_estimate(5.0, [6.0, 8.0, 10.0], 3) == pytest.approx(5.0)  # finished: the time it took


def test_an_estimate_needs_an_epoch() -> None:
    with pytest.raises(ValueError):
        training_estimate(0.0, [], 5)


def test_a_slow_round_is_announced_once_after_its_second_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fine-tuning trainer's progress callback on a CPU (``FinetuneTrainer._progress``)."""
    from types import SimpleNamespace

    from alwb.config import TrainConfig
    from alwb.learning import trainers
    from alwb.learning.plan import Geometry

    geo = Geometry("finetune", "bb:resnet18", 224, 3, backbone="resnet18")
    seen: list[int] = []

    def state(progress):  # noqa: ANN001, ANN202
        return SimpleNamespace(notes=[], geo=geo, cfg=TrainConfig(device="cpu"), tick=lambda phase: progress)

    r = state(lambda done, total, loss: seen.append(done))
    monkeypatch.setattr(trainers, "SLOW_ROUND_S", 0.0)  # every round counts as slow here
    tick = trainers.FinetuneTrainer()._progress(r)
    for done in range(1, 6):
        tick(done, 5, 0.1)
    assert seen == [1, 2, 3, 4, 5]  # the person's own progress callback still sees every epoch
    assert len(r.notes) == 1 and r.notes[0].startswith("fine-tuning resnet18 on the CPU: about")
    assert "this round's 5 epochs" in r.notes[0]
    monkeypatch.setattr(trainers, "SLOW_ROUND_S", 3600.0)
    quiet = state(None)
    tick = trainers.FinetuneTrainer()._progress(quiet)
    for done in range(1, 6):
        tick(done, 5, 0.1)
    assert quiet.notes == []
