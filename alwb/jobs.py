"""Background training: one ``alwb train`` process per project, outside any UI process.

The child process takes an exclusive ``flock`` on ``PROJECT/train.lock`` for as long as it trains, so "is a round
running?" is answered by the lock (released by the OS even if the process is killed), not by a PID file that can go
stale. Progress goes to the store's one progress channel (:mod:`alwb.progress`, runner :func:`local_runner`);
results go to the store like any round.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

LOCK_FILE = "train.lock"
#: Environment variable through which :func:`start_training` hands its already-locked descriptor to the child.
LOCK_FD_ENV = "ALWB_TRAIN_LOCK_FD"
LOG_FILE = "train.log"
#: Touched by the workbench whenever the person acts; a background round pauses while it is fresh.
ACTIVE_FILE = "ui_active"
#: Touched by a submit: the round gives way for the window after it whatever its share (the next batch is drawn).
SUBMIT_FILE = "ui_submit"
#: Seconds a background round gives way after the person's last action (a submit and the next batch drawn).
GIVE_WAY_S = 1.5
#: The most a round gives way: paused at most this share of its time (plus one window), so that steady labeling, a
#: key every second, cannot starve it (measured: docs/speed.md, "Giving way").
GIVE_WAY_SHARE = 0.5
#: Touched to wake a first round that waits for its labels (:func:`wake_waiting`).
WAKE_FILE = "train_now"
#: The progress phase of a first round started early, imports done, waiting for its labels (:func:`wait_for_round`).
READY_PHASE = "ready"
#: A waiting first round gives up when nobody has used the workbench for this many seconds (the next page starts one).
WAIT_IDLE_S = 300.0


class TrainingBusy(RuntimeError):
    """A round is already running for this project."""


def _lock_fd(root: str | Path) -> int:
    """Open the project's lock file and take the lock; raises :class:`TrainingBusy` when another process has it."""
    fd = os.open(Path(root) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TrainingBusy(f"a training round is already running for {root}") from None
    return fd


def _inherited_lock_fd(root: str | Path) -> int | None:
    """The locked descriptor handed down by :func:`start_training`, if this process got one for ``root``."""
    raw = os.environ.pop(LOCK_FD_ENV, None)
    if not raw:
        return None
    try:
        fd = int(raw)
        same = os.path.samestat(os.fstat(fd), os.stat(Path(root) / LOCK_FILE))
    except (ValueError, OSError):
        return None
    if not same:
        return None
    os.set_inheritable(fd, False)  # worker processes this child may start must not carry the lock on
    return fd


@contextlib.contextmanager
def training_lock(root: str | Path) -> Iterator[None]:
    """Hold the project's training lock (raises :class:`TrainingBusy` when another process has it).

    A child started by :func:`start_training` already holds it through the descriptor it inherited.
    """
    fd = _inherited_lock_fd(root)
    if fd is None:
        fd = _lock_fd(root)
    try:
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


def local_runner(root: str | Path) -> str:
    """The progress channel's name for this machine's round of the project in ``root`` (:mod:`alwb.progress`)."""
    return f"local:{socket.gethostname()}:{Path(root).resolve()}"


def stop_training(root: str | Path, timeout: float = 30.0) -> None:
    """Stop the project's background round, if one runs (SIGTERM to the pid in the lock file), and wait for it."""
    import signal

    root = Path(root)
    if is_training(root):
        with contextlib.suppress(ValueError, OSError):
            os.kill(int((root / LOCK_FILE).read_text().strip()), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_training(root) and time.monotonic() < deadline:
        time.sleep(0.2)


def mark_active(root: str | Path, *, submit: bool = False) -> None:
    """Say that the person is acting now (a submit, a page drawn): a background round pauses for a moment.
    ``submit``: a batch was submitted; the round gives way for the next batch's sake even past its share."""
    if submit:
        mark_active(root)
    path = Path(root) / (SUBMIT_FILE if submit else ACTIVE_FILE)
    try:
        os.utime(path)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            path.touch()
    except OSError:
        pass


def give_way(root: str | Path, window: float = GIVE_WAY_S, *, share: float = GIVE_WAY_SHARE) -> Callable[[], None]:
    """A function for a background round to call between steps: it returns at once unless the person acted less
    than ``window`` seconds ago (:func:`mark_active`), and then sleeps until that moment is ``window`` old, as long
    as the round has paused for no more than ``share`` of its time so far (plus one ``window``).

    On two cores a round's memory traffic slows the page down even at the lowest CPU priority; giving way for the
    second after each action keeps submit → next batch as quick as with no round running. Without the share, a
    person labeling steadily (every key press is an action) held a round at one step for minutes. The window after
    a submit (:func:`mark_active` with ``submit``) is given whatever the share: the next batch is drawn then. Two
    ``stat`` calls at most per call.
    """
    path = Path(root) / ACTIVE_FILE
    submitted = Path(root) / SUBMIT_FILE
    start = time.monotonic()
    paused = 0.0

    def since_submit() -> float:
        try:
            return time.time() - submitted.stat().st_mtime
        except OSError:
            return float("inf")

    def pause() -> None:
        nonlocal paused
        for _ in range(100):  # a clock set back or a file touched without end cannot stop the round for good
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                return
            if not 0 <= age < window:
                return
            sub = since_submit()
            if 0 <= sub < window:  # the next batch is being drawn: always give way (submits are seconds apart)
                time.sleep(window - sub)
                continue
            allowance = share * (time.monotonic() - start) + window - paused
            if allowance <= 0:
                return
            wait = min(window - age, allowance)
            time.sleep(wait)
            paused += wait

    return pause


def _lower_priority(nice: int, *, idle: bool = True) -> None:
    """In the child before it starts: Linux's idle scheduling class (it runs only on CPU time nobody else wants,
    so the workbench answers as if no round were running), else (or with ``idle`` False) plain ``nice``."""
    if idle:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except (AttributeError, OSError):
            pass
    os.nice(nice)


def start_training(
    root: str | Path,
    *,
    device: str | None = None,
    nice: int = 10,
    first: bool = False,
    when_due: bool = False,
    idle_exit: float = WAIT_IDLE_S,
    store: Store | None = None,
) -> bool:
    """Start ``alwb train ROOT`` in a detached child process; False when a round is already running.

    The lock is taken here, before the child starts, and handed to it (an inherited descriptor: the lock lives as
    long as the child does), so two submits a moment apart cannot start two rounds while the first child is still
    importing PyTorch. The child gets its own store connection, lowers its priority by ``nice``, leaves one CPU
    core to the workbench and runs in the idle scheduling class (the person labeling comes first), and logs to
    ``PROJECT/train.log``. ``first``: the project has no model yet; the round runs at plain ``nice`` instead of
    the idle class and gives way only after submits (``alwb train --first``), so that the first model-ranked batch
    comes early (docs/speed.md). ``when_due``: the child imports and opens the project now, then waits (progress
    phase ``ready``) until a round is due or it is woken (:func:`wait_for_round`), so that the first round starts
    the moment the first batch is submitted instead of a few seconds of imports later; it gives up after
    ``idle_exit`` seconds without anyone using the workbench. With ``store``, the round's first progress
    (``starting``, or ``ready`` with ``when_due``) is reported before the child starts, so that a page sees it at once.
    """
    root = Path(root)
    try:
        fd = _lock_fd(root)
    except TrainingBusy:
        return False
    try:
        cmd = [sys.executable, "-m", "alwb", "-q", "train", str(root), "--background"]
        if first:
            cmd.append("--first")
        if when_due:
            cmd += ["--when-due", "--idle-exit", str(float(idle_exit))]
            with contextlib.suppress(OSError):
                (root / WAKE_FILE).unlink()  # a wake meant for an earlier process
        if device:
            cmd += ["--device", device]
        if store is not None:
            store.report_progress(local_runner(root), READY_PHASE if when_due else "starting", 0, 0, time.time())
        threads = str(max(1, (os.cpu_count() or 1) - 1))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, LOCK_FD_ENV: str(fd)}
        with open(root / LOG_FILE, "ab") as log:
            child = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                pass_fds=(fd,),
                preexec_fn=(lambda: _lower_priority(nice, idle=not first)) if nice else None,
            )
        os.ftruncate(fd, 0)  # its pid at once (stop_training), not an earlier round's while the child imports
        os.pwrite(fd, str(child.pid).encode(), 0)
    finally:
        os.close(fd)  # the child's copy keeps the lock (released when it exits, however it exits)
    return True


def local_progress(root: str | Path, store: Store) -> dict[str, Any] | None:
    """This machine's round as it last reported into the progress channel (:mod:`alwb.progress`), while it runs
    (its lock is held); else None."""
    if not is_training(root):
        return None
    return store.progress_of(local_runner(root)) or {"phase": "starting", "done": 0, "total": 0}


def is_waiting(root: str | Path, store: Store) -> bool:
    """True while a first round started early waits for its labels (:func:`start_training` with ``when_due``)."""
    here = local_progress(root, store)
    return here is not None and here["phase"] == READY_PHASE


def wake_waiting(root: str | Path, store: Store) -> bool:
    """Tell a waiting first round to train now; False (and nothing done) when no round waits."""
    if not is_waiting(root, store):
        return False
    try:
        (Path(root) / WAKE_FILE).touch()
    except OSError:
        return False
    return True


def wait_for_round(
    root: str | Path,
    due: Callable[[], bool],
    *,
    idle_exit: float = WAIT_IDLE_S,
    poll: float = 0.1,
    check_every: float = 2.0,
) -> bool:
    """In a first round started early: wait until it is woken (:func:`wake_waiting`, by the submit that makes a
    round due or by "Retrain now") or ``due()`` says so (labels that came another way; asked every
    ``check_every`` seconds); True then. False when nobody has used the workbench (:func:`mark_active`) for
    ``idle_exit`` seconds: the process ends and frees its memory, and the next Label page starts another."""
    root = Path(root)
    wake, active = root / WAKE_FILE, root / ACTIVE_FILE
    start = time.time()
    checked = 0.0
    while True:
        if wake.exists():
            with contextlib.suppress(OSError):
                wake.unlink()
            return True
        now = time.time()
        if now - checked >= check_every:
            checked = now
            if due():
                return True
            try:
                seen = max(start, active.stat().st_mtime)
            except OSError:
                seen = start
            if now - seen > idle_exit:
                return False
        time.sleep(poll)
