"""The store's SQL for reviewers' verdicts on :mod:`alwb.insight`'s flags (table ``flag_verdicts``, schema v9)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

#: What a reviewer may answer to a flag.
VERDICTS = ("kept", "changed", "none", "removed")
KINDS = ("label", "duplicate", "outlier")


@dataclass(frozen=True)
class Verdict:
    """One reviewer's answer to one flag.

    ``answer`` is the class the item should have (``None``: "none of these"); ``remove`` rejects the item instead.
    ``given``/``suggested``/``score`` are what the flag said.
    """

    item_id: int
    kind: str
    answer: str | None
    given: str | None = None
    suggested: str | None = None
    score: float | None = None
    remove: bool = False


class FlagTables:
    """Mixed into :class:`alwb.store.Store`: rows of ``flag_verdicts``."""

    con: Any  # all provided by Store
    transaction: Callable[..., AbstractContextManager[Any]]
    add_labels: Callable[..., int]

    def record_verdicts(self, verdicts: Sequence[Verdict], reviewer: str | None, batch_id: str, now: float) -> int:
        """Apply and record a batch of verdicts in ONE transaction: changed labels are written as one batch
        (``batch_id``, kept in the history), removed items are rejected, every verdict gets a row. Returns how
        many labels were written."""
        from . import LabelRow

        for v in verdicts:
            if v.kind not in KINDS:
                raise ValueError(f"flag kind must be one of {', '.join(KINDS)}, not {v.kind!r}")
        with self.transaction():
            current = {
                int(r[0]): r[1]
                for r in self.con.execute(
                    "SELECT l.item_id, c.name FROM labels l LEFT JOIN classes c ON c.id=l.class_id"
                    " WHERE l.superseded_at IS NULL"
                )
            }
            relabel = [
                v for v in verdicts if not v.remove and (v.item_id not in current or current[v.item_id] != v.answer)
            ]
            written = self.add_labels(
                [LabelRow(int(v.item_id), v.answer) for v in relabel], annotator=reviewer, batch_id=batch_id
            )
            removed = [v for v in verdicts if v.remove]
            if removed:
                reason = "removed by a reviewer ({kind} flag)"
                self.con.executemany(
                    "UPDATE items SET status='rejected', reason=? WHERE id=?",
                    [(reason.format(kind=v.kind), int(v.item_id)) for v in removed],
                )
            changed_ids = {int(v.item_id) for v in relabel}
            label_ids = {}
            if changed_ids:
                for r in self.con.execute(
                    "SELECT item_id, id FROM labels WHERE superseded_at IS NULL AND batch_id=?", (batch_id,)
                ):
                    label_ids[int(r[0])] = int(r[1])
            rows = []
            for v in verdicts:
                if v.remove:
                    verdict = "removed"
                elif v.answer is None:
                    verdict = "none"
                elif v.given is not None and v.answer == v.given:
                    verdict = "kept"
                else:
                    verdict = "changed"
                rows.append(
                    (
                        int(v.item_id),
                        v.kind,
                        v.given,
                        v.suggested,
                        None if v.score is None else float(v.score),
                        verdict,
                        label_ids.get(int(v.item_id)),
                        reviewer,
                        now,
                    )
                )
            self.con.executemany(
                "INSERT INTO flag_verdicts(item_id, kind, given, suggested, score, verdict, label_id, reviewer,"
                " decided_at) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return written

    def flag_verdicts(self, kind: str | None = None) -> list[Any]:
        """Every verdict (of one ``kind``), oldest first."""
        sql = "SELECT * FROM flag_verdicts"
        args: list[Any] = []
        if kind is not None:
            sql += " WHERE kind=?"
            args.append(kind)
        return self.con.execute(sql + " ORDER BY id", args).fetchall()

    def label_state(self) -> tuple[int, int]:
        """``(labels ever written, newest label id)``: changes whenever a label is written or undone."""
        row = self.con.execute("SELECT COUNT(*), MAX(id) FROM labels").fetchone()
        return int(row[0]), int(row[1] or 0)
