"""Sign-in for a project with accounts (:mod:`alwb.users`); a project without users needs none.

The session keeps the token of its sign-in (``ui.state.signin``); every script run checks it against the store,
so an expired session, a disabled account or a changed password signs the person out at their next click.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from alwb import users
from alwb.errors import AlwbError
from alwb.loop import Project
from ui import state


def gate(root: Path) -> users.User | None | bool:
    """The signed-in user; None when the project has no accounts; False after drawing the sign-in form (the
    caller stops the page there)."""
    with Project.open(root) as proj:
        store = proj.store
        if not users.auth_required(store):
            return None
        current = state.signin()
        if current is not None:
            user = users.session_user(store, current[0])
            if user is not None:
                return user
            state.set_signin(None)
            st.info("Your session ended: please sign in again.")
        _form(store, root)
    return False


def _form(store: object, root: Path) -> None:
    st.title("Sign in")
    st.caption(f"Project {root.name}")
    with st.form("signin"):
        name = st.text_input("Name", key="signin_name")
        password = st.text_input("Password", type="password", key="signin_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            session = users.sign_in(store, name, password)  # type: ignore[arg-type]
        except users.SignInThrottled as exc:
            st.error(str(exc))
        except AlwbError as exc:
            st.error(str(exc))
        else:
            state.set_signin(session.token, session.user.name)
            st.rerun()


def sign_out(root: Path) -> None:
    """End this session's sign-in."""
    current = state.signin()
    if current is not None:
        with Project.open(root) as proj:
            users.sign_out(proj.store, current[0])
    state.set_signin(None)
