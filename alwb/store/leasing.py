"""The store's SQL for leases (the rules and defaults live in :mod:`alwb.leases`).

A claim runs in one transaction. On PostgreSQL it locks the candidate ``items`` rows with ``FOR UPDATE SKIP
LOCKED`` (another annotator claiming at the same moment skips them and takes the next ones), then reads the leases
and labels of the rows it locked in a new statement, which sees every claim committed before its locks were granted;
every claim locks an item's row before leasing it, so nobody can lease a locked item meanwhile. On SQLite the
transaction is ``BEGIN IMMEDIATE``: claims take turns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any


class LeaseTables:
    """Mixed into :class:`alwb.store.Store`: rows of ``leases``."""

    con: Any  # both provided by Store
    backend: str
    transaction: Callable[..., AbstractContextManager[Any]]

    def live_leases(self, annotator: str, now: float) -> list[int]:
        """Items ``annotator`` holds, in the order they were leased."""
        rows = self.con.execute(
            "SELECT item_id FROM leases WHERE annotator=? AND expires_at>? ORDER BY leased_at, item_id",
            (annotator, now),
        )
        return [int(r[0]) for r in rows]

    def lease_rows(self) -> list[Any]:
        return self.con.execute("SELECT * FROM leases ORDER BY item_id, slot").fetchall()

    def renew_leases(self, annotator: str, item_ids: Sequence[int], now: float, expires_at: float) -> int:
        """Extend ``annotator``'s live leases on ``item_ids``; returns how many were extended."""
        with self.transaction(serialise=False):
            return self.con.executemany(
                "UPDATE leases SET expires_at=? WHERE annotator=? AND item_id=? AND expires_at>?",
                [(expires_at, annotator, int(i), now) for i in item_ids],
            ).rowcount

    def release_leases(self, annotator: str, item_ids: Sequence[int] | None = None) -> int:
        """End ``annotator``'s leases on ``item_ids`` (all of them with None)."""
        with self.transaction(serialise=False):
            if item_ids is None:
                return self.con.execute("DELETE FROM leases WHERE annotator=?", (annotator,)).rowcount
            return self.con.executemany(
                "DELETE FROM leases WHERE annotator=? AND item_id=?", [(annotator, int(i)) for i in item_ids]
            ).rowcount

    def claim_leases(
        self,
        annotator: str,
        candidates: Sequence[int],
        n: int,
        *,
        now: float,
        expires_at: float,
        wanted: Callable[[int, list[str], bool, list[str]], bool],
    ) -> list[int]:
        """Lease to ``annotator`` up to ``n`` more of ``candidates`` (in their order) that ``wanted`` accepts.

        ``wanted(item_id, human_annotators, labeled_otherwise, live_holders)`` sees, for one locked item, the
        annotators of its human labels (history included), whether it has a current label no annotator gave (an
        import), and who else holds a live lease on it. Returns the item ids leased now.
        """
        order = [int(i) for i in dict.fromkeys(int(c) for c in candidates)]
        taken: list[int] = []
        if n <= 0 or not order:
            return taken
        with self.transaction(serialise=False):
            mine = set(self.live_leases(annotator, now))
            pending = [i for i in order if i not in mine]
            while pending and len(taken) < n:
                chunk, pending = pending[: max(4 * (n - len(taken)), 16)], pending[max(4 * (n - len(taken)), 16) :]
                locked = self._lock_items(chunk, n - len(taken))
                if not locked:
                    continue
                for item_id in locked:
                    if len(taken) >= n:
                        break
                    if self._lease_one(annotator, item_id, now, expires_at, wanted):
                        taken.append(item_id)
        return taken

    def _lock_items(self, chunk: list[int], limit: int) -> list[int]:
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id FROM items WHERE id IN ({marks}) AND status='ok'"
        if self.backend == "postgresql":
            # no LIMIT here: locked rows that turn out to be taken must not hide free ones further down the chunk
            sql += " FOR UPDATE SKIP LOCKED"
        got = {int(r[0]) for r in self.con.execute(sql, chunk)}
        return [i for i in chunk if i in got]

    def _lease_one(
        self,
        annotator: str,
        item_id: int,
        now: float,
        expires_at: float,
        wanted: Callable[[int, list[str], bool, list[str]], bool],
    ) -> bool:
        leases = self.con.execute(
            "SELECT annotator, slot, expires_at FROM leases WHERE item_id=?", (item_id,)
        ).fetchall()
        live = [r for r in leases if r["expires_at"] > now]
        holders = [str(r["annotator"]) for r in live if r["annotator"] != annotator]
        labels = self.con.execute(
            "SELECT source, annotator, superseded_at FROM labels WHERE item_id=?", (item_id,)
        ).fetchall()
        humans = sorted({str(r["annotator"]) for r in labels if r["source"] == "human" and r["annotator"]})
        otherwise = any(r["superseded_at"] is None and (r["source"] != "human" or not r["annotator"]) for r in labels)
        if not wanted(item_id, humans, otherwise, holders):
            return False
        used = {int(r["slot"]) for r in live}
        free = [s for s in (0, 1) if s not in used]
        if not free:
            return False
        # expired leases (anyone's) and this annotator's own old row make room
        self.con.execute(
            "DELETE FROM leases WHERE item_id=? AND (expires_at<=? OR annotator=?)", (item_id, now, annotator)
        )
        self.con.execute(
            "INSERT INTO leases(item_id, annotator, slot, leased_at, expires_at) VALUES(?, ?, ?, ?, ?)",
            (item_id, annotator, free[0], now, expires_at),
        )
        return True
