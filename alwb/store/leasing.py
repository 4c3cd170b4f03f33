"""The store's SQL for leases (the rules and defaults live in :mod:`alwb.team.leases`).

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

    def renew_leases(self, annotator: str, item_ids: Sequence[int], now: float, expires_at: float) -> int:
        """Extend ``annotator``'s live leases on ``item_ids``; returns how many were extended."""
        with self.transaction(serialise=False):
            return self.con.executemany(
                "UPDATE leases SET expires_at=? WHERE annotator=? AND item_id=? AND expires_at>?",
                [(expires_at, annotator, int(i), now) for i in item_ids],
            ).rowcount

    def release_leases(self, annotator: str, item_ids: Sequence[int] | None = None) -> int:
        """End ``annotator``'s leases on ``item_ids`` (all of them with None), and their drafts on those items (a
        draft without its lease would come back on a page that no longer holds the item)."""
        with self.transaction(serialise=False):
            if item_ids is None:
                self.con.execute(
                    "DELETE FROM drafts WHERE annotator=?"
                    " AND item_id IN (SELECT item_id FROM leases WHERE annotator=?)",
                    (annotator, annotator),
                )
                return self.con.execute("DELETE FROM leases WHERE annotator=?", (annotator,)).rowcount
            pairs = [(annotator, int(i)) for i in item_ids]
            self.con.executemany("DELETE FROM drafts WHERE annotator=? AND item_id=?", pairs)
            return self.con.executemany("DELETE FROM leases WHERE annotator=? AND item_id=?", pairs).rowcount

    def lease_conflicts(
        self, annotator: str, item_ids: Sequence[int], now: float, *, shared: Callable[[int], bool]
    ) -> dict[int, str]:
        """Items of ``item_ids`` that ``annotator`` may not answer now, with the reason: an ordinary item someone
        else holds or has answered, an overlap item (``shared``) two others hold or have answered.

        Call it inside the transaction that writes the answers: on PostgreSQL it locks the items' rows first (a
        claim, which skips locked rows, cannot lease one of them until that transaction ends)."""
        ids = sorted({int(i) for i in item_ids})
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        if self.backend == "postgresql":
            self.con.execute(f"SELECT id FROM items WHERE id IN ({marks}) ORDER BY id FOR UPDATE", ids)
        holders: dict[int, set[str]] = {}
        for r in self.con.execute(
            f"SELECT item_id, annotator FROM leases WHERE item_id IN ({marks}) AND expires_at>? AND annotator<>?",
            [*ids, now, annotator],
        ):
            holders.setdefault(int(r[0]), set()).add(str(r[1]))
        answered: dict[int, set[str]] = {}
        for r in self.con.execute(
            f"SELECT item_id, annotator FROM labels WHERE item_id IN ({marks}) AND source='human'"
            " AND annotator IS NOT NULL AND annotator<>?",
            [*ids, annotator],
        ):
            answered.setdefault(int(r[0]), set()).add(str(r[1]))
        out: dict[int, str] = {}
        for i in ids:
            others = holders.get(i, set()) | answered.get(i, set())
            if len(others) < (2 if shared(i) else 1):
                continue
            if answered.get(i):
                out[i] = "another annotator answered it meanwhile"
            else:
                out[i] = "your lease ran out and another annotator holds it now"
        return out

    def claim_leases(
        self,
        annotator: str,
        candidates: Sequence[int],
        n: int,
        *,
        now: float,
        expires_at: float,
        wanted: Callable[[int, list[str], bool, list[str]], bool],
        shared: Callable[[int], bool] = lambda _i: False,
    ) -> list[int]:
        """Lease to ``annotator`` up to ``n`` more of ``candidates`` (in their order) that ``wanted`` accepts.

        ``wanted(item_id, human_annotators, labeled_otherwise, live_holders)`` sees, for one locked item, the
        annotators of its human labels (history included), whether it has a current label no annotator gave (an
        import), and who else holds a live lease on it. ``shared(item_id)``: the item may have two holders (an
        overlap item); the others are passed over in SQL when someone holds them or they have a label. Returns the
        item ids leased now.
        """
        order = [int(i) for i in dict.fromkeys(int(c) for c in candidates)]
        taken: list[int] = []
        if n <= 0 or not order:
            return taken
        with self.transaction(serialise=False):
            mine = set(self.live_leases(annotator, now))
            pending = [i for i in order if i not in mine]
            while pending and len(taken) < n:
                size = max(4 * (n - len(taken)), 64)
                chunk, pending = pending[:size], pending[size:]
                locked = self._lock_items(chunk, [i for i in chunk if shared(i)], annotator, now)
                if locked:
                    taken += self._lease_some(annotator, locked, n - len(taken), now, expires_at, wanted)
        return taken

    def _lock_items(self, chunk: list[int], overlap: list[int], annotator: str, now: float) -> list[int]:
        """Lock the rows of ``chunk`` that look free (PostgreSQL: those no one else has locked); in chunk order."""
        marks = ",".join("?" * len(chunk))
        both = overlap or [-1]
        omarks = ",".join("?" * len(both))
        sql = (
            f"SELECT id FROM items WHERE id IN ({marks}) AND status='ok' AND (id IN ({omarks}) OR ("
            " NOT EXISTS (SELECT 1 FROM leases l WHERE l.item_id=items.id AND l.expires_at>? AND l.annotator<>?)"
            " AND NOT EXISTS (SELECT 1 FROM labels b WHERE b.item_id=items.id AND b.superseded_at IS NULL)))"
        )
        if self.backend == "postgresql":
            # no LIMIT: a locked row that turns out to be taken must not hide a free one further down the chunk
            sql += " FOR UPDATE OF items SKIP LOCKED"
        got = {int(r[0]) for r in self.con.execute(sql, [*chunk, *both, now, annotator])}
        return [i for i in chunk if i in got]

    def _lease_some(
        self,
        annotator: str,
        locked: list[int],
        need: int,
        now: float,
        expires_at: float,
        wanted: Callable[[int, list[str], bool, list[str]], bool],
    ) -> list[int]:
        """Check the locked items afresh (a new statement sees every claim committed before the locks) and lease
        the first ``need`` that ``wanted`` accepts."""
        marks = ",".join("?" * len(locked))
        leases: dict[int, list[Any]] = {}
        for r in self.con.execute(f"SELECT * FROM leases WHERE item_id IN ({marks})", locked):
            leases.setdefault(int(r["item_id"]), []).append(r)
        labels: dict[int, list[Any]] = {}
        for r in self.con.execute(
            f"SELECT item_id, source, annotator, superseded_at FROM labels WHERE item_id IN ({marks})", locked
        ):
            labels.setdefault(int(r["item_id"]), []).append(r)
        chosen: list[tuple[int, int]] = []
        for item_id in locked:
            if len(chosen) >= need:
                break
            live = [r for r in leases.get(item_id, []) if r["expires_at"] > now]
            holders = [str(r["annotator"]) for r in live if r["annotator"] != annotator]
            rows = labels.get(item_id, [])
            humans = sorted({str(r["annotator"]) for r in rows if r["source"] == "human" and r["annotator"]})
            otherwise = any(r["superseded_at"] is None and (r["source"] != "human" or not r["annotator"]) for r in rows)
            if not wanted(item_id, humans, otherwise, holders):
                continue
            used = {int(r["slot"]) for r in live if r["annotator"] != annotator}
            free = [s for s in (0, 1) if s not in used]
            if free:
                chosen.append((item_id, free[0]))
        if chosen:
            # expired leases (anyone's) and this annotator's own old row make room; the drafts someone else left on
            # an item whose lease ran out go with it (the item is no longer theirs)
            self.con.executemany(
                "DELETE FROM drafts WHERE item_id=? AND annotator<>? AND annotator IN"
                " (SELECT annotator FROM leases WHERE item_id=? AND expires_at<=?)",
                [(i, annotator, i, now) for i, _ in chosen],
            )
            self.con.executemany(
                "DELETE FROM leases WHERE item_id=? AND (expires_at<=? OR annotator=?)",
                [(i, now, annotator) for i, _ in chosen],
            )
            self.con.executemany(
                "INSERT INTO leases(item_id, annotator, slot, leased_at, expires_at) VALUES(?, ?, ?, ?, ?)",
                [(i, annotator, slot, now, expires_at) for i, slot in chosen],
            )
        return [i for i, _ in chosen]
