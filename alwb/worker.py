"""A training worker: takes queued round requests from the project's store and runs them.

``alwb train PROJECT --queue`` (or a web server, through :func:`request_round`) puts a request in the store's
queue; ``alwb worker PROJECT`` registers itself, sends a heartbeat every :data:`HEARTBEAT_S` seconds from a thread
with a store connection of its own, claims the oldest request (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so several
workers never take the same one) and runs the round with :meth:`alwb.loop.Project.train`. A round that raises is
recorded failed by the round itself. A worker that dies (killed, machine gone) stops its heartbeat: the next claim
by any worker first fails every request silent for :data:`STALE_S` seconds, with that reason, and the round it had
started; the previous model stays current. Model files and scores are written under the project folder, which every
machine that trains or serves the project must share.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .store import Store

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
STALE_S = 30.0
#: Options a request may carry (those of Project.train).
OPTIONS = ("from_scratch", "epochs", "device", "strategy")


def request_round(store: Store, *, requested_by: str | None = None, **options: Any) -> int:
    """Queue a training round; returns the request id."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown round option(s): {', '.join(sorted(unknown))}")
    return store.enqueue_round({k: v for k, v in options.items() if v is not None}, requested_by, time.time())


def live_workers(store: Store, *, now: float | None = None, stale_after: float = STALE_S) -> list[dict[str, Any]]:
    """Workers whose heartbeat is fresh (a web server queues rounds instead of training when there is one)."""
    now = time.time() if now is None else now
    return [dict(r) for r in store.worker_rows() if r["heartbeat_at"] >= now - stale_after]


class _Heartbeat(threading.Thread):
    def __init__(self, location: str | Path, name: str, every: float) -> None:
        super().__init__(name=f"alwb-heartbeat-{name}", daemon=True)
        self.location, self.worker, self.every = location, name, every
        self.stop_event = threading.Event()

    def run(self) -> None:
        with Store(self.location) as store:  # a connection of its own: a store is not shared between threads
            while not self.stop_event.wait(self.every):
                try:
                    store.worker_heartbeat(self.worker, time.time())
                except Exception as exc:  # a store that is briefly away: the next beat tries again
                    log.warning("heartbeat failed: %s", exc)


def run_worker(
    root: str | Path,
    *,
    device: str | None = None,
    once: bool = False,
    poll: float = 2.0,
    heartbeat: float = HEARTBEAT_S,
    stale_after: float = STALE_S,
    stop: Callable[[], bool] | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> int:
    """Take requests until stopped (SIGTERM, Ctrl+C, ``stop()``), or after one request with ``once`` (or when the
    queue is empty then). Returns the number of requests run."""
    from .jobs import TrainingBusy, training_lock
    from .loop import Project

    root = Path(root)
    name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    stopping = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        stopping.set()

    old = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None
    ran = 0
    emit = on_event or (lambda _kind, _data: None)
    with Project.open(root) as proj:
        store = proj.store
        location = store.url or store.path
        store.register_worker(name, socket.gethostname(), os.getpid(), device, time.time())
        beat = _Heartbeat(location, name, heartbeat)
        beat.start()
        try:
            while not stopping.is_set() and not (stop is not None and stop()):
                for r in store.reap_round_requests(time.time(), stale_after):
                    emit("reaped", r)
                req = store.claim_round_request(name, time.time(), store.current_round() + 1)
                if req is None:
                    if once:
                        break
                    stopping.wait(poll)
                    continue
                emit("claimed", req)
                opts = dict(req["options"])
                if device is not None:
                    opts["device"] = device
                error: str | None = None
                number = None
                try:
                    with training_lock(root):
                        summary = proj.train(**opts)
                    number = summary.round
                except TrainingBusy as exc:
                    error = str(exc)
                except Exception as exc:  # the round recorded itself failed; the request says why
                    error = f"{type(exc).__name__}: {exc}"
                    log.error("round request %s failed: %s", req["id"], error)
                store.finish_round_request(req["id"], round_number=number, error=error, now=time.time())
                ran += 1
                emit("finished", store.round_request(req["id"]) or {})
                if once:
                    break
        finally:
            beat.stop_event.set()
            beat.join(timeout=heartbeat + 5)
            store.unregister_worker(name)
            if old is not None:
                signal.signal(signal.SIGTERM, old)
    return ran


def start_or_queue(
    root: str | Path, store: Store, *, device: str | None = None, requested_by: str | None = None
) -> str:
    """Retrain from a web server: ``"queued"`` for a live worker when one is registered, else ``"started"`` here in
    the background (:func:`alwb.jobs.start_training`); ``"busy"`` when a round is already queued or running."""
    from .jobs import is_training, start_training

    if store.round_requests("queued") or store.round_requests("running") or is_training(root):
        return "busy"
    if live_workers(store):
        request_round(store, requested_by=requested_by, device=device)
        return "queued"
    return "started" if start_training(root, device=device) else "busy"
