"""Keyboard answers that are never dropped, however fast the keys come.

Streamlit buttons with ``shortcut=`` send one rerun request per press, and requests that arrive while a run is going
are merged: two presses of the same key become one, and the answers after it land one card early. Here the browser
keeps the *whole list* of key presses of the batch on screen and sends that list each time it grows (a component
state value: merging keeps the newest list, which holds every press). Each script run applies the presses it has not
applied yet, in the order they were made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

#: Keys that answer with the n-th class when the class names are not keys themselves.
DIGITS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]
#: The keys that do something else (as the browser names them, letters upper-case).
FIXED_KEYS = {"S": "skip", "N": "none", "ArrowLeft": "left", "ArrowRight": "right", "Enter": "submit"}

_JS = r"""
export default function (component) {
  const { data, setStateValue } = component;
  const g = (window.__alwbKeys = window.__alwbKeys || { batch: null, events: [], closed: false, listener: null });
  if (g.batch !== data.batch) {  // a new batch (or a failed submit): start a new list
    g.batch = data.batch;
    g.events = [];
    g.closed = false;
    g.quietUntil = Date.now() + (data.quiet || 0);  // a batch that replaced another: keys wait a moment
  }

  g.send = setStateValue;
  g.keys = data.keys;
  if (!g.listener) {
    g.listener = (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing || ev.repeat) return;
      const t = ev.target;
      const tag = t && t.tagName;
      if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (t && t.isContentEditable)) return;
      const key = ev.key.length === 1 ? ev.key.toUpperCase() : ev.key;
      const action = g.keys && g.keys[key];
      if (!action || g.batch === null) return;
      ev.preventDefault();
      ev.stopPropagation();
      if (g.closed) return;  // submitted: presses wait for the next batch to be on screen
      if (Date.now() < (g.quietUntil || 0)) return;  // just replaced: this key was meant for the old batch
      g.events.push(action);
      if (action === "submit") g.closed = true;
      g.send("log", { batch: g.batch, events: g.events.slice() });
    };
    document.addEventListener("keydown", g.listener, true);
  }
  return () => {
    if (g.listener) document.removeEventListener("keydown", g.listener, true);
    g.listener = null;
  };
}
"""

#: The card that keys answer is scrolled into view whenever it changes (its frame is the page's CSS). The card may
#: be drawn a moment after this runs (it comes later in the script), so it looks again shortly.
_SCROLL_JS = r"""
export default function (component) {
  const { data } = component;
  const g = (window.__alwbCard = window.__alwbCard || { shown: null });
  const show = () => {
    const card = document.querySelector(`.st-key-cell_${data.focus}`);
    if (card) card.scrollIntoView({ block: "nearest", inline: "nearest" });
  };
  const where = `${data.batch}:${data.focus}`;
  if (g.shown !== where) {
    g.shown = where;
    for (const ms of [0, 150, 500, 1200]) setTimeout(show, ms);
  }
}
"""

_component: Any = None
_scroller: Any = None


def _keyboard() -> Any:
    global _component
    if _component is None:
        _component = st.components.v2.component("alwb_keyboard", html="<span></span>", js=_JS)
    return _component


def _noop() -> None:
    """State values reach Python only for keys with a change callback; the presses are read from the result."""


def _browser_name(key: str) -> str:
    return key.upper() if len(key) == 1 else key


def class_keys(classes: Sequence[str]) -> list[str]:
    """The key for each class, in class order, as shown on the page (fewer keys than classes when there are more
    than ten classes and the names are not keys).

    Where every class name is a single letter or digit, distinct from the others (letters are read without case) and
    from the fixed keys (S, N), the key *is* the name: on the digits demo ``1`` answers ``1``. Otherwise ``1``–``9``,
    ``0`` answer the first ten classes in order.
    """
    names = [str(c) for c in classes]
    browser = [_browser_name(c) for c in names]
    if (
        names
        and all(len(c) == 1 and c.isascii() and c.isalnum() for c in names)
        and len(set(browser)) == len(browser)
        and not set(browser) & set(FIXED_KEYS)
    ):
        return names
    return DIGITS[: len(names)]


def key_map(classes: Sequence[str]) -> dict[str, str]:
    """Key (as the browser names it, letters upper-case) → action: ``a<i>`` answers with class i (see
    :func:`class_keys`), then ``skip``, ``none``, ``left``, ``right`` and ``submit``."""
    keys = {_browser_name(k): f"a{i}" for i, k in enumerate(class_keys(classes))}
    keys.update(FIXED_KEYS)
    return keys


def new_presses(batch_token: str, log: Any, seen: int) -> tuple[list[str], int]:
    """The presses of ``log`` (the browser's list for a batch) not applied yet, and the new count applied.

    A list of another batch, or one shorter than what was applied (it cannot shrink), gives nothing.
    """
    if not isinstance(log, dict) or log.get("batch") != batch_token:
        return [], seen
    events = log.get("events")
    if not isinstance(events, list) or len(events) <= seen:
        return [], seen
    return [str(e) for e in events[seen:]], len(events)


def show_card(batch_token: str, focus: int) -> None:
    """Scroll the card keys answer (``st.container(key=f"cell_{focus}")``) into view when it changed."""
    global _scroller
    if _scroller is None:
        _scroller = st.components.v2.component("alwb_show_card", html="<span></span>", js=_SCROLL_JS)
    _scroller(key="show_card", data={"batch": batch_token, "focus": int(focus)}, height=0)


def presses(batch_token: str, classes: Sequence[str], *, quiet_ms: int = 0) -> list[str]:
    """Mount the listener for the batch ``batch_token`` and return the presses made since the last run, in order.

    ``quiet_ms``: keys pressed this long after a new batch appeared are ignored (a batch that replaced another).
    """
    data = {"batch": batch_token, "keys": key_map(classes), "quiet": int(quiet_ms)}
    result = _keyboard()(key="keyboard", data=data, height=0, on_log_change=_noop)
    log = getattr(result, "log", None)
    seen_key = f"_keys_seen_{batch_token}"
    new, count = new_presses(batch_token, log, int(st.session_state.get(seen_key, 0)))
    st.session_state[seen_key] = count
    return new


def resolve(action: str, classes: Sequence[str]) -> tuple[str, str | None]:
    """``("answer", class)``, ``("answer", SKIP/NONE marker name)``, ``("move", "left"/"right")`` or
    ``("submit", None)``; ``("ignore", None)`` for anything else (a stale key map)."""
    if action.startswith("a") and action[1:].isdigit():
        i = int(action[1:])
        return ("answer", classes[i]) if i < len(classes) else ("ignore", None)
    if action in ("skip", "none"):
        return "answer", action
    if action in ("left", "right"):
        return "move", action
    if action == "submit":
        return "submit", None
    return "ignore", None
