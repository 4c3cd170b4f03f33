"""Answers remember whether a person chose them or accepted the model's preselected guess untouched (schema v10):
the store keeps it, a later confirmation replaces an accepted guess, and the export manifests carry it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
from conftest import make_shapes
from store_checks import label_history

from alwb.io.export import MANIFEST_COLUMNS, export_dataset
from alwb.project import Project
from alwb.store import LabelRow, Store


def test_store_keeps_accepted_guess_and_a_confirmation_replaces_it(store_location) -> None:
    with Store(store_location, create=True) as s:
        with s.transaction():
            for i in range(3):
                s.record_item(f"img{i}.png", f"{i:064x}", 1, width=8, height=8, mode="L", format="PNG", grey=True)
        s.add_classes(["a", "b"])
        ids = s.item_ids()
        s.add_labels([LabelRow(ids[0], "a", True), LabelRow(ids[1], "b")], annotator="ana")
        got = {r["item_id"]: bool(r["accepted_guess"]) for r in s.current_labels()}
        assert got == {ids[0]: True, ids[1]: False}
        # the same answer chosen later by the person replaces the accepted guess (kept in the history)
        s.add_labels([LabelRow(ids[0], "a")], annotator="ana")
        assert {r["item_id"]: bool(r["accepted_guess"]) for r in s.current_labels()}[ids[0]] is False
        assert [bool(h["accepted_guess"]) for h in label_history(s, ids[0])] == [True, False]
        # accepting a guess equal to what the person chose keeps the person's answer
        s.add_labels([LabelRow(ids[1], "b", True)], annotator="ana")
        assert len(label_history(s, ids[1])) == 1


def test_a_v9_store_gets_the_column_with_chosen_for_old_labels(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Store(path, create=True) as s:
        with s.transaction():
            s.record_item("x.png", "0" * 64, 1, width=8, height=8, mode="L", format="PNG", grey=True)
        s.add_classes(["a"])
        s.add_labels([LabelRow(s.item_ids()[0], "a")])
    con = sqlite3.connect(path)  # back to v9: the column did not exist (nor v11's progress table)
    con.execute("DROP TABLE round_progress")
    con.execute("ALTER TABLE round_requests ADD COLUMN progress TEXT")
    con.execute("ALTER TABLE labels DROP COLUMN accepted_guess")
    con.execute("PRAGMA user_version = 9")
    con.commit()
    con.close()
    with Store(path) as s:
        assert [bool(r["accepted_guess"]) for r in s.current_labels()] == [False]


def test_export_manifests_carry_accepted_guess(tmp_path: Path) -> None:
    truth = make_shapes(tmp_path / "flat", 4, layout="flat")
    with Project.create(tmp_path / "proj", classes=["circle", "square", "triangle"]) as p:
        p.set_config(val_size=0)
        p.add_images(tmp_path / "flat")
        images = p.store.image_root()
        items = p.store.items()
        path_of = {int(r["id"]): str(images.locate(r["path"])) for r in items}
        pool = [int(r["id"]) for r in items if r["split"] == "pool"][:6]
        p.label([(i, truth[path_of[i]]) for i in pool], annotator="ana", accepted=pool[:2])
        export_dataset(p, tmp_path / "out")
    out = tmp_path / "out"
    assert MANIFEST_COLUMNS[-1] == "accepted_guess"
    man = pd.read_csv(out / "manifest.csv")
    assert man["accepted_guess"].dtype == bool
    assert sorted(man[man["accepted_guess"]]["item_id"]) == sorted(pool[:2])
    par = pd.read_parquet(out / "manifest.parquet")
    assert par["accepted_guess"].dtype == bool and int(par["accepted_guess"].sum()) == 2
    meta = [json.loads(line) for line in (out / "dataset" / "metadata.jsonl").read_text().splitlines()]
    assert sorted(m["item_id"] for m in meta if m["accepted_guess"] is True) == sorted(pool[:2])
    assert all(isinstance(m["accepted_guess"], bool) for m in meta)
