"""What the workbench's pages read from a project: a small, read-only API (``Project.reads``).

The UI is a thin shell over :class:`alwb.project.Project`: it writes through ``Project``'s methods (``submit``,
``save_drafts``, ``edit_classes`` …) and reads through this class, never through the store. Everything here is one
query (or a few) against the store; nothing is cached, so a page always shows what the store holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .intake.imageroot import ImageRoot
    from .store import LabelRow, Store


@dataclass(frozen=True)
class Counts:
    """How far the labeling is: items, answers, the validation sample and pseudo-labels."""

    #: importable items in the project
    items: int
    #: items with a current answer (a class or "none of these"), validation ones included
    answered: int
    #: items without an answer, validation ones included
    unanswered: int
    #: validation sample: its size and how many of it are answered
    val_size: int
    val_answered: int
    #: pseudo-labels in use (chosen by the last round)
    pseudo: int
    #: per class, its current labels by source (``{"human": n, "import": n}``)
    per_class: dict[str, dict[str, int]]


class ProjectReads:
    """The reads pages make, over one project's store (``Project.reads``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def counts(self) -> Counts:
        """How far the labeling is (:class:`Counts`)."""
        s = self._store
        return Counts(
            items=s.item_count(),
            answered=len(s.labeled_item_ids()),
            unanswered=len(s.unlabeled_item_ids(split=None)),
            val_size=len(s.val_item_ids()),
            val_answered=len(s.current_labels(split="val", include_none=True)),
            pseudo=len(s.pseudo_labels()),
            per_class=s.label_counts(),
        )

    def labels(self, *, split: str | None = None, include_none: bool = False) -> list[LabelRow]:
        """The current labels (one row per item: ``item_id``, ``path``, ``class``, ``source``, ``annotator`` …);
        ``split`` ``"pool"`` / ``"val"``; ``include_none``: "none of these" answers too."""
        return self._store.current_labels(split=split, include_none=include_none)

    def label_map(self, *, include_none: bool = False) -> dict[int, str | None]:
        """Item id → its current class (None for "none of these" with ``include_none``)."""
        return {int(r["item_id"]): r["class"] for r in self.labels(include_none=include_none)}

    def item(self, ref: int | str) -> Any | None:
        """One item by id, or by its path as the pages and ``alwb query`` show it; None when there is none."""
        if isinstance(ref, int):
            return self._store.item(ref)
        ref = ref.strip()
        return self._store.item(int(ref)) if ref.isdigit() else self._store.item_by_path(ref)

    def items(self, ids: Sequence[int]) -> list[Any]:
        """Several items by id, in that order (missing ones left out)."""
        rows = [self._store.item(int(i)) for i in ids]
        return [r for r in rows if r is not None]

    def rounds(self) -> list[dict[str, Any]]:
        """Every training round, oldest first, with its status and metrics."""
        return self._store.rounds()

    def finished_round(self, number: int) -> dict[str, Any] | None:
        """Round ``number`` when it finished, else None."""
        return next((r for r in self.rounds() if r["number"] == number and r["status"] == "done"), None)

    def current_round(self) -> int:
        """The number of the round whose model ranks the batches (0 before the first)."""
        return self._store.current_round()

    def image_root(self) -> ImageRoot:
        """Where the images' relative paths resolve (:class:`alwb.intake.imageroot.ImageRoot`)."""
        return self._store.image_root()

    def digests(self, paths: Sequence[str]) -> dict[str, str]:
        """Path → the SHA-256 recorded at import (pages check a file is still the one imported)."""
        return self._store.digests(paths)

    def drafts(self, annotator: str, item_ids: Sequence[int]) -> dict[int, str]:
        """Answers ``annotator`` chose on these items but has not submitted (kept across reloads)."""
        return self._store.drafts(annotator, item_ids)

    def pseudo_labels(self) -> list[Any]:
        """The pseudo-labels in use, with their confidence."""
        return self._store.pseudo_labels()

    def rejected(self) -> list[Any]:
        """Files not imported, each with the reason."""
        return self._store.rejected()

    def last_batch_id(self, annotator: str | None = None) -> str | None:
        """The last submitted batch (of ``annotator`` in a team), the one "Undo last batch" takes back."""
        return self._store.last_batch_id(annotator)
