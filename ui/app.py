"""alwb workbench: ``streamlit run ui/app.py -- --project PROJECT`` (or ``alwb ui PROJECT``).

Navigation only; every page lives in ``ui.views`` and calls the library. No business logic here. ``ui`` is a
package installed with alwb (``pip install -e .``), so its modules are imported as ``ui.…`` wherever it runs from.
"""

from __future__ import annotations

import logging

import streamlit as st

from alwb.errors import StoreUnavailable
from alwb.jobs import mark_active
from alwb.project import Project
from ui import state
from ui.views import datamap, export, history, label, progress, review, settings, signin, start, unavailable

log = logging.getLogger("alwb.ui")
#: Session key: this session passed the gate (signed in, or a project without accounts).
st.set_page_config(page_title="alwb workbench", page_icon="🏷️", layout="wide")

root = state.project_root()
# The gate, before any page, failing closed: the server's project must be there; a project with accounts shows nothing
# but the sign-in form until the person signs in (None: a project that never had accounts).
if root is not None and not Project.exists(root):
    if state.served_project() is not None:
        log.error("the workbench's project %s holds no alwb project (no alwb.sqlite or store.json)", root)
        st.error("This workbench's project cannot be opened. The server's log says why.")
        st.stop()
    root = None
try:
    user = signin.gate(root) if root is not None else None
except StoreUnavailable as exc:  # the store's server is down or restarting: say so and try again by itself; its
    # address and the driver's reason only to a session that passed the gate before (signed in, or no accounts)
    unavailable.show(exc, root, detail=bool(state.remember(state.GATE_PASSED)))
    st.stop()
except Exception:  # any doubt: no page
    log.exception("the sign-in check failed")
    st.error("Sign-in cannot be checked right now, so no page is shown. The server's log says why.")
    st.stop()
if user is False:
    state.forget(state.GATE_PASSED)
    st.stop()
state.remember(state.GATE_PASSED, True)
state.annotator()  # remembered by the session: a page change clears the URL's parameters
start_page = st.Page(start.render, title="Start", icon=":material/folder_open:", url_path="start")
label_page = st.Page(label.render, title="Label", icon=":material/label:", url_path="label")


review_page = st.Page(review.render, title="Review", icon=":material/fact_check:", url_path="review")


def _home() -> None:
    """The address without a page: Start without a project; Review for a reviewer (a reviewer's sign-in leases no
    labeling batch until they open Label); else Label."""
    if root is None:
        st.switch_page(start_page)
    st.switch_page(review_page if user and user.role == "reviewer" else label_page)


pages = [
    st.Page(_home, title="Home", url_path="home", default=True, visibility="hidden"),
    start_page,
    label_page,
    st.Page(history.render, title="History", icon=":material/history:", url_path="history"),
    st.Page(progress.render, title="Progress", icon=":material/monitoring:", url_path="progress"),
    review_page,
    st.Page(datamap.render, title="Map", icon=":material/scatter_plot:", url_path="map"),
    st.Page(settings.render, title="Settings", icon=":material/settings:", url_path="settings"),
    st.Page(export.render, title="Export", icon=":material/download:", url_path="export"),
]
if user:  # only the pages the role may open (alwb.team.users.PAGES)
    pages = [p for p in pages if p.url_path in ("", "home") or user.may_open(p.url_path)]
page = st.navigation(pages)
if root is not None:
    mark_active(root)  # a background round gives way while the person acts and the page is drawn
with st.sidebar:
    if root is not None:
        st.caption("Project")
        # a folder named just "project" (the demo's data/demo/project) is shown with its parent: "demo"
        st.text(root.resolve().parent.name if root.name == "project" and root.resolve().parent.name else root.name)
    else:
        st.caption("No project open")
    if user:
        st.caption(f"Signed in as {user.name} ({user.role})")
        if st.button("Sign out"):
            signin.sign_out(root)
            st.rerun()
try:
    page.run()
except StoreUnavailable as exc:  # the page's answers stay in the session until a submit commits them
    unavailable.show(exc, root)
finally:
    if root is not None:
        mark_active(root)  # and for a moment after the run, while the browser draws what it sent
