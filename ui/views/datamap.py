"""Map: every embedded image as a point of a 2-D layout (:func:`alwb.insight.compute_map`), coloured by label, the
model's guess, its uncertainty or the issue found; a lasso or box selection shows the images and labels them all in
one transaction; a click on one point opens it with its nearest neighbours.

Streamlit reports a Plotly selection as point indices *per trace*: with one trace per colour group, ``point_index``
numbers the points of that group, not of the page (Streamlit issue 8914). The item id therefore travels in each
point's ``customdata`` and :func:`selected_ids` reads only that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from alwb import insight
from alwb.errors import AlwbError
from alwb.project import Project
from ui import state
from ui.views import insight as views
from ui.views.common import need_project, show_flash

PAGE = "map"
#: session key of the current selection (item ids), kept across reruns until it is labeled or cleared
SELECTION = "map_selection"
COLOUR_BY = ("label", "model guess", "uncertainty", "issue")
SHOWN = 24


def selected_ids(event: Mapping[str, Any] | None) -> list[int]:
    """Item ids of the selected points of a ``st.plotly_chart`` event, from their ``customdata`` (never from
    ``point_index``, which counts within a trace), in selection order without repeats."""
    if not event:
        return []
    sel = event.get("selection") or {}
    out: list[int] = []
    seen: set[int] = set()
    for p in sel.get("points") or []:
        cd = p.get("customdata")
        if cd is None:
            continue
        if isinstance(cd, Mapping):  # a typed array as the browser's JSON writes it: {"0": id}
            cd = [cd[k] for k in sorted(cd, key=int)]
        item = int(cd[0] if isinstance(cd, (list, tuple)) else cd)
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def map_frame(proj: Project, m: dict[str, Any], found: insight.Findings | None) -> pd.DataFrame:
    """One row per point: ``item_id``, ``x``, ``y``, ``label``, ``model guess``, ``uncertainty`` (1 − the top
    probability of the latest round; NaN where it did not score the item) and ``issue``."""
    ids = m["ids"]
    labels = {i: c or state.NONE for i, c in proj.reads.label_map(include_none=True).items()}
    df = pd.DataFrame({"item_id": ids, "x": m["xy"][:, 0], "y": m["xy"][:, 1]})
    df["label"] = [labels.get(int(i), "unlabeled") for i in ids]
    guess = np.full(len(ids), "not scored", dtype=object)
    unc = np.full(len(ids), np.nan)
    scores = proj.scores()
    if scores is not None:
        rows = scores.rows(ids)
        have = rows >= 0
        if have.any():
            probs = np.asarray(scores.probs_at(rows[have]))
            guess[have] = [scores.classes[int(k)] for k in probs.argmax(axis=1)]
            unc[have] = 1.0 - probs.max(axis=1)
    df["model guess"] = guess
    df["uncertainty"] = unc
    issue = {}
    if found is not None:
        for g in found.near_duplicates:
            for mbr in g:
                issue[int(mbr["item_id"])] = "near-duplicate"
        for o in found.outliers:
            issue[int(o["item_id"])] = "outlier"
        for f in found.label_issues:
            issue[int(f["item_id"])] = "likely wrong label"
    df["issue"] = [issue.get(int(i), "none") for i in ids]
    return df


def figure(df: pd.DataFrame, colour: str) -> Any:
    """The Plotly scatter: one trace per colour group (a continuous scale for uncertainty), item ids in
    ``customdata``, lasso as the default drag."""
    import plotly.express as px

    if colour == "uncertainty":
        fig = px.scatter(
            df, x="x", y="y", color="uncertainty", custom_data=["item_id"], color_continuous_scale="Viridis"
        )
    else:
        fig = px.scatter(df, x="x", y="y", color=colour, custom_data=["item_id"])
    fig.update_traces(marker={"size": 5 if len(df) > 2000 else 7})
    fig.update_layout(
        dragmode="lasso",
        height=560,
        margin={"l": 0, "r": 0, "t": 10, "b": 0},
        xaxis={"visible": False},
        yaxis={"visible": False},
        legend={"title": colour},
    )
    return fig


def _bulk_label(root: str, ids: list[int], key: str, annotator: str) -> None:
    answer = st.session_state.get(key)
    with Project.open(root) as proj:
        try:
            _, n = insight.label_items(proj, ids, None if answer == state.NONE else answer, annotator)
            state.flash(f"Labeled {len(ids)} selected image(s) as '{answer}' in one batch ({n} label(s) written).")
            st.session_state[SELECTION] = []
        except AlwbError as exc:
            state.flash(f"Nothing was saved: {exc}", "error")


def render() -> None:
    """Draw the page."""
    with state.open_project() as proj:
        proj = need_project(proj)
        st.title("Map")
        show_flash()
        found = views.findings(proj)
        m = insight.load_map(proj)
        if m is None:
            st.info("The map is computed in the background from the embeddings; it appears here when ready.")
            return
        colour = st.segmented_control("Colour by", COLOUR_BY, default="label", key="map_colour") or "label"
        df = map_frame(proj, m, found)
        st.caption(f"{len(df):,} image(s), laid out by {m['method'].upper()} in {m['seconds']:.1f} s")
        event = st.plotly_chart(
            figure(df, colour),
            on_select="rerun",
            selection_mode=("lasso", "box", "points"),
            key="map_chart",
            width="stretch",
        )
        picked = selected_ids(event)
        if picked != st.session_state.get("map_last_event"):  # a new selection (not the one already labeled)
            st.session_state["map_last_event"] = picked
            st.session_state[SELECTION] = picked
        _selection(proj)


def _selection(proj: Project) -> None:
    """The selected images and the bulk-label form."""
    ids = [int(i) for i in st.session_state.get(SELECTION) or []]
    if not ids:
        st.caption("Draw a lasso or a box around points to see and label them; click a point to open it.")
        return
    root = str(proj.root)
    with Project.open(root) as p:
        images = p.reads.image_root()
        if len(ids) == 1:
            row = p.reads.item(int(ids[0]))
            cols = st.columns([1, 2])
            with cols[0]:
                views._thumb(p.store, row["path"], 320)
            with cols[1]:
                st.text(str(images.locate(row["path"])))
                st.caption("Nearest images")
                views.similar_strip(p, ids[0])
        st.subheader(f"{len(ids)} selected")
        rows = p.reads.items(ids[:SHOWN])
        for start in range(0, len(rows), 6):
            for col, r in zip(st.columns(6), rows[start : start + 6], strict=False):
                with col:
                    views._thumb(p.store, r["path"], 112)
        if len(ids) > SHOWN:
            st.caption(f"… and {len(ids) - SHOWN} more")
        options = [*p.classes, state.NONE]
    c = st.columns([2, 1, 1], vertical_alignment="bottom")
    c[0].selectbox("Label them all as", options, key="map_answer")
    c[1].button(
        f"Label {len(ids)} image(s)",
        key="map_go",
        type="primary",
        on_click=_bulk_label,
        args=(root, ids, "map_answer", state.annotator()),
    )
    if c[2].button("Clear selection", key="map_clear"):
        st.session_state[SELECTION] = []
        st.rerun()
