"""One channel for training progress, wherever a round runs.

Every round reports how far it has come (phase, step, steps) through a :class:`ProgressReporter` into one table of
the store, ``round_progress``, a row per runner: this machine's background round (:func:`alwb.jobs.local_runner`)
or a training worker (its name). :func:`training_status` reads it back, with the queue and the last failed round, as
one :class:`TrainingStatus` for pages and scripts (:meth:`alwb.project.Project.training_progress`): a page need not
know where the round runs. Whether this machine's round is alive is the lock's answer (:func:`alwb.jobs.is_training`);
a worker's, its heartbeat's (:mod:`alwb.team.worker`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jobs import READY_PHASE, local_progress
from .store import Store

log = logging.getLogger(__name__)

#: Seconds between two progress writes: a round reports every step, the store hears the latest once a second.
PROGRESS_GAP_S = 1.0


class ProgressReporter(threading.Thread):
    """Writes a round's latest progress into the store from a thread with a store connection of its own, at most one
    write every ``gap`` seconds (:meth:`report` costs the training thread nothing); :meth:`stop` writes the last
    report before the thread ends. With ``worker``, it is also that training worker's heartbeat, beaten every
    ``every`` seconds whether or not there is news (:mod:`alwb.team.worker`)."""

    def __init__(
        self,
        location: str | Path,
        runner: str,
        *,
        worker: str | None = None,
        every: float = 5.0,
        gap: float = PROGRESS_GAP_S,
    ) -> None:
        super().__init__(name=f"alwb-progress-{runner}", daemon=True)
        self.location, self.runner, self.worker = location, runner, worker
        self.every, self.gap = every, min(gap, every)
        self.request_id: int | None = None  # the queue request the round serves (a worker's)
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: tuple[str, int, int] | None = None

    def report(self, phase: str, done: int, total: int) -> None:
        """The round's latest progress (called from the training thread, as often as it likes)."""
        with self._lock:
            self._pending = (str(phase), int(done), int(total))
        self.wake.set()

    def stop(self) -> None:
        """End the thread after it has written the last report."""
        self.stop_event.set()
        self.wake.set()

    def run(self) -> None:
        try:
            store = Store(self.location)  # a store is not shared between threads
        except Exception as exc:  # progress is news, not the round's work: the round goes on without it
            log.warning("progress cannot be reported: %s", exc)
            return
        with store:
            while True:
                self.wake.wait(None if self.worker is None else max(0.0, self.every - self.gap))
                self.wake.clear()
                self._write(store)
                if self.stop_event.is_set() or self.stop_event.wait(self.gap):
                    self._write(store)  # a report that came during the gap
                    return

    def _write(self, store: Store) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None and self.worker is None:
            return
        try:
            now = time.time()
            if self.worker is not None:
                store.worker_heartbeat(self.worker, now)
            if pending is not None:
                store.report_progress(self.runner, *pending, now, request_id=self.request_id)
        except Exception as exc:  # a store that is briefly away: the next write tries again
            log.warning("progress report failed: %s", exc)
            with self._lock:
                self._pending = self._pending or pending


@dataclass(frozen=True)
class RunningRound:
    """A round that trains now: ``where`` ``"here"`` (this machine's background round) or ``"worker"`` (a training
    worker's, with its ``worker`` name, queue ``request``, seconds since its heartbeat ``age``, ``silent`` past
    :data:`alwb.team.worker.SILENT_S`, and ``fails_in`` seconds before it is failed as stale)."""

    where: str
    phase: str
    done: int = 0
    total: int = 0
    worker: str | None = None
    round: int | None = None
    request: int | None = None
    age: float = 0.0
    silent: bool = False
    fails_in: float | None = None


@dataclass(frozen=True)
class TrainingStatus:
    """Where training stands, wherever it runs (:func:`training_status`).

    ``running``: the round that trains now, or None; ``waiting``: a first round started early is ready and trains as
    soon as its labels come (:func:`alwb.jobs.start_training` with ``when_due``); ``queued``: requests waiting for a
    worker; ``workers``: workers alive; ``last``: the latest request a worker finished, when no round trained since
    (``status``, ``round``, ``worker``, ``error``, ``finished_at``, ``requested_by``); ``last_error``: the error of
    the last failed round, when it is newer than the last round that succeeded and nothing runs now; ``reaped``:
    requests failed as stale by this very look."""

    running: RunningRound | None = None
    waiting: bool = False
    queued: int = 0
    workers: int = 0
    last: dict[str, Any] | None = None
    last_error: str | None = None
    reaped: list[dict[str, Any]] = field(default_factory=list)


def training_status(store: Store, root: str | Path, *, now: float | None = None) -> TrainingStatus:
    """Where training stands (:class:`TrainingStatus`): one read of the progress channel, the queue
    (:func:`alwb.team.worker.round_activity`, which fails stale requests first) and the rounds."""
    from .team.worker import round_activity

    queue = round_activity(store, now=now)
    rounds = store.rounds()
    failed = [r for r in rounds if r["status"] == "failed"]
    done = [r for r in rounds if r["status"] == "done"]
    here = local_progress(root, store)
    remote = queue["running"]
    running: RunningRound | None = None
    if remote is not None:  # a worker's round (it holds the lock on its own machine)
        running = RunningRound(where="worker", **remote)
    elif here is not None and here["phase"] != READY_PHASE:
        running = RunningRound(where="here", phase=here["phase"], done=int(here["done"]), total=int(here["total"]))
    last = queue["last"]
    if last is not None and done and (last["finished_at"] or 0) < (done[-1]["finished_at"] or 0):
        last = None  # a round trained since (here, or by a request without a worker) is the news
    last_error = None
    if running is None and failed and (not done or failed[-1]["started_at"] > done[-1]["started_at"]):
        last_error = failed[-1]["error"]
    if running is None and last_error is None and last is not None and last["status"] == "failed":
        last_error = last["error"]
    return TrainingStatus(
        running=running,
        waiting=here is not None and here["phase"] == READY_PHASE and remote is None,
        queued=int(queue["queued"]),
        workers=int(queue["workers"]),
        last=last,
        last_error=last_error,
        reaped=list(queue["reaped"]),
    )
