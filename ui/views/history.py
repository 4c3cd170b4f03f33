"""History: the signed-in person's own labels, newest first, and what became of them (:mod:`alwb.history`).

Without accounts it shows the labels of the current annotator name (``?annotator=`` or the server's user).
"""

from __future__ import annotations

import time

import streamlit as st

from alwb.history import own_labels, summarise
from ui import state
from ui.text import md_escape
from ui.views.common import need_project

PAGE = 24
COLUMNS = 6


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def render() -> None:
    """Draw the page."""
    with state.open_project() as proj:
        proj = need_project(proj)
        me = state.annotator()
        entries = own_labels(proj.store, me)
        images = proj.reads.image_root()
        digests = proj.reads.digests([e.path for e in entries])
    st.title("History")
    s = summarise(entries)
    parts = [
        f"{s.answers} answer(s) by {'you' if state.signin() is None else me} in {s.batches} batch(es)",
        f"{s.current} still the item's label",
        f"{s.changed} changed by a reviewer",
        f"{s.confirmed} confirmed by a reviewer",
    ]
    if s.decisions:
        parts.append(f"{s.decisions} decision(s) as reviewer")
    st.caption(md_escape(" · ".join(parts)))
    if not entries:
        st.info("No labels of yours yet: answer a batch on the Label page.")
        return
    f = st.columns([1, 1, 2], vertical_alignment="bottom")
    only_changed = f[0].toggle("Only those a reviewer changed", key="hist_changed")
    shown = [e for e in entries if e.changed] if only_changed else entries
    pages = max(1, -(-len(shown) // PAGE))
    page = int(f[1].number_input("Page", 1, pages, 1, key="hist_page")) if pages > 1 else 1
    f[2].caption(f"{len(shown)} label(s), newest first · page {page} of {pages}")
    rows = shown[(page - 1) * PAGE : page * PAGE]
    for start in range(0, len(rows), COLUMNS):
        for col, e in zip(st.columns(COLUMNS), rows[start : start + COLUMNS], strict=False):
            with col.container(border=True, key=f"hcard_{e.label_id}"):
                img = state.image_bytes(images, e.path, 128, digests.get(e.path))
                if img:
                    st.image(img[0], width="stretch", output_format=img[1])
                else:
                    st.caption(md_escape(state.image_problem(images, e.path, digests.get(e.path))))
                name = e.path.replace("\\", "/").rsplit("/", 1)[-1]
                answer = state.NONE if e.answer is None else e.answer
                st.text(name)
                st.text(f"{'decided' if e.decision else 'answer'}: {answer}")
                batch = f"batch {e.batch_id[:8]}" if e.batch_id else "no batch"
                st.caption(md_escape(f"{_when(e.at)} · {batch} · round {e.round}"))
                if e.reviewer is not None:
                    decided = state.NONE if e.reviewed_as is None else e.reviewed_as
                    if e.changed:
                        st.warning(md_escape(f"changed by {e.reviewer} to {decided}"), icon="✏️")
                    else:
                        st.success(md_escape(f"confirmed by {e.reviewer}"), icon="✔️")
                elif not e.current:
                    st.caption("replaced by a later label")
