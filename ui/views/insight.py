"""The dataset views of :mod:`alwb.insight` on the Review page (likely wrong labels, near-duplicate groups, outliers,
similar images), the Progress page (validation leakage) and the Map page.

Every view reads the saved findings (:func:`alwb.insight.load_findings`); when they no longer hold (new labels, new
images, a new round) the background job recomputes them (:func:`alwb.insight.jobs.start_background`) and the page
says so while it shows the last ones: nothing here makes labeling wait.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from alwb import insight
from alwb.errors import AlwbError
from alwb.insight import jobs
from alwb.project import Project
from ui import state
from ui.text import md_escape
from ui.views.common import PHASES

COLUMNS = 6
GROUPS_PER_PAGE = 5


# ----------------------------------------------------------------------------------------------- shared
def role(proj: Project) -> str:
    """The signed-in person's role; ``admin`` in a project without accounts (one person, the owner)."""
    from alwb.team import users

    if state.signin() is None:
        return "admin"
    try:
        return users.get_user(proj.store, state.annotator()).role
    except AlwbError:
        return "annotator"


def findings(proj: Project, *, start: bool = True) -> insight.Findings | None:
    """The saved findings, after starting the background job when they no longer hold (or were never computed);
    a line says what the job is doing."""
    found = insight.load_findings(proj)
    fresh = found is not None and insight.is_fresh(proj, found)
    root = proj.root
    running = jobs.is_running(root)
    job = jobs.read_state(root)
    if not fresh and not running and start:
        if job.get("state") == "failed" and time.time() - float(job.get("at", 0)) < 300:
            st.error(md_escape(f"Computing the findings failed: {job.get('error')}"))
        elif insight.insight_backbone(proj)[0] is None:
            st.info(insight.NO_BACKBONE)
            return found
        else:
            jobs.start_background(root)
            running = True
    if running:
        phase = job.get("phase")
        where = f" ({PHASES.get(phase, phase)} {job.get('done')}/{job.get('total')})" if phase else ""
        st.caption(
            f"Updating the findings in the background{where}; "
            + ("these are from before the latest changes." if found else "they appear here when ready.")
        )
    elif found is not None and not fresh:
        st.caption("These findings are from before the latest changes.")
    if found is not None and found.missing:
        st.caption(f"{found.missing} image(s) have no embedding yet and are not in these findings.")
    return found


def _thumb(store: Any, stored: str, size: int = 160) -> None:
    """The item stored as ``stored``, only while its file holds the content imported, else why not."""
    images = store.image_root()
    digest = store.digests([stored]).get(stored)
    shown = state.image_bytes(images, stored, size, digest)
    if shown:
        st.image(shown[0], width="stretch", output_format=shown[1])
    else:
        st.caption(md_escape(state.image_problem(images, stored, digest)))


def _flash_error(exc: Exception) -> None:
    state.flash(f"Nothing was saved: {exc}", "error")


# ----------------------------------------------------------------------------------------------- likely wrong
def _verdict(root: str, flag: dict, answer: str | None, reviewer: str) -> None:
    with Project.open(root) as proj:
        try:
            v = insight.Verdict(
                int(flag["item_id"]), "label", answer, flag["label"], flag["suggested"], float(flag["score"])
            )
            insight.record_verdicts(proj, [v], reviewer)
            if answer == flag["label"]:
                state.flash(f"Kept '{flag['label']}'.", "info")
            else:
                state.flash(f"Changed '{flag['label']}' to '{answer or 'none of these'}'.")
        except AlwbError as exc:
            _flash_error(exc)


def likely_wrong_tab(proj: Project) -> None:
    """Flags of likely wrong labels, one at a time: keep (K) or accept the suggestion (A) in one key press."""
    found = findings(proj)
    prec = insight.flag_precision(proj)
    if prec["decided"]:
        st.caption(
            f"Reviewers confirmed {prec['confirmed']} of the {prec['decided']} flags they answered: alwb's flags "
            f"were right {prec['precision']:.0%} of the time."
        )
    if found is None:
        return
    decided = insight.decided_items(proj, "label")
    current = proj.reads.label_map()
    todo = [f for f in found.label_issues if f["item_id"] not in decided and current.get(f["item_id"]) == f["label"]]
    st.caption(
        f"{found.flagged_total} label(s) look wrong to cleanlab on out-of-sample probabilities of {found.labeled} "
        f"labeled image(s); {len(todo)} left to answer."
    )
    if not todo:
        st.success("No flag left to answer.")
        return
    flag = todo[0]
    root, reviewer = str(proj.root), state.annotator()
    left, right = st.columns([1, 2])
    with left:
        _thumb(proj.store, flag["path"], 256)
    with right:
        st.markdown(
            md_escape(f"Given label: {flag['label']} · suggested: {flag['suggested']} · score {flag['score']:.2f}")
        )
        st.caption("score: 1 − cleanlab's self-confidence (the out-of-sample probability of the given label)")
        b = st.columns(3)
        b[0].button(
            f"Keep '{flag['label']}' (K)",
            key=f"lw_keep_{flag['item_id']}",
            shortcut="K",
            on_click=_verdict,
            args=(root, flag, flag["label"], reviewer),
        )
        b[1].button(
            f"Change to '{flag['suggested']}' (A)",
            key=f"lw_change_{flag['item_id']}",
            shortcut="A",
            type="primary",
            on_click=_verdict,
            args=(root, flag, flag["suggested"], reviewer),
        )
        b[2].button(
            "None of these (N)",
            key=f"lw_none_{flag['item_id']}",
            shortcut="N",
            on_click=_verdict,
            args=(root, flag, None, reviewer),
        )
        other = st.selectbox("Or another class", [c for c in proj.classes if c != flag["label"]], key="lw_other")
        st.button(
            "Change to this class",
            key=f"lw_other_{flag['item_id']}",
            on_click=_verdict,
            args=(root, flag, other, reviewer),
        )
        with st.expander("Similar images"):
            similar_strip(proj, int(flag["item_id"]))
    nxt = todo[1 : 1 + COLUMNS]
    if nxt:
        st.caption("Next")
        for col, f in zip(st.columns(COLUMNS), nxt, strict=False):
            with col:
                _thumb(proj.store, f["path"], 128)
                st.caption(md_escape(f"{f['label']} → {f['suggested']} ({f['score']:.2f})"))


# ----------------------------------------------------------------------------------------------- duplicates
def _label_group(root: str, item_ids: list[int], key: str, annotator: str) -> None:
    answer = st.session_state.get(key)
    with Project.open(root) as proj:
        try:
            _, n = insight.label_items(proj, item_ids, None if answer == state.NONE else answer, annotator)
            state.flash(f"Labeled the group of {len(item_ids)} as '{answer}' in one batch ({n} label(s) written).")
        except AlwbError as exc:
            _flash_error(exc)


def duplicates_tab(proj: Project) -> None:
    """Near-duplicate groups; one answer labels a whole group in one transaction."""
    found = findings(proj, start=False)
    if found is None:
        st.info("No findings yet (the Likely wrong tab starts computing them).")
        return
    groups = found.near_duplicates
    thr = found.duplicate_threshold
    st.caption(
        f"{len(groups)} group(s) of near-duplicates: embeddings closer than {thr['factor']:g} × the median "
        "nearest-neighbour distance (identical files are never imported twice)."
    )
    if not groups:
        return
    pages = max(1, -(-len(groups) // GROUPS_PER_PAGE))
    page = st.number_input("Page", 1, pages, 1, key="dup_page") if pages > 1 else 1
    current = proj.reads.label_map()
    options = [*proj.classes, state.NONE]
    root, who = str(proj.root), state.annotator()
    for g_no, group in enumerate(groups[(page - 1) * GROUPS_PER_PAGE : page * GROUPS_PER_PAGE]):
        number = (page - 1) * GROUPS_PER_PAGE + g_no + 1
        splits = {m["split"] for m in group}
        labels = {current.get(m["item_id"]) for m in group}
        note = " · validation and training items together (leak)" if {"val", "pool"} <= splits else ""
        agree = " · labels agree" if len(labels) == 1 and None not in labels else ""
        st.markdown(md_escape(f"Group {number}: {len(group)} images{agree}{note}"))
        for col, m in zip(st.columns(COLUMNS), group[:COLUMNS], strict=False):
            with col:
                _thumb(proj.store, m["path"], 128)
                st.caption(md_escape(f"{current.get(m['item_id']) or 'unlabeled'} · {m['split']}"))
        if len(group) > COLUMNS:
            st.caption(f"… and {len(group) - COLUMNS} more")
        c = st.columns([2, 1], vertical_alignment="bottom")
        known = [x for x in labels if x]
        key = f"dup_answer_{number}"
        c[0].selectbox("Label the whole group as", options, index=options.index(known[0]) if known else 0, key=key)
        c[1].button(
            "Label group",
            key=f"dup_go_{number}",
            on_click=_label_group,
            args=(root, [int(m["item_id"]) for m in group], key, who),
        )


# ----------------------------------------------------------------------------------------------- outliers
def _outlier_answer(root: str, rows: list[dict], action: str, reviewer: str) -> None:
    with Project.open(root) as proj:
        if action == "remove" and role(proj) != "admin":  # the button is an admin's only; checked again here
            state.flash("Only an admin removes images from the project.", "error")
            return
        try:
            current = proj.reads.label_map(include_none=True)
            verdicts = [
                insight.Verdict(
                    int(r["item_id"]),
                    "outlier",
                    current.get(int(r["item_id"])) if action == "keep" else None,
                    given=current.get(int(r["item_id"])),
                    score=float(r["score"]),
                    remove=action == "remove",
                )
                for r in rows
            ]
            insight.record_verdicts(proj, verdicts, reviewer)
            done = {"keep": "kept", "none": "answered 'none of these'", "remove": "removed"}[action]
            state.flash(f"{len(rows)} outlier(s) {done}.")
        except AlwbError as exc:
            _flash_error(exc)


def outliers_tab(proj: Project) -> None:
    """Images far from everything: answer "none of these", keep them, or (admins) remove them from the project."""
    found = findings(proj, start=False)
    if found is None:
        st.info("No findings yet (the Likely wrong tab starts computing them).")
        return
    decided = insight.decided_items(proj, "outlier")
    rows = [r for r in found.outliers if r["item_id"] not in decided]
    st.caption(
        f"{len(rows)} outlier(s) to look at: images whose mean distance to their 10 nearest neighbours is far above "
        "the usual (score: that distance over its median)."
    )
    if not rows:
        return
    shown = rows[: COLUMNS * 3]
    picks = []
    for start in range(0, len(shown), COLUMNS):
        for col, r in zip(st.columns(COLUMNS), shown[start : start + COLUMNS], strict=False):
            with col:
                _thumb(proj.store, r["path"], 128)
                if st.checkbox(f"{r['score']:.2f}", key=f"out_{r['item_id']}", value=True):
                    picks.append(r)
    root, who = str(proj.root), state.annotator()
    b = st.columns(3)
    b[0].button("None of these", key="out_none", on_click=_outlier_answer, args=(root, picks, "none", who))
    b[1].button("Keep as they are", key="out_keep", on_click=_outlier_answer, args=(root, picks, "keep", who))
    if role(proj) == "admin":
        b[2].button(
            "Remove from the project", key="out_remove", on_click=_outlier_answer, args=(root, picks, "remove", who)
        )


# ----------------------------------------------------------------------------------------------- similar
def similar_strip(proj: Project, item_id: int, k: int = COLUMNS) -> None:
    """The ``k`` images nearest to ``item_id``, with their labels."""
    try:
        near = insight.similar(proj, item_id, k)
    except LookupError as exc:
        st.caption(md_escape(str(exc)))
        return
    for col, d in zip(st.columns(k), near, strict=False):
        with col:
            _thumb(proj.store, d["path"], 112)
            st.caption(md_escape(f"{d['label'] or 'unlabeled'} · {d['distance']:.2f}"))


def similar_tab(proj: Project) -> None:
    """Any image (by its path or id) → its nearest neighbours."""
    found = insight.load_findings(proj)
    if found is None:
        st.info("No embeddings yet: the Likely wrong tab starts computing them.")
        return
    ref = st.text_input("Image (a path as 'alwb query' prints it, or an item id)", key="sim_ref")
    if not ref:
        return
    row = proj.reads.item(ref)
    if row is None:
        st.warning("No such image in the project.")
        return
    _thumb(proj.store, row["path"], 192)
    similar_strip(proj, int(row["id"]))


# ----------------------------------------------------------------------------------------------- progress
def leakage_panel(root: str) -> None:
    """The Progress page's leakage figure: validation items with a near-copy in training, accuracy without them."""
    with Project.open(root) as proj:
        _leakage(proj)


def _leakage(proj: Project) -> None:
    st.subheader("Near-copies of validation items in training")
    found = insight.load_findings(proj)
    if found is None:
        st.caption("Not checked yet: the Review page's 'Likely wrong' tab computes the findings from the embeddings.")
        return
    leak = found.leakage
    n, k = leak["validation_items"], leak["validation_items_with_copy"]
    if not insight.is_fresh(proj, found):
        st.caption("Checked before the latest changes (the Review page updates it).")
    if k == 0:
        st.success(f"None of the {n} labeled validation items has a near-copy among the training items.")
    else:
        st.warning(
            f"{k} of the {n} labeled validation items have a near-copy among the training items: their accuracy "
            "measures memory as much as the model."
        )
    if leak["accuracy"] is not None:
        lo, hi = leak["interval"]
        cols = st.columns(2)
        cols[0].metric("Validation accuracy", f"{leak['accuracy']:.1%}", help=f"95% interval {lo:.1%} – {hi:.1%}")
        if leak["accuracy_without"] is not None:
            lo2, hi2 = leak["interval_without"]
            cols[1].metric(
                "Without the items that have a copy",
                f"{leak['accuracy_without']:.1%}",
                delta=f"{leak['accuracy_without'] - leak['accuracy']:+.1%}",
                help=f"95% interval {lo2:.1%} – {hi2:.1%}",
            )
            st.caption(f"95% intervals: {lo:.1%} – {hi:.1%} with them, {lo2:.1%} – {hi2:.1%} without them.")
    else:
        st.caption("No model has scored the validation sample yet.")
