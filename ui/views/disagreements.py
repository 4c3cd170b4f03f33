"""The Review page's Disagreements tab: agreement on the overlap items and the queue of items whose annotators
disagree; a reviewer's decision becomes the label (:mod:`alwb.team.agreement`)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from alwb.errors import AlwbError
from alwb.project import Project
from alwb.team import agreement
from ui import state
from ui.text import md_escape

PAGE = 12
COLUMNS = 4


def _decide(root: str, decisions: dict[int, str], reviewer: str) -> None:
    proj = Project.open(root)
    try:
        for item_id, choice in decisions.items():
            agreement.decide(proj.store, item_id, reviewer, None if choice == state.NONE else choice)
        state.flash(f"Saved {len(decisions)} decision(s); the annotators' answers stay in the history.")
    except AlwbError as exc:
        state.flash(f"Not saved: {exc}", "error")
    finally:
        proj.close()


def render_tab(proj: Project) -> None:
    """Draw the tab's content (inside ``st.tabs``)."""
    store = proj.store
    images = store.image_root()
    root = str(proj.root)
    overall = agreement.overall_agreement(store)
    if overall is None:
        if state.signin() is None:  # one person labeling: nobody to disagree with
            st.info(
                "Disagreements compare two people's answers on the same images; with one person labeling, "
                "there are none."
            )
        else:
            st.info("No item has answers from two annotators yet (the overlap share goes to two people on purpose).")
        return
    kappa = "undefined (one answer only)" if overall.kappa is None else f"{overall.kappa:.2f}"
    st.caption(
        f"Fleiss' kappa {kappa} over {overall.n_items} item(s) answered by {overall.raters_per_item} annotators "
        f"each ({overall.n_annotators} annotators in all)"
    )
    pairs = agreement.pairwise_kappa(store)
    st.dataframe(
        pd.DataFrame(
            [
                {"annotators": f"{p.a} · {p.b}", "items": p.n_items, "agreement": p.agreement, "Cohen's kappa": p.kappa}
                for p in pairs
            ]
        ),
        hide_index=True,
    )
    queue = agreement.review_queue(store)
    st.caption(f"{len(queue)} disagreement(s) to decide")
    if not queue:
        return
    classes = proj.classes
    options = [*classes, state.NONE]
    shown = queue[:PAGE]
    with st.form("decide"):
        for start in range(0, len(shown), COLUMNS):
            for col, d in zip(st.columns(COLUMNS), shown[start : start + COLUMNS], strict=False):
                with col:
                    row = store.item(d.item_id)
                    img = state.image_bytes(images, row["path"], 128, row["sha256"]) if row is not None else None
                    if img:
                        st.image(img[0], width="stretch", output_format=img[1])
                    elif row is not None:
                        st.caption(md_escape(state.image_problem(images, row["path"], row["sha256"])))
                    st.text(" · ".join(f"{n}: {state.NONE if c is None else c}" for n, c in d.answers.items()))
                    st.selectbox("decision", ["", *options], key=f"dec_{d.item_id}", label_visibility="collapsed")
        submitted = st.form_submit_button("Save decisions", type="primary")
    if submitted:
        chosen = {d.item_id: st.session_state.get(f"dec_{d.item_id}") for d in shown}
        decisions = {i: c for i, c in chosen.items() if c}
        if decisions:
            _decide(root, decisions, state.annotator())
        else:
            state.flash("No decision was chosen.", "info")
        st.rerun()


def render_team_progress() -> None:
    """Progress page: answers per annotator per hour, and each annotator's agreement with the reviewers."""
    with state.open_project() as proj:
        if proj is None:
            return
        per_hour = agreement.labels_per_hour(proj.store)
        with_reviews = agreement.agreement_with_reviews(proj.store)
    if len({name for name, _, _ in per_hour}) < 2:
        return  # one person: the charts above say it all
    st.subheader("Annotators")
    df = pd.DataFrame(per_hour, columns=["annotator", "hour", "answers"])
    df["hour"] = pd.to_datetime(df["hour"], unit="s")
    st.dataframe(df.pivot_table(index="hour", columns="annotator", values="answers", fill_value=0), width="stretch")
    if with_reviews:
        st.dataframe(
            pd.DataFrame(
                [
                    {"annotator": n, "decisions on their items": d, "agreed with the reviewer": a, "share": a / d}
                    for n, (a, d) in with_reviews.items()
                ]
            ),
            hide_index=True,
        )
