"""Team batches (alwb.leases.team_batch) over a real project on both backends: the query's order, leased, disjoint
except the overlap, overlap items answered once waiting for a second annotator."""

from __future__ import annotations

from pathlib import Path

import pytest

from alwb import leases
from alwb.errors import EmptyPoolError
from alwb.loop import Project


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
