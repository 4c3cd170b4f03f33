"""The Progress page's accuracy and time charts: plotted against labels given, plain legend words, a fitted y-axis."""

from __future__ import annotations

import pandas as pd

from ui.views import progress


def _rounds() -> list[dict]:
    def rnd(number: int, labels: int, acc: float, f1: float) -> dict:
        val = {"accuracy": acc, "accuracy_low": acc - 0.04, "accuracy_high": acc + 0.03, "macro_f1": f1, "n": 150}
        return {
            "number": number,
            "status": "done",
            "n_labeled": labels,
            "n_pseudo": 0,
            "metrics": {"val": val},
            "timings": {"train_seconds": 2.5, "score_seconds": 0.5, "round_seconds": 3.2},
        }

    return [rnd(1, 48, 0.71, 0.69), rnd(2, 96, 0.83, 0.82), {"number": 3, "status": "failed"}, rnd(4, 144, 0.9, 0.9)]


def test_scores_are_plotted_against_labels_with_plain_legend_words() -> None:
    df = progress.rounds_frame(_rounds())
    long = progress.score_frame(df)
    assert set(long["score"]) == {"accuracy", "macro-F1"}
    acc = long[long["score"] == "accuracy"]
    assert acc["labels"].tolist() == [48, 96, 144] and acc["round"].tolist() == [1, 2, 4]
    parts = progress.time_frame(df)
    assert set(parts["part"]) == {"train", "score"}  # not train_s / score_s


def test_the_y_axis_fits_the_data() -> None:
    df = progress.rounds_frame(_rounds())
    low, high = progress.score_domain(df)
    assert 0.6 < low < 0.67 and 0.93 <= high <= 0.96  # 0.67 .. 0.93 with room, not 0 .. 1
    one = progress.rounds_frame(_rounds()[:1])
    low, high = progress.score_domain(one)
    assert high - low >= 0.1 and low <= 0.67 and high >= 0.74
    assert progress.score_domain(pd.DataFrame({"low": [0.0], "high": [1.0]})) == [0.0, 1.0]  # never outside 0-1
    assert progress.score_domain(pd.DataFrame({"low": [None], "high": [None]})) == [0.0, 1.0]
