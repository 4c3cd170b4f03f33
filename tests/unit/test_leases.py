"""Leases on both store backends: disjoint batches except the overlap items, expiry, renewal, release, and several
processes claiming at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from store_checks import lease_rows

from alwb.store import LabelRow, Store
from alwb.team import leases

T0 = 1_800_000_000.0


def _items(store: Store, n: int) -> list[int]:
    store.add_classes(["a", "b"])
    return [
        store.record_item(f"/img/{i:05d}.png", f"{i:064x}", 1, width=8, height=8, mode="L", format="PNG", grey=True)
        for i in range(n)
    ]


@pytest.fixture
def store(store_location: str | Path) -> Store:
    s = Store(store_location, create=True)
    yield s
    s.close()


def test_overlap_is_a_stable_share_of_the_items() -> None:
    ids = range(1, 20_001)
    share = sum(leases.is_overlap(i, 0.1) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert not any(leases.is_overlap(i, 0.0) for i in ids) and all(leases.is_overlap(i, 1.0) for i in ids)
    assert [i for i in range(1, 200) if leases.is_overlap(i, 0.1)] == [
        i for i in range(1, 200) if leases.is_overlap(i, 0.1)
    ]


def test_two_annotators_get_disjoint_batches_except_the_overlap(store: Store) -> None:
    ids = _items(store, 60)
    share = 0.25
    overlap = {i for i in ids if leases.is_overlap(i, share)}
    assert 5 < len(overlap) < 25
    a = leases.claim(store, "ann", ids, 20, share=share, now=T0)
    b = leases.claim(store, "bob", ids, 20, share=share, now=T0)
    assert len(a) == len(b) == 20
    assert a == ids[:20]  # the candidates' order is kept
    assert set(a) & set(b) == set(a) & overlap  # only overlap items are shared, and all of ann's are
    c = leases.claim(store, "cid", ids, 20, share=share, now=T0)
    assert set(c) & (set(a) | set(b)) <= overlap
    assert not set(c) & set(a) & set(b)  # an overlap item has two holders at most
    held = Counter(r["item_id"] for r in lease_rows(store))
    assert max(held.values()) == 2 and {i for i, k in held.items() if k == 2} <= overlap


def test_without_overlap_nobody_shares(store: Store) -> None:
    ids = _items(store, 30)
    batches = [leases.claim(store, f"p{k}", ids, 8, share=0.0, now=T0) for k in range(4)]
    assert [len(b) for b in batches] == [8, 8, 8, 6]
    assert len({i for b in batches for i in b}) == 30


def test_reload_keeps_the_batch_and_expiry_frees_it(store: Store) -> None:
    ids = _items(store, 20)
    a = leases.claim(store, "ann", ids, 5, ttl=60, share=0.0, now=T0)
    assert leases.claim(store, "ann", ids, 5, ttl=60, share=0.0, now=T0 + 30) == a  # same batch, renewed
    assert leases.renew(store, "ann", a, ttl=60, now=T0 + 80) == 5  # renewed at +30, live until +90
    assert leases.held(store, "ann", now=T0 + 139) == a
    assert leases.renew(store, "ann", a, ttl=60, now=T0 + 141) == 0  # expired at +140
    assert leases.held(store, "ann", now=T0 + 141) == []
    b = leases.claim(store, "bob", ids, 5, share=0.0, now=T0 + 141)
    assert b == a  # free again for anyone


def test_submit_and_skip_release_and_answered_items_are_not_handed_out(store: Store) -> None:
    ids = _items(store, 40)
    share = 0.3
    ordinary = [i for i in ids if not leases.is_overlap(i, share)]
    overlap = [i for i in ids if leases.is_overlap(i, share)]
    order = [ordinary[0], ordinary[1], overlap[0], ordinary[2]]
    a = leases.claim(store, "ann", order, 4, share=share, now=T0)
    assert a == order
    store.add_labels([LabelRow(ordinary[0], "a"), LabelRow(overlap[0], "b")], annotator="ann")  # submit
    leases.release(store, "ann", [ordinary[1]])  # skip
    assert leases.held(store, "ann", now=T0) == [ordinary[2]]
    b = leases.claim(store, "bob", order, 4, share=share, now=T0)
    # the answered ordinary item goes to nobody; the skipped one is free; the overlap item goes to a second person
    assert b == [ordinary[1], overlap[0]]
    assert leases.claim(store, "ann", order, 4, share=share, now=T0) == [ordinary[2]]  # never back to ann
    store.add_labels([LabelRow(overlap[0], "a")], annotator="bob")
    assert overlap[0] not in leases.claim(store, "cid", order, 4, share=share, now=T0)  # two answers: done
    # an imported label is an answer too
    store.add_labels([LabelRow(ordinary[3], "a")], source="import")
    assert leases.claim(store, "dan", [ordinary[3]], 1, share=share, now=T0) == []


def test_overlap_share_setting(store: Store) -> None:
    assert leases.overlap_share(store) == leases.DEFAULT_OVERLAP == 0.1
    leases.set_overlap_share(store, 0.2)
    assert leases.overlap_share(store) == 0.2
    with pytest.raises(leases.AlwbError, match="between 0 and 1"):
        leases.set_overlap_share(store, 1.5)


WORKER = textwrap.dedent(
    """
    import sys, time
    from alwb.team import leases
    from alwb.store import LabelRow, Store

    location, me, share = sys.argv[1], sys.argv[2], float(sys.argv[3])
    def left_for_me(s):
        # PostgreSQL's SKIP LOCKED passes over items another claim is locking at that instant, so an empty claim
        # means "nothing free right now": stop only when nothing is left that this annotator could still answer
        answers = {}
        for item_id, who in s.con.execute("SELECT item_id, annotator FROM labels"):
            answers.setdefault(int(item_id), set()).add(who)
        return [
            i for i in order
            if me not in answers.get(i, ())
            and len(answers.get(i, ())) < (2 if leases.is_overlap(i, share) else 1)
        ]

    with Store(location) as s:
        order = s.item_ids()
        rounds = 0
        deadline = time.monotonic() + 200
        while True:
            got = leases.claim(s, me, order, 7, share=share)
            if not got:
                if left_for_me(s) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                break
            time.sleep(0.002)
            s.add_labels([LabelRow(i, me) for i in got], annotator=me)  # each process answers with its own class
            rounds += 1
    print(rounds)
    """
)


def test_several_processes_never_label_the_same_ordinary_item(store_location: str | Path) -> None:
    n_proc, n_items, share = 6, 240, 0.1
    with Store(store_location, create=True) as s:
        s.add_classes([f"p{k}" for k in range(n_proc)])
        for i in range(n_items):
            s.record_item(f"/i/{i}.png", f"{i:064x}", 1, width=8, height=8, mode="L", format="PNG", grey=True)
        ids = s.item_ids()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(store_location), f"p{k}", str(share)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(n_proc)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    assert sum(int(o) for o, _ in outs) > n_proc  # they took turns, several batches each
    with Store(store_location) as s:
        per_item: dict[int, list[str]] = defaultdict(list)
        for r in s.con.execute("SELECT item_id, annotator FROM labels ORDER BY id"):
            per_item[int(r[0])].append(str(r[1]))
        assert lease_rows(s) == []  # every lease ended with its answer
    assert set(per_item) == set(ids)  # every item answered
    for i in ids:
        if leases.is_overlap(i, share):
            assert len(per_item[i]) == 2 and len(set(per_item[i])) == 2, (i, per_item[i])
        else:
            assert len(per_item[i]) == 1, (i, per_item[i])  # given to exactly one annotator
    assert len({a for v in per_item.values() for a in v}) > 1
