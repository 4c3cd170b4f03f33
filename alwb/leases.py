"""Which annotator holds which items until when, so that two annotators never label the same item at once.

:func:`claim` leases up to ``n`` items of a ranked candidate list (a query's order) to one annotator for
``ttl`` seconds; the page renews them while it is open (:func:`renew`); submitting an answer
(``Store.add_labels(..., annotator=...)``) or skipping (:func:`release`) ends a lease, and an expired lease is free
for anyone. An item is given to one annotator, except the overlap items: a fixed share of the items (default
:data:`DEFAULT_OVERLAP`, 10%), chosen by a hash of the item id so that every process agrees, is given on purpose to
two different annotators (at the same time or one after the other) to measure their agreement
(:mod:`alwb.agreement`). Nobody gets an item they have already answered, nor one with a label of its own (an
import), nor an ordinary item someone has answered.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .errors import AlwbError
from .store import Store

DEFAULT_TTL = 600.0
#: How many stretches of the ranking a team batch reads when other annotators hold the first ones (4x, 16x ...).
RANKING_TRIES = 4
DEFAULT_OVERLAP = 0.10
#: Knuth's multiplicative hash: item ids spread evenly over 32 bits whatever their order.
_GOLDEN = 2654435761


def overlap_share(store: Store) -> float:
    """The project's overlap share (meta ``overlap_share``, default 10%)."""
    return float(store.get_meta("overlap_share", DEFAULT_OVERLAP))


def set_overlap_share(store: Store, share: float) -> None:
    """Set the share of items given to two annotators (0 to 1)."""
    if not 0.0 <= float(share) <= 1.0:
        raise AlwbError(f"overlap share must be between 0 and 1, not {share}")
    store.set_meta("overlap_share", float(share))


def is_overlap(item_id: int, share: float) -> bool:
    """True when ``item_id`` is one of the items given to two annotators (about ``share`` of all ids)."""
    return ((int(item_id) * _GOLDEN) % 2**32) < share * 2**32


def claim(
    store: Store,
    annotator: str,
    candidates: Sequence[int],
    n: int,
    *,
    ttl: float = DEFAULT_TTL,
    share: float | None = None,
    now: float | None = None,
) -> list[int]:
    """The items ``annotator`` holds after this call: their live leases first (renewed), then new ones taken from
    ``candidates`` in order, up to ``n`` in all."""
    if not annotator:
        raise AlwbError("a lease needs an annotator")
    now = time.time() if now is None else now
    share = overlap_share(store) if share is None else float(share)
    held = store.live_leases(annotator, now)
    if held:
        store.renew_leases(annotator, held, now, now + ttl)

    def wanted(item_id: int, humans: list[str], labeled_otherwise: bool, holders: list[str]) -> bool:
        if labeled_otherwise or annotator in humans:
            return False
        if is_overlap(item_id, share):
            return len(humans) + len(holders) < 2
        return not humans and not holders

    new = store.claim_leases(
        annotator,
        candidates,
        n - len(held),
        now=now,
        expires_at=now + ttl,
        wanted=wanted,
        shared=lambda i: is_overlap(i, share),
    )
    return held + new


def renew(
    store: Store, annotator: str, item_ids: Sequence[int], *, ttl: float = DEFAULT_TTL, now: float | None = None
) -> int:
    """Extend ``annotator``'s live leases (an open page calls this); returns how many were still live."""
    now = time.time() if now is None else now
    return store.renew_leases(annotator, item_ids, now, now + ttl)


def release(store: Store, annotator: str, item_ids: Sequence[int] | None = None) -> int:
    """Give items back (skipped, or the page closed); all of ``annotator``'s with None."""
    return store.release_leases(annotator, item_ids)


def held(store: Store, annotator: str, *, now: float | None = None) -> list[int]:
    """Items ``annotator`` holds now."""
    return store.live_leases(annotator, time.time() if now is None else now)


def overlap_waiting(store: Store, annotator: str, share: float | None = None) -> list[int]:
    """Overlap items answered by exactly one other annotator: they wait for a second answer (oldest first)."""
    share = overlap_share(store) if share is None else float(share)
    by_item: dict[int, set[str]] = {}
    for r in store.annotator_answers():
        by_item.setdefault(int(r["item_id"]), set()).add(str(r["annotator"]))
    return [i for i, who in by_item.items() if len(who) == 1 and annotator not in who and is_overlap(i, share)]


def team_batch(
    proj: Any,
    annotator: str,
    n: int,
    *,
    strategy: str | None = None,
    exclude: Sequence[int] = (),
    ttl: float = DEFAULT_TTL,
    share: float | None = None,
) -> Any:
    """The next batch of a :class:`~alwb.loop.Project` for one annotator of a team, leased to them.

    The candidates are overlap items waiting for a second answer, then the query's ranking (4x ``n`` of it, so
    that items other annotators hold can be passed over; when the others hold all of those, the ranking goes on
    past them, 4x longer each time, :data:`RANKING_TRIES` times at most); the annotator's live leases come first.
    Returns a :class:`~alwb.loop.QueryResult`; raises :class:`~alwb.errors.EmptyPoolError` when nothing is left
    for them.
    """
    from .errors import EmptyPoolError
    from .loop import QueryItem, QueryResult

    store = proj.store
    share = overlap_share(store) if share is None else float(share)
    skip = {int(i) for i in exclude}
    rnd, note, used = store.current_round(), None, strategy or proj.config.strategy
    known: dict[int, Any] = {}
    waiting: list[int] | None = None
    mine: list[int] = []
    size = 4 * n
    for attempt in range(RANKING_TRIES):
        try:
            res = proj.query(size, strategy, exclude=sorted(skip | set(known)))
            got = list(res.items)
            if attempt == 0:
                rnd, note, used = res.round, res.note, res.strategy
        except EmptyPoolError:
            got = []
        known.update((it.id, it) for it in got)
        if waiting is None:
            waiting = [i for i in overlap_waiting(store, annotator, share) if i not in skip and i not in known]
        mine = claim(store, annotator, [*waiting, *(it.id for it in got)], n, ttl=ttl, share=share)
        if len(mine) >= n or len(got) < size:  # a full batch, or nothing further down the ranking
            break
        size *= 4  # every item of this stretch was held by someone else: the next, longer stretch
    waiting = waiting or []
    items = []
    for i in mine:
        if i in known:
            items.append(known[i])
        else:
            row = store.item(i)
            if row is not None:
                reason = "overlap" if i in waiting else "leased"
                items.append(QueryItem(i, str(row["path"]), None, None, None, reason))
    if not items:
        raise EmptyPoolError("no item is left for you: the others hold or have answered the rest")
    return QueryResult(items, used, rnd, note)
