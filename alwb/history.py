"""One person's own labels, newest first, and what became of them (the workbench's History page).

An entry is one human label the person wrote (the label history keeps every answer, so a label they changed later
is an entry too). ``current``: it is still the item's label. A reviewer's decision on the item made after the label
is shown with it: ``changed`` when the reviewer chose another answer, else confirmed. A reviewer's or admin's own
decisions are entries of theirs too (``decision``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .store import Store


@dataclass(frozen=True)
class Entry:
    label_id: int
    item_id: int
    path: str
    answer: str | None  # None: "none of these classes"
    at: float
    batch_id: str | None
    round: int
    current: bool
    decision: bool  # this label is a reviewer's decision (written by this person as reviewer)
    reviewer: str | None  # who decided on the item after this label (the latest such decision), if anyone
    reviewed_as: str | None  # what the reviewer decided

    @property
    def changed(self) -> bool:
        """True when a reviewer later decided on another answer."""
        return self.reviewer is not None and self.reviewed_as != self.answer


@dataclass(frozen=True)
class Summary:
    answers: int
    batches: int
    current: int
    changed: int
    confirmed: int
    decisions: int


def own_labels(store: Store, annotator: str) -> list[Entry]:
    """Every human label ``annotator`` wrote, newest first (see the module's docstring)."""
    reviews = store.reviews_of_items_labeled_by(annotator)
    decision_ids = {int(r["label_id"]) for r in reviews if r["label_id"] is not None and r["reviewer"] == annotator}
    by_item: dict[int, list[tuple[float, str, str | None]]] = {}
    for r in reviews:
        by_item.setdefault(int(r["item_id"]), []).append((float(r["decided_at"]), str(r["reviewer"]), r["class"]))
    out = []
    for r in store.annotator_labels(annotator):
        label_id, at = int(r["id"]), float(r["created_at"])
        decision = label_id in decision_ids
        later = [d for d in by_item.get(int(r["item_id"]), []) if d[0] >= at] if not decision else []
        reviewer, reviewed_as = (later[-1][1], later[-1][2]) if later else (None, None)
        out.append(
            Entry(
                label_id=label_id,
                item_id=int(r["item_id"]),
                path=str(r["path"]),
                answer=r["class"],
                at=at,
                batch_id=r["batch_id"],
                round=int(r["round"]),
                current=r["superseded_at"] is None,
                decision=decision,
                reviewer=reviewer,
                reviewed_as=reviewed_as,
            )
        )
    return out


def summarise(entries: Sequence[Entry]) -> Summary:
    """The counts the History page shows above the list."""
    answers = [e for e in entries if not e.decision]
    reviewed = [e for e in answers if e.reviewer is not None]
    return Summary(
        answers=len(answers),
        batches=len({e.batch_id for e in answers if e.batch_id}),
        current=sum(e.current for e in answers),
        changed=sum(e.changed for e in reviewed),
        confirmed=sum(not e.changed for e in reviewed),
        decisions=len(entries) - len(answers),
    )
