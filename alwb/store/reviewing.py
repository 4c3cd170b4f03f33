"""The store's SQL for annotators' answers and reviewers' decisions (the rules live in :mod:`alwb.team.agreement`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any


class ReviewTables:
    """Mixed into :class:`alwb.store.Store`: rows of ``reviews`` and the annotators' answers in ``labels``."""

    con: Any  # all provided by Store
    transaction: Callable[..., AbstractContextManager[Any]]
    add_labels: Callable[..., int]

    def annotator_answers(self) -> list[Any]:
        """Every human answer that names its annotator, reviewers' decisions left out, oldest first:
        item_id, annotator, class (None for "none of these"), label id, created_at."""
        return self.con.execute(
            "SELECT l.item_id, l.annotator, c.name AS class, l.id, l.created_at FROM labels l"
            " LEFT JOIN classes c ON c.id=l.class_id JOIN items i ON i.id=l.item_id"
            " WHERE l.source='human' AND l.annotator IS NOT NULL AND i.status='ok'"
            " AND l.id NOT IN (SELECT label_id FROM reviews WHERE label_id IS NOT NULL)"
            " ORDER BY l.id"
        ).fetchall()

    def annotator_labels(self, annotator: str) -> list[Any]:
        """Every human label ``annotator`` wrote, newest first, with the item's path and the class name:
        id, item_id, path, class, created_at, batch_id, round, superseded_at."""
        return self.con.execute(
            "SELECT l.id, l.item_id, i.path, c.name AS class, l.created_at, l.batch_id, l.round, l.superseded_at"
            " FROM labels l JOIN items i ON i.id=l.item_id LEFT JOIN classes c ON c.id=l.class_id"
            " WHERE l.annotator=? AND l.source='human' ORDER BY l.created_at DESC, l.id DESC",
            (annotator,),
        ).fetchall()

    def reviews_of_items_labeled_by(self, annotator: str) -> list[Any]:
        """The decisions on items ``annotator`` labeled, oldest first, with the class name."""
        return self.con.execute(
            "SELECT r.*, c.name AS class FROM reviews r LEFT JOIN classes c ON c.id=r.class_id"
            " WHERE r.item_id IN (SELECT item_id FROM labels WHERE annotator=? AND source='human') ORDER BY r.id",
            (annotator,),
        ).fetchall()

    def review_rows(self) -> list[Any]:
        """Every decision with its class name, oldest first."""
        return self.con.execute(
            "SELECT r.*, c.name AS class FROM reviews r LEFT JOIN classes c ON c.id=r.class_id ORDER BY r.id"
        ).fetchall()

    def record_review(self, item_id: int, reviewer: str, class_name: str | None, now: float) -> int | None:
        """Make ``class_name`` the item's label and record the decision, in one transaction; returns the id of the
        label written (None when the decision is the current label already)."""
        from . import LabelRow

        with self.transaction():
            written = self.add_labels([LabelRow(int(item_id), class_name)], annotator=reviewer, batch_id=None)
            label_id = None
            if written:
                label_id = int(
                    self.con.execute(
                        "SELECT id FROM labels WHERE item_id=? AND superseded_at IS NULL", (int(item_id),)
                    ).fetchone()[0]
                )
            cid = None
            if class_name is not None:
                cid = self.con.execute("SELECT id FROM classes WHERE name=?", (class_name,)).fetchone()[0]
            self.con.execute(
                "INSERT INTO reviews(item_id, reviewer, class_id, label_id, decided_at) VALUES(?, ?, ?, ?, ?)",
                (int(item_id), reviewer, cid, label_id, now),
            )
        return label_id
