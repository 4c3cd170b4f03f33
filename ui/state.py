"""The session's side of the workbench: ``st.session_state``, ``st.query_params`` and Streamlit caches.

Which project a page shows: ``alwb ui PROJECT`` fixes it when the server starts (``--project`` / ``$ALWB_PROJECT``)
and nothing a browser sends can change it; the path never appears in the URL. Only a workbench started without a
project on this machine alone (:func:`local_mode`: one person, loopback) opens projects from the Start page, and
keeps the one open in the URL (``?project=...``) so that a reload keeps it. Labels live in the store; the session
only holds the batch on screen and in-progress answers.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import streamlit as st

from alwb.intake.images import ImageRoot
from alwb.project import Project

SKIP = "(skip)"
NONE = "(none of these)"


def _argv_project() -> str | None:
    argv = sys.argv
    if "--project" in argv:
        i = argv.index("--project")
        if i + 1 < len(argv):
            return argv[i + 1]
    return os.environ.get("ALWB_PROJECT") or None


#: The address the server listens on (set by ``alwb ui``; unset means this machine only, as in tests).
ENV_HOST = "ALWB_UI_HOST"
#: Folders (``os.pathsep``-separated) a served project may import images from by path (``alwb ui --import-dir``).
ENV_IMPORT_DIRS = "ALWB_IMPORT_DIRS"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def served_project() -> Path | None:
    """The project the server was started with (``alwb ui PROJECT``): the only one it serves; None without one."""
    raw = _argv_project()
    return Path(raw) if raw else None


def on_loopback() -> bool:
    """True when the server listens on this machine only."""
    return (os.environ.get(ENV_HOST) or "127.0.0.1") in _LOOPBACK


def local_mode() -> bool:
    """One person on this machine: no project fixed by the server, and the server listens on loopback only. Only
    then does the Start page open and create projects from paths the person types."""
    return served_project() is None and on_loopback()


def import_dirs() -> list[Path]:
    """The folders a served project may import images from by path (resolved; empty: uploads only)."""
    raw = os.environ.get(ENV_IMPORT_DIRS) or ""
    return [Path(p).resolve() for p in raw.split(os.pathsep) if p]


def project_root() -> Path | None:
    """The project's folder: the server's project (fixed when it started; returned even when it is no longer a
    project, so that the page can refuse to go on), else in :func:`local_mode` the one opened from the URL, the
    session; None when none is open.

    In local mode Streamlit clears the URL's query parameters when the page changes (sidebar links,
    ``st.switch_page``), so the session remembers the project and puts it back into the URL.
    """
    served = served_project()
    if served is not None:
        return served
    if not local_mode():
        return None
    raw = st.query_params.get("project")
    if not raw:
        raw = st.session_state.get("project")
    if not raw:
        return None
    root = Path(raw)
    if not Project.exists(root):
        return None
    st.session_state["project"] = raw
    if st.query_params.get("project") != raw:
        st.query_params["project"] = raw
    return root


def set_project(root: Path | None) -> None:
    """Open ``root`` (kept in the URL and the session) or close the project: local mode only."""
    if not local_mode():
        raise RuntimeError("the served project is fixed when the server starts")
    if root is None:
        st.query_params.pop("project", None)
        st.session_state["project"] = ""  # closed: the command line's project does not come back either
    else:
        st.query_params["project"] = st.session_state["project"] = str(Path(root).resolve())
    reset_batch()


@contextlib.contextmanager
def open_project() -> Iterator[Project | None]:
    """A fresh store connection for this script run (connections are never shared between sessions)."""
    root = project_root()
    if root is None:
        yield None
        return
    proj = Project.open(root)
    try:
        yield proj
    finally:
        proj.close()


def annotator() -> str:
    """Who is labeling: the signed-in user in a project with accounts, else ``?annotator=`` in the URL (remembered
    by the session across pages), else the server's user."""
    signed = st.session_state.get("alwb_signin")
    if signed:
        return str(signed[1])
    name = st.query_params.get("annotator") or st.session_state.get("annotator")
    if name:
        st.session_state["annotator"] = name
        if st.query_params.get("annotator") != name:
            st.query_params["annotator"] = name
    return name or os.environ.get("USER") or "workbench"


def signin() -> tuple[str, str] | None:
    """(session token, user name) of this browser session's sign-in, or None."""
    return st.session_state.get("alwb_signin")


def cookie(name: str) -> str | None:
    """A cookie the browser sent when this session connected (a reload or a new tab sends the current ones)."""
    try:
        value = st.context.cookies.get(name)
    except Exception:  # no browser behind this session (tests, bare mode)
        return None
    return str(value) if value else None


def set_signin(token: str | None, name: str | None = None) -> None:
    """Remember a sign-in for this session (``None``: signed out); the batch on screen belongs to the old user."""
    if token is None:
        st.session_state.pop("alwb_signin", None)
    else:
        st.session_state["alwb_signin"] = (token, name)
    reset_batch()


# ---------------------------------------------------------------------- the batch on screen
def batch() -> dict[str, Any] | None:
    """The batch on screen: ``{"items": [QueryItem...], "round": int, "note": str|None}``."""
    return st.session_state.get("batch")


def set_batch(value: dict[str, Any] | None) -> None:
    """Replace the batch on screen (answers of the old one are dropped)."""
    old = st.session_state.get("batch")
    if old:
        for it in old["items"]:
            answers().pop(it.id, None)
            guesses().pop(it.id, None)
            chosen().discard(it.id)
    st.session_state["batch"] = value
    st.session_state["focus"] = 0


def reset_batch() -> None:
    """Forget the batch so the next run queries a fresh one."""
    set_batch(None)


# Answers live in a plain session map, not in the answer widgets' state: a key press sets the map and gives the
# card's select box a new widget key (a new version). The browser may still send the old widget's value with the
# next rerun (a run interrupted before it drew the card never told it about the new answer); that value belongs to
# a key no longer drawn and is ignored, so it can never overwrite an answer typed from the keyboard.
def answers() -> dict[int, str | None]:
    """Item id → answer chosen on the batch on screen (not saved yet)."""
    return st.session_state.setdefault("answers", {})


def _versions() -> dict[int, int]:
    return st.session_state.setdefault("answer_versions", {})


def answer_key(item_id: int) -> str:
    """Widget key of an item's answer box (it changes whenever the answer is set other than by that box)."""
    return f"ans_{item_id}_v{_versions().get(item_id, 0)}"


def answer(item_id: int) -> str | None:
    """The answer currently chosen for an item."""
    return answers().get(item_id)


def set_answer(item_id: int, value: str | None, *, by_person: bool = True) -> None:
    """Choose an answer from outside its box (keyboard, saved draft; ``by_person=False``: the model's guess,
    :func:`set_guess`): the box is drawn anew with it."""
    answers()[item_id] = value
    versions = _versions()
    versions[item_id] = versions.get(item_id, 0) + 1
    if by_person:
        chosen().add(item_id)


# A preselected guess is the model's answer until a person answers the card (a key, the box, a saved draft): what
# is submitted untouched is stored as an accepted guess, never as the person's choice.
def guesses() -> dict[int, str]:
    """Item id → the model's guess preselected on the batch on screen."""
    return st.session_state.setdefault("guesses", {})


def chosen() -> set[int]:
    """Items of the batch on screen a person answered (by key, box or a draft saved before a reload)."""
    return st.session_state.setdefault("chosen", set())


def set_guess(item_id: int, value: str) -> None:
    """Preselect the model's guess for an item (not the person's answer until they confirm or change it)."""
    guesses()[item_id] = value
    set_answer(item_id, value, by_person=False)


def is_guess(item_id: int) -> bool:
    """True while the item's answer is the model's preselected guess, untouched by the person."""
    g = guesses().get(item_id)
    return g is not None and item_id not in chosen() and answer(item_id) == g


def accepted_guesses(item_ids: list[int]) -> list[int]:
    """The items among ``item_ids`` whose answer is still the untouched guess."""
    return [i for i in item_ids if is_guess(i)]


def first_unanswered(item_ids: list[int]) -> int:
    """Index of the first card no person has answered yet (0 when all are)."""
    return next((j for j, i in enumerate(item_ids) if i not in chosen()), 0)


def take_box_answer(item_id: int, key: str) -> None:
    """The answer box ``key`` of an item changed (a ``on_change`` callback): its value becomes the answer.

    A box drawn before a key press set the answer is stale: its value is ignored (the key press came later on the
    server, and the page shows its answer in the new box, where the person can still change it)."""
    if key == answer_key(item_id):
        answers()[item_id] = st.session_state.get(key)
        chosen().add(item_id)


def focus() -> int:
    """Index of the image that keyboard answers go to."""
    return int(st.session_state.get("focus", 0))


def set_focus(i: int) -> None:
    """Move the keyboard focus."""
    st.session_state["focus"] = i


def skipped() -> set[int]:
    """Items skipped in this session (not stored: a skip is not a label)."""
    return st.session_state.setdefault("skipped", set())


def flash(message: str | None = None, kind: str = "success") -> tuple[str, str] | None:
    """Set a one-time message, or pop it when called without one."""
    if message is None:
        return st.session_state.pop("flash", None)
    st.session_state["flash"] = (kind, message)
    return None


def remember_flash(msg: tuple[str, str]) -> None:
    """Note the message just shown, so a refresh right after it (a new round landing) can show it again."""
    import time

    st.session_state["_last_flash"] = (time.time(), msg)


def reflash_recent(seconds: float = 10.0) -> None:
    """Show again a message shown less than ``seconds`` ago (called before an automatic refresh)."""
    import time

    last = st.session_state.get("_last_flash")
    if last and time.time() - last[0] < seconds and "flash" not in st.session_state:
        st.session_state["flash"] = last[1]


def forget(key: str) -> None:
    """Drop a value :func:`remember` kept."""
    st.session_state.pop(key, None)


#: session key: this session passed the sign-in gate (signed in, or no accounts) at its last full run
GATE_PASSED = "alwb_gate_passed"


def remember(key: str, value: Any = None) -> Any:
    """Small per-session UI memory (e.g. the last seen round)."""
    if value is not None:
        st.session_state[key] = value
    return st.session_state.get(key)


@st.cache_data(max_entries=2000, show_spinner=False)
def thumbnail(path: str, mtime: float, size: int, sha256: str, channels: int = 3) -> tuple[bytes, str]:
    """Encoded image scaled for display, and its format; only when the file still holds the content imported as
    ``sha256`` (raises :class:`alwb.intake.images.ImageChanged` otherwise: a replaced file is never shown under its
    label).

    Small images are enlarged by a whole factor without blur (nearest neighbour) and sent as PNG, so no pixel is
    invented; larger ones are shrunk with Lanczos and sent as JPEG (a tenth of the bytes of a PNG photo).
    """
    from PIL import Image

    from alwb.intake.images import load_image

    img = load_image(path, channels, sha256=sha256)
    w, h = img.size
    scale = size / max(w, h)
    buf = io.BytesIO()
    if scale >= 1:
        scale = max(1, int(scale))
        img = img.resize((w * scale, h * scale), Image.Resampling.NEAREST)
        img.save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), "PNG"
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue(), "JPEG"


def image_bytes(images: ImageRoot, stored: str, size: int, digest: str | None) -> tuple[bytes, str] | None:
    """Display bytes of the item stored as ``stored`` (read through the project's image root on this machine,
    ``proj.reads.image_root()``) and their format (``PNG``/``JPEG``: give it to ``st.image(output_format=...)`` so
    Streamlit sends them as they are). ``digest`` is the SHA-256 the store recorded for it
    (``store.digests(paths)``): None when the file cannot be read, is not an item (no digest), or no longer holds
    the content imported (:func:`image_problem` says why)."""
    if digest is None:
        return None
    path = str(images.locate(stored))
    try:
        return thumbnail(path, os.path.getmtime(path), size, digest)
    except Exception:  # a file removed, broken or replaced since import must not break the page
        return None


def image_problem(images: ImageRoot, stored: str, digest: str | None) -> str:
    """Why an image cannot be shown: not on this machine (with the stored path, the root in use and the
    ``ALWB_IMAGE_ROOT`` hint), not an item of the project, changed since it was imported, or no longer readable."""
    from alwb.errors import ImageRejected
    from alwb.intake.images import read_verified

    if not images.locate(stored).exists():
        return images.missing_message(stored)
    if digest is None:
        return "not an image of this project"
    try:
        read_verified(images.locate(stored), digest)
    except ImageRejected as exc:
        return f"not shown: {exc}"
    return "image no longer readable"
