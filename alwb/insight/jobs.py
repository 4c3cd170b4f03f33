"""The insight job in the background: ``alwb issues PROJECT --background`` in a detached, idle-priority process.

One at a time per project (an exclusive ``flock`` on ``PROJECT/insight.lock``, released by the OS however the
process ends); its state goes to ``PROJECT/insight_job.json`` (``running`` / ``done`` / ``failed`` with the reason,
and the fingerprint it worked on, so that a failure is not retried for the same data over and over).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_FILE = "insight.lock"
STATE_FILE = "insight_job.json"
LOG_FILE = "insight.log"


class Busy(RuntimeError):
    """The job is already running for this project."""


@contextlib.contextmanager
def job_lock(root: str | Path) -> Iterator[None]:
    """Hold the project's insight lock (raises :class:`Busy` when another process holds it)."""
    fd = os.open(Path(root) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"the insight job is already running for {root}") from None
        yield
    finally:
        os.close(fd)


def is_running(root: str | Path) -> bool:
    """True while a process holds the project's insight lock."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return False
    try:
        with job_lock(root):
            return False
    except Busy:
        return True


def write_state(root: str | Path, **fields: Any) -> None:
    """Replace the job's state file (atomically)."""
    path = Path(root) / STATE_FILE
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**fields, "at": time.time()}))
    os.replace(tmp, path)


def read_state(root: str | Path) -> dict[str, Any]:
    """The job's last state (``{}`` before any)."""
    try:
        return json.loads((Path(root) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def start_background(root: str | Path, *, nice: int = 10) -> bool:
    """Start ``alwb issues ROOT --background`` detached, at idle priority; False when it is already running."""
    root = Path(root)
    if is_running(root):
        return False
    cmd = [sys.executable, "-m", "alwb", "-q", "issues", str(root), "--background"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    write_state(root, state="starting")
    from ..jobs import _lower_priority

    with open(root / LOG_FILE, "ab") as log:
        subprocess.Popen(  # noqa: S603 - our own interpreter and module
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            preexec_fn=(lambda: _lower_priority(nice)) if nice else None,
        )
    return True


def run_job(root: str | Path) -> int:
    """The job itself (in the child): lock, refresh, record the state; 0 on success, 1 on failure, 2 when busy."""
    from ..project import Project
    from . import refresh

    try:
        with job_lock(root):
            write_state(root, state="running", pid=os.getpid())
            try:
                with Project.open(root) as proj:

                    def progress(phase: str, done: int, total: int) -> None:
                        write_state(root, state="running", pid=os.getpid(), phase=phase, done=done, total=total)

                    found = refresh(proj, progress=progress)
                write_state(root, state="done", fingerprint=found.fingerprint, seconds=found.seconds)
                return 0
            except Exception as exc:
                write_state(root, state="failed", error=f"{type(exc).__name__}: {exc}")
                return 1
    except Busy:
        return 2
