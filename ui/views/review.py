"""Review: browse labeled images by class, source or disagreement with the model; fix labels; review pseudo-labels."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import streamlit as st

from alwb.errors import AlwbError
from alwb.intake.images import ImageRoot
from alwb.project import Project
from ui import state
from ui.text import md_escape
from ui.views import disagreements, insight
from ui.views.common import need_project, show_flash

PAGE = 18  # three rows of six: a page of thumbnails opens in well under 1.5 s on two cores
COLUMNS = 6


def _save(root: str, changes: dict[int, str], annotator: str) -> None:
    proj = Project.open(root)
    try:
        answers = [(i, None if c == state.NONE else c) for i, c in changes.items()]
        _, n = proj.label(answers, annotator=annotator, batch_id=uuid.uuid4().hex)
        state.flash(f"Saved {n} corrected label(s); the earlier labels stay in the history.")
    except AlwbError as exc:
        state.flash(f"Nothing was saved: {exc}", "error")
    finally:
        proj.close()


def _pseudo(root: str, item_ids: list[int], classes: list[str], accept: bool, annotator: str) -> None:
    proj = Project.open(root)
    try:
        if accept:
            _, n = proj.label(list(zip(item_ids, classes, strict=True)), annotator=annotator, batch_id=uuid.uuid4().hex)
            state.flash(f"Accepted {n} pseudo-label(s) as human labels.")
        else:
            n = proj.reject_pseudo_labels(item_ids)
            state.flash(f"Rejected {n} pseudo-label(s).")
    finally:
        proj.close()


def _grid(rows: list, images: ImageRoot, store: Any) -> Iterator[tuple[object, object]]:
    """(column, row) for each row, COLUMNS to a line, each column already showing the row's thumbnail (read through
    the project's image root on this machine, only while it holds the content imported: ``store``'s digests)."""
    digests = store.digests([r["path"] for r in rows])
    for start in range(0, len(rows), COLUMNS):
        for col, r in zip(st.columns(COLUMNS), rows[start : start + COLUMNS], strict=False):
            shown = state.image_bytes(images, r["path"], 128, digests.get(r["path"]))
            if shown:
                col.image(shown[0], width="stretch", output_format=shown[1])
            else:
                col.caption(md_escape(state.image_problem(images, r["path"], digests.get(r["path"]))))
            yield col, r


def render() -> None:
    """Draw the page."""
    with state.open_project() as proj:
        proj = need_project(proj)
        root = str(proj.root)
        images = proj.reads.image_root()
        st.title("Review")
        show_flash()
        classes = proj.classes
        tab_labels, tab_pseudo, tab_team, tab_wrong, tab_dups, tab_out, tab_sim = st.tabs(
            ["Labels", "Pseudo-labels", "Disagreements", "Likely wrong", "Duplicates", "Outliers", "Similar"]
        )
        with tab_wrong:
            insight.likely_wrong_tab(proj)
        with tab_dups:
            insight.duplicates_tab(proj)
        with tab_out:
            insight.outliers_tab(proj)
        with tab_sim:
            insight.similar_tab(proj)
        with tab_team:
            disagreements.render_tab(proj)
        with tab_labels:
            f = st.columns(3, vertical_alignment="bottom")
            cls = f[0].selectbox("Class", ["all", *classes])
            source = f[1].selectbox("Source", ["all", "human", "import"])
            disagree = f[2].toggle("Only where the model disagrees")
            rows = proj.reads.labels()
            if cls != "all":
                rows = [r for r in rows if r["class"] == cls]
            if source != "all":
                rows = [r for r in rows if r["source"] == source]
            scores = proj.scores()
            pred: dict[int, tuple[str, float]] = {}
            if scores is not None and rows:
                ids = np.asarray([r["item_id"] for r in rows])
                pos = scores.rows(ids)
                have = pos >= 0
                probs = np.asarray(scores.probs[pos[have]])  # one read of the memory map, rows in id order
                for item_id, pr in zip(ids[have].tolist(), probs, strict=True):
                    pred[item_id] = (scores.classes[int(pr.argmax())], float(pr.max()))
            if disagree:
                rows = [r for r in rows if r["item_id"] in pred and pred[r["item_id"]][0] != r["class"]]
            st.caption(f"{len(rows)} labeled image(s)")
            pages = max(1, -(-len(rows) // PAGE))
            page = st.number_input("Page", 1, pages, 1) if pages > 1 else 1
            shown = rows[(page - 1) * PAGE : page * PAGE]
            options = [*classes, state.NONE]
            with st.form("fix"):
                for col, r in _grid(shown, images, proj.store):
                    with col:
                        p = pred.get(r["item_id"])
                        st.text(f"{r['source']}" + (f" · model: {p[0]} ({p[1]:.0%})" if p else ""))
                        st.selectbox(
                            "label",
                            options,
                            index=options.index(r["class"]),
                            key=f"fix_{r['item_id']}",
                            label_visibility="collapsed",
                        )
                submitted = st.form_submit_button("Save corrections", type="primary", disabled=not shown)
            if submitted:
                changes = {
                    r["item_id"]: st.session_state[f"fix_{r['item_id']}"]
                    for r in shown
                    if st.session_state.get(f"fix_{r['item_id']}") != r["class"]
                }
                if changes:
                    _save(root, changes, state.annotator())
                else:
                    state.flash("No label was changed.", "info")
                st.rerun()
        with tab_pseudo:
            pl = proj.reads.pseudo_labels()
            if not pl:
                st.info("No pseudo-labels in use. They are chosen anew each round when pseudo-labelling is on.")
            else:
                st.caption(
                    f"{len(pl)} pseudo-label(s) from round {pl[0]['round']}; accepting makes them human "
                    "labels, rejecting removes them."
                )
                shown = pl[:PAGE]
                picks = []
                for col, r in _grid(shown, images, proj.store):
                    with col:
                        st.text(f"{r['class']} ({r['confidence']:.0%})")
                        if st.checkbox("select", key=f"ps_{r['item_id']}", value=True):
                            picks.append(r)
                b = st.columns(2)
                b[0].button(
                    "Accept selected",
                    on_click=_pseudo,
                    key="ps_accept",
                    args=(root, [r["item_id"] for r in picks], [r["class"] for r in picks], True, state.annotator()),
                )
                b[1].button(
                    "Reject selected",
                    on_click=_pseudo,
                    key="ps_reject",
                    args=(root, [r["item_id"] for r in picks], [r["class"] for r in picks], False, state.annotator()),
                )
