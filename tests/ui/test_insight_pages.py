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
from alwb.loop import Project  # noqa: E402

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
