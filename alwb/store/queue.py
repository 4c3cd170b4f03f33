"""The store's SQL for queued training rounds and the workers that run them (the loop lives in :mod:`alwb.team.worker`).

A claim runs in one transaction: on PostgreSQL the oldest queued request is locked ``FOR UPDATE SKIP LOCKED`` (two
workers claiming at once get two different requests, or one gets none); on SQLite claims take turns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any


class QueueTables:
    """Mixed into :class:`alwb.store.Store`: rows of ``round_requests`` and ``workers``."""

    con: Any  # all provided by Store
    backend: str
    transaction: Callable[..., AbstractContextManager[Any]]
    fail_round: Callable[[int, str], None]

    def enqueue_round(self, options: dict[str, Any], requested_by: str | None, now: float) -> int:
        with self.transaction(serialise=False):
            return int(
                self.con.execute(
                    "INSERT INTO round_requests(status, options, requested_by, requested_at)"
                    " VALUES('queued', ?, ?, ?) RETURNING id",
                    (json.dumps(options, sort_keys=True), requested_by, now),
                ).fetchone()[0]
            )

    def round_request(self, request_id: int) -> dict[str, Any] | None:
        r = self.con.execute("SELECT * FROM round_requests WHERE id=?", (int(request_id),)).fetchone()
        return None if r is None else _request(r)

    def round_requests(self, status: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM round_requests", []
        if status is not None:
            sql += " WHERE status=?"
            args.append(status)
        return [_request(r) for r in self.con.execute(sql + " ORDER BY id", args)]

    def claim_round_request(self, worker: str, now: float, expected_round: int) -> dict[str, Any] | None:
        """Take the oldest queued request for ``worker`` (None when the queue is empty)."""
        sql = "SELECT id FROM round_requests WHERE status='queued' ORDER BY id LIMIT 1"
        if self.backend == "postgresql":
            sql += " FOR UPDATE SKIP LOCKED"
        with self.transaction(serialise=False):
            row = self.con.execute(sql).fetchone()
            if row is None:
                return None
            self.con.execute(
                "UPDATE round_requests SET status='running', worker=?, claimed_at=?, heartbeat_at=?, round=?"
                " WHERE id=?",
                (worker, now, now, expected_round, int(row[0])),
            )
            self.con.execute("UPDATE workers SET request_id=? WHERE name=?", (int(row[0]), worker))
            self._upsert_progress(worker, int(row[0]), "starting", 0, 0, now)
        return self.round_request(int(row[0]))

    def finish_round_request(self, request_id: int, *, round_number: int | None, error: str | None, now: float) -> None:
        with self.transaction(serialise=False):
            self.con.execute(
                "UPDATE round_requests SET status=?, round=COALESCE(?, round), error=?, finished_at=?"
                " WHERE id=? AND status='running'",
                ("failed" if error else "done", round_number, error, now, int(request_id)),
            )
            self.con.execute("UPDATE workers SET request_id=NULL WHERE request_id=?", (int(request_id),))
            self.con.execute("DELETE FROM round_progress WHERE request_id=?", (int(request_id),))

    def withdraw_round_requests(self, reason: str, now: float) -> int:
        """Fail every queued request with ``reason`` (no worker will take them: the round trains elsewhere)."""
        with self.transaction(serialise=False):
            return self.con.execute(
                "UPDATE round_requests SET status='failed', error=?, finished_at=? WHERE status='queued'",
                (reason, now),
            ).rowcount

    def register_worker(self, name: str, host: str, pid: int, device: str | None, now: float) -> None:
        with self.transaction(serialise=False):
            self.con.execute(
                "INSERT INTO workers(name, host, pid, device, started_at, heartbeat_at) VALUES(?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET heartbeat_at=excluded.heartbeat_at",
                (name, host, int(pid), device, now, now),
            )

    def unregister_worker(self, name: str) -> None:
        with self.transaction(serialise=False):
            self.con.execute("DELETE FROM workers WHERE name=?", (name,))

    def worker_heartbeat(self, name: str, now: float) -> None:
        """The worker and the request it runs are alive (how far its round has come: :meth:`report_progress`)."""
        with self.transaction(serialise=False):
            self.con.execute("UPDATE workers SET heartbeat_at=? WHERE name=?", (now, name))
            self.con.execute(
                "UPDATE round_requests SET heartbeat_at=? WHERE worker=? AND status='running'", (now, name)
            )

    def report_progress(
        self, runner: str, phase: str, done: int, total: int, now: float, *, request_id: int | None = None
    ) -> None:
        """How far the round that ``runner`` trains has come (the one channel of :mod:`alwb.progress`)."""
        with self.transaction(serialise=False):
            self._upsert_progress(runner, request_id, phase, done, total, now)

    def _upsert_progress(
        self, runner: str, request_id: int | None, phase: str, done: int, total: int, now: float
    ) -> None:
        self.con.execute(
            "INSERT INTO round_progress(runner, request_id, phase, done, total, updated_at) VALUES(?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(runner) DO UPDATE SET request_id=excluded.request_id, phase=excluded.phase,"
            " done=excluded.done, total=excluded.total, updated_at=excluded.updated_at",
            (runner, request_id, str(phase), int(done), int(total), now),
        )

    def progress_of(self, runner: str) -> dict[str, Any] | None:
        """The last progress ``runner`` reported (``phase``, ``done``, ``total``, ``request_id``, ``updated_at``)."""
        r = self.con.execute("SELECT * FROM round_progress WHERE runner=?", (runner,)).fetchone()
        return None if r is None else dict(r)

    def worker_rows(self) -> list[Any]:
        return self.con.execute("SELECT * FROM workers ORDER BY name").fetchall()

    def reap_round_requests(self, now: float, stale_after: float) -> list[dict[str, Any]]:
        """Fail every running request whose worker has been silent for ``stale_after`` seconds, with the round it
        had started (the previous model stays current), and forget silent workers. Returns the failed requests."""
        limit = now - stale_after
        with self.transaction():
            rows = self.con.execute(
                "SELECT * FROM round_requests WHERE status='running' AND heartbeat_at<?", (limit,)
            ).fetchall()
            failed = []
            for r in rows:
                reason = (
                    f"worker {r['worker']} stopped answering (no heartbeat for {now - r['heartbeat_at']:.0f} s):"
                    " the round was abandoned"
                )
                self.con.execute(
                    "UPDATE round_requests SET status='failed', error=?, finished_at=? WHERE id=?",
                    (reason, now, r["id"]),
                )
                if r["round"] is not None:
                    running = self.con.execute(
                        "SELECT 1 FROM rounds WHERE number=? AND status='running'", (r["round"],)
                    ).fetchone()
                    if running is not None:
                        self.fail_round(int(r["round"]), reason)
                failed.append(int(r["id"]))
            self.con.execute("DELETE FROM workers WHERE heartbeat_at<?", (limit,))
        return [d for d in (self.round_request(i) for i in failed) if d is not None]


def _request(r: Any) -> dict[str, Any]:
    d = dict(r)
    d["options"] = json.loads(d["options"]) if d["options"] else {}
    return d
