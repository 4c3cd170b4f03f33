"""Sign-in for a project with accounts (:mod:`alwb.team.users`); a project without users needs none.

The session keeps the token of its sign-in (``ui.state.signin``); every script run checks it against the store,
so an expired session, a disabled account or a changed password signs the person out at their next click.

A reload or a new tab starts a new Streamlit session: the token also lives in a browser cookie (one per project,
``path=/``, ``SameSite=Strict``, ``Secure`` over HTTPS, expiring with the session), written by a small script on the
page and read back from the cookies the browser sends when it connects (``st.context.cookies``). Streamlit cannot
set an HttpOnly cookie, so a script on the page could read it; the store keeps only the token's SHA-256, the token
never goes into the URL, and signing out ends the session in the store and removes the cookie.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import streamlit as st

from alwb.errors import AlwbError, StoreUnavailable
from alwb.project import Project
from alwb.team import users
from ui import state
from ui.text import md_escape

COOKIE_PREFIX = "alwb_session_"
#: Session key of a token known to be dead (signed out or expired): its cookie is not tried again.
_DEAD = "alwb_dead_token"
#: Tokens are ``secrets.token_urlsafe``; nothing else is ever written into the page's script.
_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def cookie_name(proj: Project) -> str:
    """The project's cookie name: the same on every server of the project (it follows the store, not the path)."""
    return COOKIE_PREFIX + users.project_key(proj.store)


def gate(root: Path) -> users.User | None | bool:
    """The signed-in user; None when the project has no accounts; False after drawing the sign-in form (the
    caller stops the page there)."""
    with Project.open(root) as proj:
        store = proj.store
        if not users.auth_required(store):
            return None
        name = cookie_name(proj)
        current = state.signin()
        token = current[0] if current is not None else state.cookie(name)
        if token and token != state.remember(_DEAD):
            user = users.session_user(store, token)
            if user is not None:
                if current is None:  # a reload or a new tab: signed in again from the cookie
                    state.set_signin(token, user.name)
                _keep_cookie(name, token, users.session_expires_at(store, token))
                return user
            state.remember(_DEAD, token)
            if current is not None:
                state.set_signin(None)
            st.info("Your session ended: please sign in again.")
        _form(proj, root)
        _drop_cookie(name, state.remember(_DEAD))
    return False


def client_address() -> str | None:
    """The address this session's browser connected from (a reverse proxy's own address behind one)."""
    try:
        value = st.context.ip_address
    except Exception:  # no browser behind this session (tests, bare mode)
        return None
    return str(value) if value else None


def _form(proj: Project, root: Path) -> None:
    st.title("Sign in")
    st.caption(f"Project {root.name}")
    if users.active_user_count(proj.store) == 0:
        st.warning(
            "Every account of this project is disabled, so nobody can sign in. An administrator can enable one on "
            "the server."
        )
    with st.form("signin"):
        name = st.text_input("Name", key="signin_name")
        password = st.text_input("Password", type="password", key="signin_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            session = users.sign_in(proj.store, name, password, address=client_address())
        except users.SignInThrottled as exc:
            st.error(str(exc))
        except AlwbError as exc:
            st.error(str(exc))
        else:
            state.set_signin(session.token, session.user.name)
            st.rerun()


def _script(body: str, *, sidebar: bool) -> None:
    """Run a line of JavaScript in the page (at a place that is the same on every run: nothing moves)."""
    (st.sidebar if sidebar else st).html(f"<script>{body}</script>", unsafe_allow_javascript=True)


def _keep_cookie(name: str, token: str, expires_at: float | None) -> None:
    """Keep the session's cookie in the browser until the session expires."""
    if not (_SAFE.match(name) and _SAFE.match(token)) or expires_at is None:
        return
    expires = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(expires_at))
    _script(
        f"document.cookie = '{name}={token}; path=/; expires={expires}; SameSite=Strict'"
        " + (location.protocol === 'https:' ? '; Secure' : '');",
        sidebar=True,
    )


def _drop_cookie(name: str, dead: str | None) -> None:
    """Remove the cookie when it holds the dead token (a newer sign-in in another tab keeps its own)."""
    if not dead or not (_SAFE.match(name) and _SAFE.match(dead)):
        return
    _script(
        f"if (document.cookie.split('; ').includes('{name}={dead}'))"
        f" document.cookie = '{name}=; path=/; max-age=0; SameSite=Strict';",
        sidebar=False,
    )


def still_allowed(page: str) -> bool:
    """For a fragment's own rerun (it does not run ``app.py``, so the gate there is not passed again): True when
    this session may still open ``page``. Otherwise (signed out, session ended, account disabled, role changed or any
    doubt) the whole app runs again, which shows the sign-in form; the fragment draws and does nothing more. While
    the store cannot be reached, nothing can be done either: the fragment says so and tries again at its next run,
    and the page (its unsaved answers) stays."""
    root = state.project_root()
    if root is None:
        return True
    try:
        with users.open_store(root) as store:
            if not users.auth_required(store):
                return True
            current = state.signin()
            user = users.session_user(store, current[0]) if current is not None else None
            allowed = user is not None and user.may_open(page)
    except StoreUnavailable as exc:
        from ui.views import unavailable

        if state.remember(state.GATE_PASSED):  # the address and reason only to a session that passed the gate
            st.warning(md_escape(unavailable.message(exc, 2)), icon="🔌")
        else:
            st.warning("The project's store cannot be reached right now; retrying in 2 s.", icon="🔌")
        return False
    except Exception:  # fail closed: a full run decides what to show
        allowed = False
    if not allowed:
        st.rerun(scope="app")
    return allowed


def sign_out(root: Path) -> None:
    """End this session's sign-in: the session in the store, and the browser's cookie at the next run."""
    current = state.signin()
    if current is not None:
        with Project.open(root) as proj:
            users.sign_out(proj.store, current[0])
        state.remember(_DEAD, current[0])
    state.set_signin(None)
