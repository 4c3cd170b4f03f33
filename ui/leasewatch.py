"""Give back the leases of a closed tab (best effort; a lease's expiry stays the backstop).

Streamlit tells no page that its tab closed, but the server knows which sessions are still connected
(``Runtime.is_active_session``). The Label page records, per browser session, the team batch it shows
(:func:`remember`); a thread of this server process looks every :data:`LOOK_S` seconds, and once a session has been
gone for ``$ALWB_CLOSED_TAB_S`` seconds (default :data:`GRACE_S`: a reload or a dropped connection comes back as
soon as that), releases its items with their drafts (:func:`alwb.team.leases.release`), except those another live
session of the same person shows (a second tab). A session still connected whose sign-in ended (signed out,
expired, disabled) gives its items back the same way, within :data:`CHECK_S` seconds. Without a Streamlit runtime
(tests, bare mode) nothing is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

LOOK_S = 2.0
GRACE_S = 20.0
#: Seconds between two checks that a live session is still signed in.
CHECK_S = 10.0
ENV_GRACE = "ALWB_CLOSED_TAB_S"


@dataclass
class _Shown:
    root: str
    annotator: str
    items: list[int]
    token: str | None = None
    gone_since: float | None = None
    checked: float = 0.0


_shown: dict[str, _Shown] = {}
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _session_id() -> str | None:
    try:
        from streamlit import runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:
        return None
    if not runtime.exists():
        return None
    ctx = get_script_run_ctx()
    return None if ctx is None else str(ctx.session_id)


def remember(root: str, annotator: str, item_ids: list[int], token: str | None = None) -> None:
    """This browser session shows ``item_ids``, leased to ``annotator`` signed in with session ``token`` (an empty
    list: nothing any more)."""
    sid = _session_id()
    if sid is None:
        return
    with _lock:
        if item_ids:
            old = _shown.get(sid)
            checked = old.checked if old is not None and old.token == token else 0.0
            _shown[sid] = _Shown(str(root), annotator, [int(i) for i in item_ids], token, checked=checked)
        else:
            _shown.pop(sid, None)
    _start()


def _start() -> None:
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=_watch, name="alwb-closed-tabs", daemon=True)
        _thread.start()


def _grace() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_GRACE, GRACE_S)))
    except ValueError:
        return GRACE_S


def _watch() -> None:
    from streamlit import runtime

    while True:
        time.sleep(LOOK_S)
        if not runtime.exists():
            continue
        with contextlib.suppress(Exception):  # a look that fails is tried again at the next
            release_closed(runtime.get_instance().is_active_session, time.monotonic(), _grace(), signed_in)


def signed_in(root: str, token: str) -> bool:
    """True while ``token`` is a live sign-in of the project at ``root`` (False once signed out, expired or
    disabled); True when the store cannot tell (unreachable): nothing is released on a doubt."""
    from alwb.project import Project
    from alwb.team import users

    try:
        with Project.open(root) as proj:
            return users.session_user(proj.store, token) is not None
    except Exception:
        return True


def release_closed(
    is_active: Callable[[str], bool],
    now: float,
    grace: float,
    signed_in: Callable[[str, str], bool] | None = None,
) -> list[tuple[str, list[int]]]:
    """Release the items of sessions gone for ``grace`` seconds (``is_active(session_id)``), and of live ones
    whose sign-in ended (``signed_in(root, token)``, asked every :data:`CHECK_S` seconds per session: a
    sign-out); returns (annotator, items released) per session released."""
    due: list[_Shown] = []
    ask: list[tuple[str, _Shown]] = []
    with _lock:
        for sid, shown in list(_shown.items()):
            if is_active(sid):
                shown.gone_since = None
                if signed_in is not None and shown.token and now - shown.checked >= CHECK_S:
                    shown.checked = now
                    ask.append((sid, shown))
            elif shown.gone_since is None:
                shown.gone_since = now
            elif now - shown.gone_since >= grace:
                due.append(_shown.pop(sid))
    for sid, shown in ask:  # outside the lock: each asks the store
        assert signed_in is not None and shown.token is not None
        if not signed_in(shown.root, shown.token):
            with _lock:
                if _shown.get(sid) is shown:
                    due.append(_shown.pop(sid))
    with _lock:
        kept = {(s.root, s.annotator, i) for s in _shown.values() for i in s.items}
    out = []
    for shown in due:
        items = [i for i in shown.items if (shown.root, shown.annotator, i) not in kept]
        if not items:
            continue
        from alwb.project import Project
        from alwb.team import leases

        try:
            with Project.open(shown.root) as proj:
                n = leases.release(proj.store, shown.annotator, items)
        except Exception as exc:  # the store is away: the leases expire by themselves
            log.warning("could not give back a closed tab's items: %s", exc)
            continue
        log.info("a closed tab of %s gave back %d item(s)", shown.annotator, n)
        out.append((shown.annotator, items))
    return out
