"""The insight views driven by AppTest on a real project (shape photos embedded with EfficientNet-Lite0 by a real
head round): the Review tabs (likely wrong and its verdicts, duplicate groups labeled at once, outliers), the
leakage figure on Progress and the Map page's selection → one-transaction bulk label."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from insight_helpers import COPIES, FLIPS, build, copy_project

pytest.importorskip("streamlit")
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from alwb import insight  # noqa: E402
from alwb.project import Project  # noqa: E402

TIMEOUT = 90


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("insight"))


@pytest.fixture
def root(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ALWB_PROJECT", raising=False)
    st.cache_data.clear()
    return copy_project(template, tmp_path / "proj")


def _page_script(page: str) -> None:
    import importlib

    importlib.import_module(f"ui.views.{page}").render()


def page(name: str, root: Path) -> AppTest:
    at = AppTest.from_function(_page_script, kwargs={"page": name}, default_timeout=TIMEOUT)
    at.query_params["project"] = str(root)
    return ok(at.run())


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def text_of(at: AppTest) -> str:
    parts = [e.value for kind in ("caption", "markdown", "success", "warning", "info") for e in getattr(at, kind)]
    return re.sub(r"\\(.)", r"\1", "\n".join(str(p) for p in parts))


def button(at: AppTest, label_start: str):  # noqa: ANN201
    found = [b for b in at.button if b.label.startswith(label_start)]
    assert found, [b.label for b in at.button]
    return found[0]


def current(root: Path) -> dict[str, str | None]:
    with Project.open(root) as proj:
        return {Path(r["path"]).name: r["class"] for r in proj.store.current_labels(include_none=True)}


def batches(root: Path) -> int:
    with Project.open(root) as proj:
        return int(
            proj.store.con.execute("SELECT COUNT(DISTINCT batch_id) FROM labels WHERE batch_id IS NOT NULL").fetchone()[
                0
            ]
        )


def test_likely_wrong_tab_records_verdicts_and_reports_precision(root: Path) -> None:
    at = page("review", root)
    shown = text_of(at)
    assert "3 left to answer" in shown
    # the most likely wrong first: a flipped label, with the true class suggested
    first = next(n for n, c in FLIPS.items() if f"Given label: {c}" in shown and n)
    assert first
    button(at, "Change to").click()
    ok(at.run())
    labels = current(root)
    changed = [n for n, c in FLIPS.items() if labels[n] != c]
    assert len(changed) == 1 and labels[changed[0]] == changed[0].split("_")[0]  # the suggestion: the true class
    button(at, "Keep").click()
    ok(at.run())
    with Project.open(root) as proj:
        verdicts = [(r["verdict"], r["kind"]) for r in proj.store.flag_verdicts()]
        prec = insight.flag_precision(proj)
    assert verdicts == [("changed", "label"), ("kept", "label")]
    assert prec == {"decided": 2, "confirmed": 1, "kept": 1, "precision": 0.5}
    assert "confirmed 1 of the 2 flags" in text_of(at)
    assert "1 left to answer" in text_of(at)


def test_duplicate_group_is_labeled_in_one_transaction(root: Path) -> None:
    at = page("review", root)
    shown = text_of(at)
    assert "3 group(s) of near-duplicates" in shown
    assert "validation and training items together (leak)" in shown
    before = batches(root)
    box = next(s for s in at.selectbox if s.key == "dup_answer_1")
    box.set_value("triangle")
    ok(at.run())
    next(b for b in at.button if b.key == "dup_go_1").click()
    ok(at.run())
    labels = current(root)
    with Project.open(root) as proj:
        group = insight.load_findings(proj).near_duplicates[0]
    names = [Path(m["path"]).name for m in group]
    assert names and all(labels[n] == "triangle" for n in names)
    assert batches(root) == before + 1  # one transaction, one batch for the whole group
    assert "in one batch" in text_of(at)


def test_outlier_none_of_these_and_admin_removal(root: Path) -> None:
    at = page("review", root)
    assert "1 outlier(s) to look at" in text_of(at)
    next(b for b in at.button if b.key == "out_remove").click()  # no accounts: the owner is the admin
    ok(at.run())
    with Project.open(root) as proj:
        row = proj.store.item_by_path(str(next(p for p in _paths(proj) if p.endswith("odd.png"))))
        assert row["status"] == "rejected" and "outlier" in row["reason"]
        assert [r["verdict"] for r in proj.store.flag_verdicts("outlier")] == ["removed"]


def _paths(proj: Project) -> list[str]:
    return [str(r[0]) for r in proj.store.con.execute("SELECT path FROM items")]


def test_progress_shows_leakage_and_accuracy_without_copies(root: Path) -> None:
    at = page("progress", root)
    shown = text_of(at)
    assert f"{len(COPIES)} of the 10 labeled validation items have a near-copy" in shown
    metrics = {m.label: m.value for m in at.metric}
    assert "Without the items that have a copy" in metrics
    with Project.open(root) as proj:
        leak = insight.load_findings(proj).leakage
    assert metrics["Without the items that have a copy"] == f"{leak['accuracy_without']:.1%}"
    assert leak["validation_items_with_copy"] == len(COPIES)


def test_map_selection_bulk_labels_in_one_transaction(root: Path) -> None:
    at = page("datamap", root)
    assert "image(s), laid out by PCA" in text_of(at)
    with Project.open(root) as proj:
        m = insight.load_map(proj)
        unl = [int(i) for i in m["ids"]][:5]
    at.session_state["map_selection"] = unl
    ok(at.run())
    assert "5 selected" in [h.value for h in at.subheader]
    next(s for s in at.selectbox if s.key == "map_answer").set_value("circle")
    ok(at.run())
    before = batches(root)
    next(b for b in at.button if b.key == "map_go").click()
    ok(at.run())
    with Project.open(root) as proj:
        got = {int(r["item_id"]): r["class"] for r in proj.store.current_labels()}
    assert all(got[i] == "circle" for i in unl)
    assert batches(root) == before + 1
    assert at.session_state["map_selection"] == []


def test_map_selection_reads_item_ids_across_colour_groups(root: Path) -> None:
    """Streamlit gives point indices per trace (issue 8914); the ids come from customdata, so a lasso over points
    of three colour groups names exactly the items under it."""
    from ui.views.datamap import figure, map_frame, selected_ids

    with Project.open(root) as proj:
        m = insight.load_map(proj)
        df = map_frame(proj, m, insight.load_findings(proj))
    fig = figure(df, "label")
    assert len(fig.data) >= 3  # one trace per label
    picked, points = [], []
    for curve, trace in enumerate(fig.data):
        for index in (0, len(trace.x) - 1):  # the first and last point of every colour group
            points.append({"curve_number": curve, "point_index": index, "customdata": list(trace.customdata[index])})
            picked.append(int(trace.customdata[index][0]))
            # the point really is that item's: same coordinates in the frame
            row = df[df.item_id == picked[-1]].iloc[0]
            assert (row.x, row.y) == pytest.approx((trace.x[index], trace.y[index]))
    event = {"selection": {"points": points, "point_indices": [p["point_index"] for p in points]}}
    assert selected_ids(event) == list(dict.fromkeys(picked))
    # Plotly sends customdata as a typed array, which the browser's JSON writes as {"0": id}
    typed = [{**p, "customdata": {"0": p["customdata"][0]}} for p in points]
    assert selected_ids({"selection": {"points": typed}}) == list(dict.fromkeys(picked))
    # the per-trace indices alone would name other items: the frame's rows 0 and n-1, again and again
    by_index = {int(df.item_id.iloc[p["point_index"]]) for p in points}
    assert by_index != set(picked)


def test_cli_issues_json_and_similar(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from alwb.cli import main

    assert main(["issues", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"label_issues", "near_duplicates", "outliers", "leakage"}
    assert {Path(d["path"]).name for d in data["label_issues"]} == set(FLIPS)
    assert all(
        set(d) == {"path", "label", "suggested", "score"} and Path(d["path"]).is_file() for d in data["label_issues"]
    )
    scores = [d["score"] for d in data["label_issues"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(sorted(Path(p).name for p in g) for g in data["near_duplicates"]) == sorted(
        sorted([n, f"copy_{n}"]) for n in COPIES
    )
    assert [Path(d["path"]).name for d in data["outliers"]] == ["odd.png"]
    assert set(data["leakage"]) == {"validation_items_with_copy", "accuracy_without", "interval_without"}
    assert data["leakage"]["validation_items_with_copy"] == len(COPIES)
    assert main(["issues", str(root)]) == 0
    assert "likely label errors: 3 flagged" in capsys.readouterr().out
    orig = next(p for g in data["near_duplicates"] for p in g if Path(p).name == COPIES[0])
    assert main(["similar", str(root), orig, "-k", "3", "--json"]) == 0
    near = json.loads(capsys.readouterr().out)
    assert len(near) == 3 and Path(near[0]["path"]).name == f"copy_{COPIES[0]}" and near[0]["distance"] < 1e-3


def test_map_is_for_reviewers_and_admins_only() -> None:
    from alwb.team.users import PAGES

    assert "map" in PAGES["reviewer"] and "map" in PAGES["admin"] and "map" not in PAGES["annotator"]


def test_label_page_shows_images_similar_to_the_framed_card(root: Path, tmp_path: Path) -> None:
    from conftest import make_shapes

    make_shapes(tmp_path / "more", 2, size=48, layout="flat", seed=7)
    with Project.open(root) as proj:
        proj.add_images(tmp_path / "more", unlabeled=True)
        proj.train(device="cpu")  # a head round embeds the new images
        insight.analyse(proj)
        labeled = {int(r["item_id"]): r["class"] for r in proj.store.current_labels()}
    at = page("label", root)
    at.toggle(key="lbl_similar").set_value(True)
    ok(at.run())
    captions = [re.sub(r"\\(.)", r"\1", c.value) for c in at.caption]
    near = [c for c in captions if re.fullmatch(r"(circle|square|triangle|unlabeled) · \d\.\d\d", c)]
    assert len(near) == 6, captions
    assert set(labeled.values()) >= {n.split(" · ")[0] for n in near} - {"unlabeled"}


def test_a_reviewer_answers_outliers_but_only_an_admin_removes(root: Path) -> None:
    from alwb.team import users

    with Project.open(root) as proj:
        users.add_user(proj.store, "rev", "reviewer password", "reviewer")
        users.add_user(proj.store, "boss", "admin password", "admin")
    at = AppTest.from_function(_page_script, kwargs={"page": "review"}, default_timeout=TIMEOUT)
    at.query_params["project"] = str(root)
    at.session_state["alwb_signin"] = ("not checked by this page", "rev")  # behind app.py's gate: signed in
    ok(at.run())
    assert "out_none" in [b.key for b in at.button] and "out_remove" not in [b.key for b in at.button]
    at.session_state["alwb_signin"] = ("not checked by this page", "boss")
    ok(at.run())
    assert "out_remove" in [b.key for b in at.button]
