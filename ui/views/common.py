"""Pieces shared by pages: project guard, one-time messages, training status."""

from __future__ import annotations

import time

import streamlit as st

from alwb.jobs import read_progress
from alwb.loop import Project
from ui import state
from ui.text import md_escape


def show_flash() -> tuple[str, str] | None:
    """Show the one-time message (and return it) in a slot that is on the page whether or not there is one.

    Streamlit places elements by position: a message that shows on one run and not the next would shift every
    element after it, and an open expander or a chosen tab after it would close (an upload inside it seemed lost).
    """
    slot = st.container()
    msg = state.flash()
    if msg:
        {"success": slot.success, "error": slot.error, "info": slot.info}[msg[0]](md_escape(msg[1]))
    return msg


def need_project(proj: Project | None) -> Project:
    """Stop the page with a pointer to Start when no project is open."""
    if proj is None:
        st.info("No project is open. Open or create one on the Start page.")
        st.stop()
    return proj


def training_status(proj: Project) -> dict:
    """Progress of the background round plus the last failed round's error (if newer than the last success)."""
    prog = read_progress(proj.root)
    rounds = proj.store.rounds()
    failed = [r for r in rounds if r["status"] == "failed"]
    done = [r for r in rounds if r["status"] == "done"]
    if failed and (not done or failed[-1]["started_at"] > done[-1]["started_at"]) and not prog.get("running"):
        prog["last_error"] = failed[-1]["error"]
    return prog


def show_training(prog: dict) -> None:
    """A progress bar while a round runs; the error of a failed round."""
    if prog.get("running"):
        phase = prog.get("phase", "training")
        done, total = int(prog.get("done") or 0), int(prog.get("total") or 0)
        frac = done / total if total else 0.0
        words = {
            "train": "training",
            "score": "scoring the pool",
            "preparing": "preparing data",
            "starting": "starting",
        }.get(phase, phase)
        st.progress(
            min(1.0, frac),
            text=f"Round in progress: {words} {done}/{total}" if total else f"Round in progress: {words}…",
        )
    elif prog.get("last_error"):
        st.error(
            md_escape(
                f"The last training round failed; the previous model is still in use. Error: {prog['last_error']}"
            ),
            icon="⚠️",
        )


def ago(t: float | None) -> str:
    """'12 s ago' style."""
    if not t:
        return "never"
    d = max(0, time.time() - t)
    return f"{d:.0f} s ago" if d < 120 else f"{d / 60:.0f} min ago" if d < 7200 else f"{d / 3600:.0f} h ago"
