"""``Project.reads`` (what pages read) and the writes pages make through ``Project``."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_shapes

from alwb.errors import LabelError
from alwb.project import Project


@pytest.fixture
def proj(tmp_path: Path):  # noqa: ANN201
    truth = make_shapes(tmp_path / "shapes", 10, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=sorted(set(truth.values()))) as p:
        p.add_images(tmp_path / "shapes")
        p.set_config(val_size=6)
        p.ensure_validation()
        yield p, truth


def test_counts_follow_the_answers(proj) -> None:
    p, truth = proj
    c = p.reads.counts()
    assert (c.items, c.answered, c.unanswered, c.val_answered, c.pseudo) == (30, 0, 30, 0, 0)
    assert c.val_size == len(p.store.val_item_ids()) > 0
    val = p.store.val_item_ids()[:2]
    pool = p.store.unlabeled_item_ids(split="pool")[:3]
    p.submit([(i, truth[p.store.item(i)["path"]]) for i in [*val, *pool]], annotator="ann")
    c = p.reads.counts()
    assert (c.answered, c.unanswered, c.val_answered) == (5, 25, 2)
    assert sum(n.get("human", 0) for n in c.per_class.values()) == 5
    assert set(p.reads.label_map()) == {*val, *pool}


def test_item_by_id_or_path_and_missing(proj) -> None:
    p, _ = proj
    row = p.store.items()[0]
    assert p.reads.item(int(row["id"]))["path"] == row["path"]
    assert p.reads.item(str(row["id"]))["id"] == row["id"]
    assert p.reads.item(f"  {row['path']} ")["id"] == row["id"]
    assert p.reads.item("no/such.png") is None
    assert p.reads.item(10**9) is None
    assert [r["id"] for r in p.reads.items([row["id"], 10**9])] == [row["id"]]


def test_edit_classes_is_one_transaction(proj) -> None:
    p, _ = proj
    before = p.classes
    with pytest.raises(LabelError):  # the rename clashes: the added class is not kept either
        p.edit_classes(["hexagon"], (before[0], before[1]))
    assert p.classes == before
    assert p.edit_classes(["hexagon", before[0]], (before[0], "round")) == ["hexagon"]
    assert p.classes == ["round", *before[1:], "hexagon"]


def test_drafts_are_saved_and_forgotten_together(proj) -> None:
    p, _ = proj
    ids = p.store.unlabeled_item_ids(split="pool")[:3]
    p.save_drafts("ann", {ids[0]: p.classes[0], ids[1]: p.classes[1]})
    assert p.reads.drafts("ann", ids) == {ids[0]: p.classes[0], ids[1]: p.classes[1]}
    p.save_drafts("ann", {ids[0]: None})
    assert p.reads.drafts("ann", ids) == {ids[1]: p.classes[1]}
    assert p.reads.drafts("other", ids) == {}


def test_exists_tells_a_project_from_a_folder(proj, tmp_path: Path) -> None:
    p, _ = proj
    assert Project.exists(p.root)
    assert not Project.exists(tmp_path / "shapes")
