"""A training worker: takes queued round requests from the project's store and runs them.

``alwb train PROJECT --queue`` (or a web server, through :func:`request_round`) puts a request in the store's
queue; ``alwb worker PROJECT`` registers itself, sends a heartbeat every :data:`HEARTBEAT_S` seconds from a thread
with a store connection of its own, claims the oldest request (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so several
workers never take the same one) and runs the round with :meth:`alwb.project.Project.train`. A round that raises is
recorded failed by the round itself. A worker that dies (killed, machine gone) stops its heartbeat: whoever looks at the
queue next (a worker's claim, a web server's page, ``alwb status``, a new request: :func:`reap_stale`) fails every
request silent for :data:`STALE_S` seconds, with that reason, and the round it had started; the previous model
stays current. Model files and scores are written under the project folder, which every
machine that trains or serves the project must share.
"""

from __future__ import annotations

import contextlib
import functools
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

from ..errors import StoreUnavailable
from ..store import Store

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
STALE_S = 30.0
#: A page warns that a worker "has not been heard from" after this many seconds without a heartbeat.
SILENT_S = 3 * HEARTBEAT_S
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
    from ..jobs import TrainingBusy, training_lock
    from ..progress import ProgressReporter
    from ..project import Project

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
        beat = ProgressReporter(location, name, worker=name, every=heartbeat)
        beat.start()
        away = False  # the store was unreachable: the worker waits for it, then registers again
        try:
            while not stopping.is_set() and not (stop is not None and stop()):
                try:
                    if away:
                        store.register_worker(name, socket.gethostname(), os.getpid(), device, time.time())
                        away = False
                        emit("back", {})
                    for r in reap_stale(store, stale_after=stale_after):
                        emit("reaped", r)
                    req = store.claim_round_request(name, time.time(), store.current_round() + 1)
                except StoreUnavailable as exc:  # a server restarting: try again, as the heartbeat does
                    if not away:
                        emit("unavailable", {"error": str(exc)})
                    away = True
                    stopping.wait(max(poll, 1.0))
                    continue
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
                beat.request_id = int(req["id"])
                beat.report("preparing", 0, 0)
                try:
                    with training_lock(root):
                        summary = proj.train(**opts, progress=beat.report)
                    number = summary.round
                except TrainingBusy as exc:
                    error = str(exc)
                except Exception as exc:  # the round recorded itself failed; the request says why
                    error = f"{type(exc).__name__}: {exc}"
                    log.error("round request %s failed: %s", req["id"], error)
                finish = functools.partial(
                    store.finish_round_request, req["id"], round_number=number, error=error, now=time.time()
                )
                _until_back(finish, stopping, poll, emit)
                ran += 1
                emit("finished", store.round_request(req["id"]) or {})
                if once:
                    break
        finally:
            beat.stop()
            beat.join(timeout=heartbeat + 5)
            with contextlib.suppress(StoreUnavailable):  # a worker silent that long is forgotten by the next claim
                store.unregister_worker(name)
            if old is not None:
                signal.signal(signal.SIGTERM, old)
    return ran


def _until_back(
    write: Callable[[], None], stopping: threading.Event, poll: float, emit: Callable[[str, dict[str, Any]], None]
) -> None:
    """``write()``, tried again while the store is unavailable: a request left running with a live heartbeat would
    never be failed by anyone. Gives up when the worker is told to stop (the request is then failed as stale)."""
    told = False
    while True:
        try:
            write()
            return
        except StoreUnavailable as exc:
            if stopping.is_set():
                raise
            if not told:
                emit("unavailable", {"error": str(exc)})
                told = True
            stopping.wait(max(poll, 1.0))


def reap_stale(store: Store, *, now: float | None = None, stale_after: float | None = None) -> list[dict[str, Any]]:
    """Fail every running request whose worker has been silent for ``stale_after`` seconds (default
    :data:`STALE_S`), with its round, and forget silent workers: whoever looks at the queue calls this (a worker
    before its claim, a web server's page, ``alwb status``, a new request), so a dead worker is noticed even when
    it was the only one. One read when nothing is stale; the write only when something is. Returns the failed
    requests."""
    now = time.time() if now is None else now
    stale_after = STALE_S if stale_after is None else float(stale_after)
    limit = now - stale_after
    stale = any(
        (r["heartbeat_at"] or r["claimed_at"] or r["requested_at"]) < limit for r in store.round_requests("running")
    )
    if not stale and not any(w["heartbeat_at"] < limit for w in store.worker_rows()):
        return []
    return store.reap_round_requests(now, stale_after)


def round_activity(
    store: Store,
    *,
    now: float | None = None,
    silent_after: float = SILENT_S,
    stale_after: float | None = None,
    reap: bool = True,
) -> dict[str, Any]:
    """What the queue says about training, for a page on any machine.

    ``running``: the request a worker runs now (``worker``, ``round``, ``phase``, ``done``, ``total``, ``age``:
    seconds since its last heartbeat, ``silent``: True past ``silent_after``, ``fails_in``: seconds until it is
    failed as stale), or None; ``queued``: requests waiting; ``workers``: live workers; ``last``: the latest
    finished request (``status``, ``round``, ``worker``, ``error``, ``finished_at``), or None; ``reaped``: requests
    failed by this look. With ``reap`` (the default) a request silent for ``stale_after`` seconds (default
    :data:`STALE_S`) is failed first (:func:`reap_stale`), so what a page says of a silent worker comes true.
    """
    now = time.time() if now is None else now
    stale_after = STALE_S if stale_after is None else float(stale_after)
    reaped = reap_stale(store, now=now, stale_after=stale_after) if reap else []
    requests = store.round_requests()
    running = None
    for r in requests:
        if r["status"] == "running":
            beat = r["heartbeat_at"] or r["claimed_at"] or r["requested_at"]
            prog = (store.progress_of(r["worker"]) or {}) if r["worker"] else {}
            if prog.get("request_id") != r["id"]:
                prog = {}  # news of the worker's previous request
            age = max(0.0, now - float(beat))
            running = {
                "request": r["id"],
                "worker": r["worker"],
                "round": r["round"],
                "phase": prog.get("phase", "starting"),
                "done": int(prog.get("done") or 0),
                "total": int(prog.get("total") or 0),
                "age": age,
                "silent": age > silent_after,
                "fails_in": max(0.0, stale_after - age),
            }
    finished = [r for r in requests if r["status"] in ("done", "failed") and r["finished_at"] is not None]
    last = max(finished, key=lambda r: (r["finished_at"], r["id"])) if finished else None
    return {
        "running": running,
        "queued": sum(1 for r in requests if r["status"] == "queued"),
        "workers": len(live_workers(store, now=now, stale_after=stale_after)),
        "reaped": reaped,
        "last": None
        if last is None
        else {k: last[k] for k in ("id", "status", "round", "worker", "error", "finished_at", "requested_by")},
    }


def start_or_queue(
    root: str | Path,
    store: Store,
    *,
    device: str | None = None,
    requested_by: str | None = None,
    take_queued: bool = False,
    stale_after: float | None = None,
) -> str:
    """Retrain from a web server: ``"queued"`` for a live worker when one is registered, else ``"started"`` here in
    the background (:func:`alwb.jobs.start_training`); ``"busy"`` when a round is already queued or running.

    A request whose worker has been silent for ``stale_after`` seconds is failed first (:func:`reap_stale`): a dead
    worker does not keep the project busy. With ``take_queued`` and no live worker, requests waiting in the queue
    are withdrawn (failed, with the reason) and the round trains here instead (the page's "Train here now")."""
    from ..jobs import is_training, start_training, wake_waiting

    now = time.time()
    reap_stale(store, now=now, stale_after=stale_after)
    live = live_workers(store, now=now, stale_after=STALE_S if stale_after is None else float(stale_after))
    if wake_waiting(root, store):  # a first round started early, waiting for its labels: it trains now
        return "started"
    if store.round_requests("running") or is_training(root):
        return "busy"
    if store.round_requests("queued"):
        if live or not take_queued:
            return "busy"
        if not start_training(root, device=device, store=store):
            return "busy"
        who = f" by {requested_by}" if requested_by else ""
        store.withdraw_round_requests(f"no training worker was running: trained in a web server's background{who}", now)
        return "started"
    if live:
        request_round(store, requested_by=requested_by, device=device)
        return "queued"
    first = not any(r["status"] == "done" for r in store.rounds())  # no model yet: the first round hurries
    return "started" if start_training(root, device=device, first=first, store=store) else "busy"
