"""The Progress page says what more labels would buy and whether to stop: the forecast drawn as a dashed
continuation of the accuracy curve with its band, kappa between rounds, the recommendation and labels to a target."""

from __future__ import annotations

import json
from pathlib import Path

from test_apptest import _fresh_streamlit, _project, page, project, says, trained  # noqa: F401 (fixtures)

from alwb.learning.advice import advice_settings
from alwb.project import Project


def record_rounds(root: Path, accuracies: list[float], kappas: list[float]) -> None:
    """Finished rounds with these validation accuracies (100 labels apart) and stability, as rounds record them."""
    with Project.open(root) as proj:
        for i, acc in enumerate(accuracies):
            number = proj.store.start_round("margin")
            val = {"n": 500, "accuracy": acc, "accuracy_low": acc - 0.03, "accuracy_high": acc + 0.03, "macro_f1": acc}
            metrics: dict = {"val": val}
            if i:
                metrics["stability"] = {"previous_round": number - 1, "kappa": kappas[i - 1], "changed": 0.02, "n": 40}
            proj.store.finish_round(
                number,
                model_path=f"models/round_{number:04d}.safetensors",
                arch="cnn6",
                config={"geometry": {"channels": 1, "image_size": 32}},
                metrics=metrics,
                timings={"train_seconds": 1.0, "score_seconds": 0.5, "round_seconds": 1.5},
                n_labeled=100 * (i + 1),
                n_pseudo=0,
                n_val=500,
            )


def test_progress_page_forecasts_and_advises_after_enough_rounds(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    record_rounds(root, [0.70, 0.78, 0.82, 0.845, 0.86, 0.87], [0.8, 0.9, 0.95, 0.97, 0.98])
    at = page("progress", root)
    assert "Label more?" in [s.value for s in at.subheader]
    says(at.info, "Keep labeling: +500 labels would buy about +")
    says(at.info, "predictions still changing (kappa 0.980 last round)")
    table = at.dataframe[0].value
    assert list(table["labels"]) == ["700 (+100)", "1,100 (+500)", "1,600 (+1,000)"]
    assert any("kappa 0.800, 0.900, 0.950, 0.970, 0.980" in c.value for c in at.caption), [c.value for c in at.caption]
    # the forecast is a dashed continuation of the curve, with its band, beyond the last round
    layers = json.loads(at.get("vega_lite_chart")[0].proto.spec)["layer"]
    dashed = [ly for ly in layers if isinstance(ly.get("mark"), dict) and ly["mark"].get("strokeDash")]
    assert len(dashed) == 1 and len(layers) == 4
    # a target typed in: labels needed, and remembered for `alwb status`
    at.number_input[0].set_value(88.0).run()
    assert not at.exception
    says(at.markdown, "Target: 88.0% in about ")
    with Project.open(root) as proj:
        assert advice_settings(proj)["target"] == 0.88


def test_progress_page_says_to_stop_when_predictions_settled(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    record_rounds(root, [0.70, 0.78, 0.82, 0.845, 0.86, 0.87], [0.8, 0.9, 0.995, 0.996, 0.999])
    at = page("progress", root)
    says(at.success, "Stop: predictions stable (kappa ≥ 0.99 over the last 3 rounds); +500 labels would buy about")


def test_progress_page_leaves_a_slow_curve_to_the_person_with_its_exchange_rate(tmp_path: Path) -> None:
    """A curve gaining about a point per 500 labels: alwb cannot tell a plateau from a slow rise (E59), so it gives
    labels a point and points to the costs in Settings, neither "stop" nor "keep labeling"."""
    root, _ = _project(tmp_path)
    record_rounds(root, [0.80, 0.83, 0.845, 0.853, 0.858, 0.861], [0.9, 0.93, 0.95, 0.96, 0.96])
    at = page("progress", root)
    says(at.info, "Your call: +500 labels would buy about +")
    says(at.info, "labels a point; predictions still changing (kappa 0.960 last round)")
    assert not at.success


def test_progress_page_says_when_it_is_too_early(trained) -> None:  # noqa: F811 (the fixture)
    root, _ = trained
    at = page("progress", root)
    says(at.info, "Keep labeling: 3 more round(s) with a validation accuracy before a forecast can be made")
    assert not at.dataframe


def test_settings_page_saves_the_cost_of_a_label_and_the_value_of_a_point(project) -> None:  # noqa: F811
    root, _ = project
    at = page("settings", root)
    next(n for n in at.number_input if n.label.startswith("Cost of one label")).set_value(0.5)
    next(n for n in at.number_input if n.label.startswith("Value of one point")).set_value(200.0)
    at.button[0].click().run()
    assert not at.exception
    with Project.open(root) as proj:
        assert advice_settings(proj) == {"label_cost": 0.5, "point_value": 200.0, "target": 0.0}
