"""Team batches (alwb.team.leases.team_batch) over a real project on both backends: the query's order, leased, disjoint
except the overlap, overlap items answered once waiting for a second annotator."""

from __future__ import annotations

from pathlib import Path

import pytest

from alwb.errors import AlwbError, EmptyPoolError, LabelError
from alwb.project import Project
from alwb.team import leases


@pytest.fixture
def proj(tmp_path: Path, shapes_flat, store_location):  # noqa: ANN001, ANN201
    folder, truth = shapes_flat
    url = store_location if isinstance(store_location, str) else None
    p = Project.create(tmp_path / "proj", classes=["circle", "square", "triangle"], store_url=url)
    p.add_images(folder)
    leases.set_overlap_share(p.store, 0.25)
    p.truth = truth
    yield p
    p.close()


def test_two_annotators_batches_and_the_overlap(proj) -> None:  # noqa: ANN001
    share = 0.25
    a = leases.team_batch(proj, "ann", 12)
    b = leases.team_batch(proj, "bob", 12)
    ids_a, ids_b = [it.id for it in a.items], [it.id for it in b.items]
    assert len(ids_a) == len(ids_b) == 12
    shared = set(ids_a) & set(ids_b)
    assert all(leases.is_overlap(i, share) for i in shared)
    assert {i for i in ids_a if leases.is_overlap(i, share)} <= set(ids_b)  # free overlap items go to both
    # a reload keeps the same batch
    assert sorted(it.id for it in leases.team_batch(proj, "ann", 12).items) == sorted(ids_a)
    # ann answers; the overlap items she answered wait for someone else, never for her
    proj.label([(i, proj.truth[proj.store.item(i)["path"]]) for i in ids_a], annotator="ann")
    waiting = leases.overlap_waiting(proj.store, "cid")
    assert set(waiting) == {i for i in ids_a if leases.is_overlap(i, share)}
    assert leases.overlap_waiting(proj.store, "ann") == []
    assert waiting and set(waiting) <= set(ids_b)
    assert not set(waiting) & {it.id for it in leases.team_batch(proj, "cid", 12).items}  # bob holds them
    leases.release(proj.store, "cid")
    leases.release(proj.store, "bob")  # bob skipped his batch
    c = leases.team_batch(proj, "cid", 12)
    ids_c = [it.id for it in c.items]
    assert set(waiting) <= set(ids_c)  # now the second answers are cid's, first in his batch
    assert ids_c[: len(waiting)] == waiting and {it.reason for it in c.items[: len(waiting)]} == {"overlap"}
    assert not set(ids_c) & (set(ids_a) - set(waiting))  # ann's ordinary items are done
    nxt = [it.id for it in leases.team_batch(proj, "ann", 12).items]
    assert not set(nxt) & set(ids_a)


def test_nothing_left_for_one_annotator(proj) -> None:  # noqa: ANN001
    everything = proj.store.item_ids()
    proj.label([(i, proj.truth[proj.store.item(i)["path"]]) for i in everything], annotator="ann")
    with pytest.raises(EmptyPoolError):
        leases.team_batch(proj, "ann", 5)
    overlap = [i for i in everything if leases.is_overlap(i, 0.25)]
    got = [it.id for it in leases.team_batch(proj, "bob", 100).items]
    assert sorted(got) == sorted(overlap)  # only the second answers on the overlap are left


def test_a_batch_goes_past_a_ranking_others_hold(proj) -> None:  # noqa: ANN001
    """Others hold all but one item: the batch reads further down the ranking than its first stretch (4x the batch)
    and still finds the free one, instead of saying nothing is left."""
    leases.set_overlap_share(proj.store, 0.0)
    everything = proj.store.item_ids()
    free = everything[len(everything) // 2]
    held = leases.claim(proj.store, "ann", [i for i in everything if i != free], len(everything), share=0.0)
    assert len(held) == len(everything) - 1
    got = leases.team_batch(proj, "bob", 1)
    assert [it.id for it in got.items] == [free]
    leases.release(proj.store, "bob")
    leases.claim(proj.store, "cid", [free], 1, share=0.0)
    with pytest.raises(EmptyPoolError):
        leases.team_batch(proj, "bob", 1)


def _bare_project(tmp_path: Path, store_location, n_items: int) -> Project:  # noqa: ANN001
    """A project of ``n_items`` items without image files (queries before any model are random: no pixel is read),
    with its validation sample drawn (10%, at most 200)."""
    url = store_location if isinstance(store_location, str) else None
    p = Project.create(tmp_path / "bare", classes=["a", "b"], store_url=url)
    with p.store.transaction():
        p.store.con.executemany(
            "INSERT INTO items(path, sha256, size, width, height, status, added_at) VALUES(?, ?, 1, 8, 8, 'ok', 0)",
            [(f"/img/{i:05d}.png", f"{i:064x}") for i in range(n_items)],
        )
    p.ensure_validation()
    return p


def test_team_batches_carry_the_validation_share_of_one_persons_batch(tmp_path: Path, store_location) -> None:  # noqa: ANN001
    """Issue 41's reproduction: 1,000 items, a batch of 16. One person's query holds 4 validation items; ten team
    batches (five annotators, each answering before the next batch) held none of the 100 before, as the claim took
    the ranking's pool items first. Now each holds the same 4, so the team labels 40 of them in 160 answers."""
    p = _bare_project(tmp_path, store_location, 1000)
    try:
        assert len(p.store.val_item_ids()) == 100
        one = p.query(16)
        assert sum(it.reason == "validation" for it in one.items) == 4
        val = set(p.store.val_item_ids())
        answers = 0
        for k in range(10):
            who = f"ann{k % 5}"
            pending = set(p.store.unlabeled_item_ids(split="val"))
            b = leases.team_batch(p, who, 16)
            ids = [it.id for it in b.items]
            assert len(ids) == 16
            fresh = len(set(ids) & pending)
            assert fresh == 4, f"batch {k}: {fresh} validation items not yet labeled"
            # marked (never pre-filled), after the pool's items as in one person's batch; an overlap item of the
            # sample waiting for its second answer is marked too
            flags = [it.reason == "validation" for it in b.items]
            assert flags == [it.id in val for it in b.items] and flags == sorted(flags)
            done = leases.submit(p, who, [(i, "a" if i % 2 else "b") for i in ids])
            assert done.refused == {} and done.written == 16
            answers += 16
        st = p.status()["items"]["validation"]
        assert st == {"size": 100, "labeled": 40}  # 4 per 16 answers, as one person gives
        assert answers == 160
    finally:
        p.close()


def test_a_reload_keeps_the_validation_items_and_they_fill_a_short_pool(tmp_path: Path, store_location) -> None:  # noqa: ANN001
    p = _bare_project(tmp_path, store_location, 40)  # 10 validation items, 30 in the pool
    try:
        leases.set_overlap_share(p.store, 0.0)
        first = leases.team_batch(p, "ann", 8)
        again = leases.team_batch(p, "ann", 8)  # a reload: the same leases, still marked as validation items
        assert sorted((it.id, it.reason == "validation") for it in again.items) == sorted(
            (it.id, it.reason == "validation") for it in first.items
        )
        assert sum(it.reason == "validation" for it in first.items) == 2
        # bob takes the rest of the pool; cid's batch is filled with validation items, as one person's would be
        pool_left = [i for i in p.store.unlabeled_item_ids(split="pool") if i not in {it.id for it in first.items}]
        assert len(leases.claim(p.store, "bob", pool_left, len(pool_left))) == len(pool_left)
        c = leases.team_batch(p, "cid", 8)
        assert [it.reason for it in c.items] == ["validation"] * 8
        assert not {it.id for it in c.items} & {it.id for it in first.items}
    finally:
        p.close()


def test_a_late_submit_on_items_now_someone_elses_is_refused(tmp_path: Path, store_location) -> None:  # noqa: ANN001
    """Issue 41's store-level reproduction: ann's lease ran out while her page was away, bob got the same 14
    ordinary items; ann's late submit used to save all 14 again (answered by two people). Now each is refused with
    the reason, her answers on items nobody else has still commit, and no ordinary item has two annotators."""
    import time

    p = _bare_project(tmp_path, store_location, 60)
    try:
        store = p.store
        leases.set_overlap_share(store, 0.0)
        pool = store.unlabeled_item_ids(split="pool")
        past = time.time() - 120
        old = leases.claim(store, "ann", pool[:14], 14, ttl=60, now=past)  # expired a minute ago
        assert len(old) == 14
        for i in old:
            store.save_draft("ann", i, "a")
        fresh = leases.claim(store, "ann", pool[14:16], 16)  # two items she holds now
        assert fresh == pool[14:16]
        bob = leases.claim(store, "bob", pool[:14], 14)
        assert bob == old  # free again, and bob has them
        assert store.drafts("ann", old) == {}  # her drafts on them went with her lapsed leases
        done = leases.submit(p, "ann", [(i, "a") for i in old + fresh])
        assert done.written == 2 and sorted(done.refused) == sorted(old)
        assert set(done.refused.values()) == {"your lease ran out and another annotator holds it now"}
        assert leases.held(store, "bob") == bob  # untouched
        assert leases.submit(p, "bob", [(i, "b") for i in bob]).written == 14
        # once bob has answered, a late answer is refused as answered, even with no lease left anywhere
        late = leases.submit(p, "cid", [(bob[0], "a")])
        assert late.written == 0 and late.refused == {bob[0]: "another annotator answered it meanwhile"}
        who: dict[int, set[str]] = {}
        for r in store.con.execute("SELECT item_id, annotator FROM labels WHERE source='human'"):
            who.setdefault(int(r[0]), set()).add(str(r[1]))
        assert all(len(w) == 1 for w in who.values()) and len(who) == 16
    finally:
        p.close()


def test_an_overlap_item_takes_a_second_answer_but_not_a_third(tmp_path: Path, store_location) -> None:  # noqa: ANN001
    p = _bare_project(tmp_path, store_location, 30)
    try:
        leases.set_overlap_share(p.store, 1.0)  # every item is answered twice
        item = p.store.unlabeled_item_ids(split="pool")[0]
        assert leases.submit(p, "ann", [(item, "a")]).written == 1
        assert leases.claim(p.store, "bob", [item], 1) == [item]
        assert leases.submit(p, "cid", [(item, "b")]).refused  # ann answered, bob holds it: two others
        assert leases.submit(p, "bob", [(item, "b")]).written == 1
        assert leases.submit(p, "ann", [(item, "b")]).written == 1  # her own answer, changed: no third person
    finally:
        p.close()


# ------------------------------------------------------------------------------------------------ the front door


def test_submit_saves_answers_drops_drafts_and_is_all_or_nothing(proj) -> None:  # noqa: ANN001
    """Project.submit: the answers, the batch's drafts (answered and skipped items) in one transaction; a bad
    answer (unknown class, a rejected item) writes nothing and keeps every draft."""
    ids = proj.store.item_ids()[:6]
    for i in ids:
        proj.store.save_draft("ann", i, "circle")
    bad = [(ids[0], "circle"), (ids[1], "hexagon")]
    with pytest.raises(LabelError, match="hexagon"):
        proj.submit(bad, skipped=[ids[5]], annotator="ann")
    proj.store.reject_items([(ids[2], "blurred")])
    with pytest.raises(LabelError, match="rejected"):
        proj.submit([(ids[0], "circle"), (ids[2], "square")], annotator="ann")
    assert proj.store.current_labels() == [] and len(proj.store.drafts("ann", ids)) == 6  # nothing written
    done = proj.submit([(ids[0], "circle"), (ids[1], None)], skipped=[ids[3]], annotator="ann", accepted=[ids[0]])
    assert done.written == 2 and not done.refused
    rows = {int(r["item_id"]): r for r in proj.store.current_labels(include_none=True)}
    assert rows[ids[0]]["class"] == "circle" and rows[ids[1]]["class"] is None
    assert bool(rows[ids[0]]["accepted_guess"]) and not bool(rows[ids[1]]["accepted_guess"])
    assert sorted(proj.store.drafts("ann", ids)) == [ids[2], ids[4], ids[5]]  # the others' drafts stay


def test_a_team_submit_refuses_what_another_holds_and_gives_skipped_items_back(proj) -> None:  # noqa: ANN001
    leases.set_overlap_share(proj.store, 0.0)
    mine = [it.id for it in leases.team_batch(proj, "ann", 6).items]
    theirs = [it.id for it in leases.team_batch(proj, "bob", 6).items]
    done = proj.submit([(mine[0], "circle"), (theirs[0], "square")], skipped=mine[1:3], annotator="ann", team=True)
    assert done.written == 1 and set(done.refused) == {theirs[0]}
    assert {int(r["item_id"]) for r in proj.store.current_labels()} == {mine[0]}
    held = set(leases.held(proj.store, "ann"))
    assert not held & set(mine[:3]) and set(mine[3:]) <= held  # the skipped ones went back, the rest are still hers
    assert theirs[0] in leases.held(proj.store, "bob")
    with pytest.raises(AlwbError, match="annotator"):
        proj.submit([(mine[3], "circle")], team=True)
