"""The stop advice from real rounds: a round records how its predictions on the stop set moved since the previous
round, and ``alwb status`` (text and ``--json``) carries the advice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_shapes

from alwb.cli import main
from alwb.project import Project


def status(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> str:
    assert main(["status", str(root), *args]) == 0
    return capsys.readouterr().out


def record_rounds(root: Path, accuracies: list[float], kappas: list[float]) -> None:
    """Finished rounds with these validation accuracies (100 labels apart) and stability, as rounds record them."""
    with Project.open(root) as proj:
        for i, acc in enumerate(accuracies):
            number = proj.store.start_round("margin")
            metrics: dict = {
                "val": {
                    "n": 500,
                    "accuracy": acc,
                    "accuracy_low": acc - 0.03,
                    "accuracy_high": acc + 0.03,
                    "macro_f1": acc,
                }
            }
            if i:
                metrics["stability"] = {"previous_round": number - 1, "kappa": kappas[i - 1], "changed": 0.02, "n": 40}
            proj.store.finish_round(
                number,
                model_path=f"models/round_{number:04d}.safetensors",
                arch="cnn6",
                config={"geometry": {"channels": 1, "image_size": 32}},
                metrics=metrics,
                timings={"round_seconds": 1.0},
                n_labeled=100 * (i + 1),
                n_pseudo=0,
                n_val=500,
            )


def test_rounds_record_stability_and_status_says_it_is_too_early(tmp_path: Path, capsys) -> None:
    truth = make_shapes(tmp_path / "shapes", 20, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=["circle", "square", "triangle"]) as proj:
        proj.add_images(tmp_path / "shapes")
        pool = proj.store.unlabeled_item_ids(split="pool")
        ids = [*proj.store.val_item_ids(), *pool[:24]]
        proj.label([(i, truth[proj.store.item(i)["path"]]) for i in ids])
        proj.train(epochs=2, device="cpu")
        assert "stability" not in proj.store.rounds()[-1]["metrics"]  # nothing to compare the first round with
        proj.label([(i, truth[proj.store.item(i)["path"]]) for i in pool[24:30]])
        proj.train(epochs=2, device="cpu")
        st = proj.store.rounds()[-1]["metrics"]["stability"]
    # the stop set's items still unlabeled: the pool less the 30 labeled
    assert st["previous_round"] == 1 and st["n"] == len(pool) - 30
    assert -1 <= st["kappa"] <= 1 and 0 <= st["changed"] <= 1
    adv = json.loads(status(capsys, root, "--json"))["advice"]
    assert adv["forecast"] == [] and adv["kappa"] == [st["kappa"]]
    assert adv["recommendation"].startswith("keep labeling: 2 more round(s) with a validation accuracy")
    assert "advice: keep labeling: 2 more round(s)" in status(capsys, root)


def test_status_forecasts_once_there_are_enough_rounds(tmp_path: Path, capsys) -> None:
    make_shapes(tmp_path / "shapes", 4, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=["circle", "square", "triangle"]) as proj:
        proj.add_images(tmp_path / "shapes")
    record_rounds(root, [0.70, 0.78, 0.82, 0.845, 0.86, 0.87], [0.8, 0.9, 0.995, 0.996, 0.999])
    adv = json.loads(status(capsys, root, "--json", "--target", "0.88"))["advice"]
    assert [r["labels"] for r in adv["forecast"]] == [700, 1100, 1600]
    assert all(set(r) == {"labels", "accuracy", "low", "high"} for r in adv["forecast"])
    assert all(r["low"] < r["accuracy"] < r["high"] for r in adv["forecast"])
    assert adv["kappa"] == [0.8, 0.9, 0.995, 0.996, 0.999]
    assert adv["recommendation"].startswith("stop: predictions stable (kappa ≥ 0.99 over the last 3 rounds); +500")
    assert adv["target"]["labels"] > 600
    text = status(capsys, root)
    assert "advice: stop: predictions stable" in text and "at 1,100 labels: accuracy" in text
