"""Start ``alwb ui`` on a free port for a test and wait until it answers; always stopped, with its Streamlit child
(:func:`alwb.uilaunch.spawn_ui`, which the benchmarks use too)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from alwb.errors import AlwbError
from alwb.uilaunch import spawn_ui


def read(path: Path) -> str:
    """A log file's text (empty when it is not there)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def serve(
    project: Path | None,
    log_path: Path,
    *extra: str,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    startup_s: float = 90,
) -> Iterator[str]:
    """``alwb ui [PROJECT] --host HOST EXTRA...`` on a free port; yields its address (``http://127.0.0.1:PORT``)."""
    t0 = time.monotonic()
    ui = spawn_ui(project, log_path, *extra, host=host, env=env)
    try:
        try:
            ui.wait_ready(startup_s, started=t0)
        except AlwbError as exc:  # a test failure, with the server's output
            raise AssertionError(str(exc)) from None
        yield ui.url
    finally:
        ui.stop()
