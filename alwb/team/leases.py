"""Which annotator holds which items until when, so that two annotators never label the same item at once.

:func:`claim` leases up to ``n`` items of a ranked candidate list (a query's order) to one annotator for ``ttl`` seconds
(default: the project's :func:`lease_ttl`, 10 minutes); the page renews them while it is open (:func:`renew`);
submitting an answer (:func:`submit`, which refuses answers on items that went to someone else meanwhile, or
``Store.add_labels(..., annotator=...)``) or skipping (:func:`release`, which also drops the drafts) ends a lease, and
an expired lease is free for anyone. A team's batch (:func:`team_batch`) carries the validation share of one person's
batch. An item is given to one annotator, except the overlap items: a fixed share of the items (default
:data:`DEFAULT_OVERLAP`, 10%), chosen by a hash of the item id so that every process agrees, is given on purpose to two
different annotators (at the same time or one after the other) to measure their agreement (:mod:`alwb.team.agreement`).
Nobody gets an item they have already answered, nor one with a label of its own (an import), nor an ordinary item
someone has answered.
"""

from __future__ import annotations

import random
import time
import uuid
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import AlwbError
from ..store import Store

DEFAULT_TTL = 600.0
#: How many stretches of the ranking a team batch reads when other annotators hold the first ones (4x, 16x ...).
RANKING_TRIES = 4
DEFAULT_OVERLAP = 0.10
#: Knuth's multiplicative hash: item ids spread evenly over 32 bits whatever their order.
_GOLDEN = 2654435761


def lease_ttl(store: Store) -> float:
    """Seconds a lease lives without being renewed (meta ``lease_ttl``, default :data:`DEFAULT_TTL`)."""
    return float(store.get_meta("lease_ttl", DEFAULT_TTL))


def set_lease_ttl(store: Store, seconds: float) -> None:
    """Set how long a lease lives without being renewed (an open page renews it well before)."""
    if not float(seconds) > 0:
        raise AlwbError(f"a lease must live some time, not {seconds} s")
    store.set_meta("lease_ttl", float(seconds))


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
    ttl: float | None = None,
    share: float | None = None,
    now: float | None = None,
) -> list[int]:
    """The items ``annotator`` holds after this call: their live leases first (renewed), then new ones taken from
    ``candidates`` in order, up to ``n`` in all."""
    if not annotator:
        raise AlwbError("a lease needs an annotator")
    now = time.time() if now is None else now
    share = overlap_share(store) if share is None else float(share)
    ttl = lease_ttl(store) if ttl is None else float(ttl)
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
    store: Store, annotator: str, item_ids: Sequence[int], *, ttl: float | None = None, now: float | None = None
) -> int:
    """Extend ``annotator``'s live leases (an open page calls this); returns how many were still live."""
    now = time.time() if now is None else now
    ttl = lease_ttl(store) if ttl is None else float(ttl)
    return store.renew_leases(annotator, item_ids, now, now + ttl)


def release(store: Store, annotator: str, item_ids: Sequence[int] | None = None) -> int:
    """Give items back (skipped, the page closed, signed out); all of ``annotator``'s with None. The annotator's
    drafts on those items go with them."""
    return store.release_leases(annotator, item_ids)


@dataclass
class Submitted:
    """What :func:`submit` did: the batch id, labels written, and the answers refused with the reason of each."""

    batch_id: str
    written: int
    refused: dict[int, str] = field(default_factory=dict)


def submit(
    proj: Any,
    annotator: str,
    answers: Sequence[tuple[int, str | None]],
    *,
    batch_id: str | None = None,
    share: float | None = None,
    now: float | None = None,
    accepted: Collection[int] = (),
) -> Submitted:
    """Save a team member's batch of answers in one transaction, checking each against the leases.

    An answer on an item that someone else holds now or has answered (an ordinary item), or that two others hold
    or have answered (an overlap item), is refused with the reason and not written: the lease ran out while the
    page was away and the item went to someone else. The other answers are written (``Project.label``), whether or
    not their lease is still live: nobody else has them. On PostgreSQL the items' rows are locked first, so that no
    claim can hand one out while the check and the write run. ``accepted``: items whose answer is the model's
    guess submitted untouched (:meth:`alwb.project.Project.label`).
    """
    if not annotator:
        raise AlwbError("a team answer needs an annotator")
    now = time.time() if now is None else now
    share = overlap_share(proj.store) if share is None else float(share)
    batch_id = batch_id or uuid.uuid4().hex
    store = proj.store
    with store.transaction():
        refused = store.lease_conflicts(
            annotator, [int(i) for i, _ in answers], now, shared=lambda i: is_overlap(i, share)
        )
        keep = [(int(i), c) for i, c in answers if int(i) not in refused]
        written = proj.label(keep, annotator=annotator, batch_id=batch_id, accepted=accepted)[1] if keep else 0
        if refused:  # the refused answers' drafts and any lease row of this annotator on them go too
            store.release_leases(annotator, sorted(refused))
    return Submitted(batch_id, written, refused)


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
    ttl: float | None = None,
    share: float | None = None,
) -> Any:
    """The next batch of a :class:`~alwb.project.Project` for one annotator of a team, leased to them.

    The batch is made as one person's is (:func:`alwb.project.batch_mix`): pending validation items take
    ``val_share`` of it (in an order of the annotator's own, so that two annotators rarely reach for the same ones)
    and fill it when the pool runs short. The rest is overlap items waiting for a second answer, then the query's
    ranking of the pool (4x ``n`` of it, so that items other annotators hold can be passed over; when the others
    hold all of those, the ranking goes on past them, 4x longer each time, :data:`RANKING_TRIES` times at most).
    The annotator's live leases come first and count toward both shares. Returns a
    :class:`~alwb.project.QueryResult`; raises :class:`~alwb.errors.EmptyPoolError` when nothing is left for them.
    """
    from ..errors import EmptyPoolError
    from ..project import QueryItem, QueryResult, batch_mix

    store = proj.store
    share = overlap_share(store) if share is None else float(share)
    ttl = lease_ttl(store) if ttl is None else float(ttl)
    skip = {int(i) for i in exclude}
    cfg = proj.config
    rnd, note, used = store.current_round(), None, strategy or cfg.strategy
    val_ids = set(store.val_item_ids())
    pending_val = _own_order([i for i in store.unlabeled_item_ids(split="val") if i not in skip], annotator, rnd)
    held = store.live_leases(annotator, time.time())
    mine = held
    # the validation share first (with a pool that can fill the rest): the ranking would leave no room for it
    k_val, _ = batch_mix(n, len(pending_val), n, cfg.val_share)
    held_val = sum(1 for i in held if i in val_ids)
    if k_val > held_val and len(held) < n:
        want = min(n, len(held) + k_val - held_val)
        mine = claim(store, annotator, pending_val, want, ttl=ttl, share=share)
    known: dict[int, Any] = {}
    waiting: list[int] | None = None
    size = 4 * n
    for attempt in range(RANKING_TRIES):
        if len(mine) >= n:
            break
        try:  # the pool's ranking alone: validation items are chosen above
            res = proj.query(size, strategy, exclude=sorted(skip | set(known) | val_ids))
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
    if len(mine) < n and pending_val:  # the pool ran short: validation items fill the batch
        mine = claim(store, annotator, pending_val, n, ttl=ttl, share=share)
    elif held and mine is held:  # nothing new was claimed: the held leases are renewed all the same
        renew(store, annotator, held, ttl=ttl)
    waiting = waiting or []
    items = []
    for i in mine:
        if i in known:
            items.append(known[i])
            continue
        row = store.item(i)
        if row is not None:
            reason = "validation" if i in val_ids else "overlap" if i in waiting else "leased"
            items.append(QueryItem(i, str(row["path"]), None, None, None, reason))
    if not items:
        raise EmptyPoolError("no item is left for you: the others hold or have answered the rest")
    items.sort(key=lambda it: it.reason == "validation")  # as in one person's batch: the pool's items first
    return QueryResult(items, used, rnd, note)


def _own_order(ids: list[int], annotator: str, round_number: int) -> list[int]:
    """``ids`` shuffled in an order of ``annotator``'s own for this round (the same on every call)."""
    rng = random.Random(zlib.crc32(f"{annotator}\0{round_number}".encode()))
    out = sorted(ids)
    rng.shuffle(out)
    return out
