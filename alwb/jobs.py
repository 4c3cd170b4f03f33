"""Background training: one ``alwb train`` process per project, outside any UI process.

The child process takes an exclusive ``flock`` on ``PROJECT/train.lock`` for as long as it trains, so "is a round
running?" is answered by the lock (released by the OS even if the process is killed), not by a PID file that can go
stale. Progress goes to ``PROJECT/train_progress.json`` (written atomically); results go to the store like any
round.
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

LOCK_FILE = "train.lock"
PROGRESS_FILE = "train_progress.json"
LOG_FILE = "train.log"


class TrainingBusy(RuntimeError):
    """A round is already running for this project."""


@contextlib.contextmanager
def training_lock(root: str | Path) -> Iterator[None]:
    """Hold the project's training lock (raises :class:`TrainingBusy` when another process has it)."""
    path = Path(root) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingBusy(f"a training round is already running for {root}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_training(root: str | Path) -> bool:
    """True while some process holds the project's training lock."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def write_progress(root: str | Path, **fields: Any) -> None:
    """Atomically replace the progress file with ``fields`` plus a timestamp."""
    path = Path(root) / PROGRESS_FILE
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**fields, "updated_at": time.time()}))
    os.replace(tmp, path)


def read_progress(root: str | Path) -> dict[str, Any]:
    """The last progress written, with ``running`` from the lock; ``{}`` when nothing was ever written."""
    path = Path(root) / PROGRESS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data["running"] = is_training(root)
    return data


def start_training(root: str | Path, *, device: str | None = None, nice: int = 10) -> bool:
    """Start ``alwb train ROOT`` in a detached child process; False when a round is already running.

    The child gets its own store connection, lowers its priority by ``nice`` and leaves one CPU core to the
    workbench (the person labeling comes first), and logs to ``PROJECT/train.log``.
    """
    root = Path(root)
    if is_training(root):
        return False
    cmd = [sys.executable, "-m", "alwb", "-q", "train", str(root), "--background"]
    if device:
        cmd += ["--device", device]
    write_progress(root, phase="starting", done=0, total=0)
    threads = str(max(1, (os.cpu_count() or 1) - 1))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    log = open(root / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    try:
        subprocess.Popen(  # noqa: S603 - our own interpreter and module
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
    finally:
        log.close()
    return True
