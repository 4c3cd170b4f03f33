"""What a page shows while the project's store cannot be reached (a PostgreSQL server stopped or restarting).

One line says so and when the next try is; a fragment tries again every :data:`RETRY_S` seconds and redraws the
whole page once the store answers. Nothing the person answered is dropped meanwhile: answers chosen on the Label page
live in the session (``ui.state.answers``) until a submit commits them, and "saved" is only said after the commit.
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from alwb.errors import StoreUnavailable
from alwb.project import Project
from ui.text import md_escape

RETRY_S = 3


def message(exc: StoreUnavailable, every: float = RETRY_S) -> str:
    """The one line shown: ``The store is unavailable (REASON); retrying in N s.``"""
    return f"The store is unavailable ({exc.reason}); retrying in {every:g} s."


def show(exc: StoreUnavailable, root: Path | None, *, detail: bool = True) -> None:
    """Say the store is unavailable, then try again every :data:`RETRY_S` seconds until it answers. ``detail=False``
    (a visitor who has not signed in): neither the store's address nor the driver's reason is shown."""
    if not detail:
        st.warning(f"The project's store cannot be reached right now; retrying in {RETRY_S:g} s.", icon="🔌")
        st.session_state["_store_down_at"] = time.time()
        if root is not None:
            _retry(str(root), False)
        return
    st.warning(md_escape(message(exc)), icon="🔌")
    st.caption(
        md_escape(
            f"Store: {exc.location}. Answers you chose and have not submitted stay on this page; "
            "every batch the page said was saved is in the store."
        )
    )
    st.session_state["_store_down_at"] = time.time()
    if root is not None:
        _retry(str(root), True)


@st.fragment(run_every=RETRY_S)
def _retry(root: str, detail: bool) -> None:
    """Every few seconds: open the store; when it answers, draw the page again (the person's session is kept)."""
    if time.time() - float(st.session_state.get("_store_down_at", 0.0)) < RETRY_S / 2:
        return  # the run that has just drawn the message
    try:
        Project.open(root).close()
    except StoreUnavailable as exc:
        still = f"Still unavailable at {time.strftime('%H:%M:%S')}"
        st.caption(md_escape(f"{still}: {exc.reason}" if detail else still + "."))
        return
    st.rerun(scope="app")
