"""A project on PostgreSQL: ``alwb init --store``, ``$ALWB_STORE_URL``, and ``alwb store copy`` from SQLite."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from store_checks import label_history

from alwb.cli import main
from alwb.errors import ProjectError
from alwb.project import Project
from alwb.store import LabelRow, Store
from alwb.store.copy import TABLES, copy_store


def _snapshot(store: Store) -> dict[str, list[tuple]]:
    out = {}
    for table, key in TABLES.items():
        cols = [d[0] for d in store.con.execute(f"SELECT * FROM {table} LIMIT 0").description]
        out[table] = [
            tuple(r) for r in store.con.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {', '.join(key)}")
        ]
    return out


def _busy_sqlite_project(root: Path, folder: Path) -> None:
    """Items, labels with history and an undone batch, rounds (done and failed), a model, pseudo-labels, drafts."""
    with Project.create(root, classes=["circle", "square", "triangle"]) as proj:
        proj.add_images(folder)
        s = proj.store
        ids = s.item_ids()
        s.add_labels([LabelRow(i, "circle") for i in ids[:10]], annotator="ann", batch_id="b1")
        s.add_labels([LabelRow(i, "square") for i in ids[5:12]], annotator="bob", batch_id="b2")
        s.add_labels([LabelRow(ids[12], None)], annotator="ann", batch_id="b3")
        s.add_labels([LabelRow(ids[13], "triangle")], batch_id="b4")
        s.undo_batch("b4")
        n = s.start_round("margin")
        s.finish_round(
            n,
            model_path="models/round_1.safetensors",
            arch="cnn6",
            config={"lr": 0.001},
            metrics={"val": {"accuracy": 0.5}},
            timings={"train_seconds": 1.25},
            n_labeled=12,
            n_pseudo=0,
            n_val=5,
        )
        s.fail_round(s.start_round("entropy"), "RuntimeError: simulated")
        s.replace_pseudo_labels([(ids[20], "triangle", 0.97), (ids[21], "circle", 0.91)], round_number=1)
        s.save_draft("ann", ids[30], "square")
        s.mark_validation(ids[40:45])


def test_store_copy_moves_every_row_and_the_project_uses_postgres(
    tmp_path: Path, shapes_tree, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = shapes_tree
    root = tmp_path / "proj"
    _busy_sqlite_project(root, folder)
    with Store(root / "alwb.sqlite") as s:
        before = _snapshot(s)
        history = {i: [dict(r) for r in label_history(s, i)] for i in s.item_ids()}
        rounds, model = s.rounds(), s.current_model()
    assert len(before["labels"]) > len(before["items"]) // 4 and any(r[-1] is not None for r in before["labels"])

    assert main(["store", "copy", str(root), pg_url]) == 0
    out = capsys.readouterr().out
    assert f"{len(before['labels'])} labels" in out and "checked every row" in out
    assert json.loads((root / "store.json").read_text()) == {"url": pg_url}
    assert (root / "store.json").stat().st_mode & 0o077 == 0
    assert not (root / "alwb.sqlite").exists() and (root / "alwb.sqlite.moved").is_file()

    with Project.open(root) as proj:
        s = proj.store
        assert s.backend == "postgresql"
        assert _snapshot(s) == before
        assert {i: [dict(r) for r in label_history(s, i)] for i in s.item_ids()} == history
        assert s.rounds() == rounds and s.current_model() == model
        assert s.drafts("ann", s.item_ids()) == {s.item_ids()[30]: "square"}
        # new rows continue after the copied ids (the identity sequences moved past them)
        last_label = max(r[0] for r in before["labels"])
        item = s.item_ids()[50]
        other = next(c for c in proj.classes if c != label_history(s, item)[-1]["class"])
        assert s.add_labels([LabelRow(item, other)], annotator="ann") == 1
        assert label_history(s, item)[-1]["id"] == last_label + 1
        assert s.start_round("margin") == 2
        new_item = s.record_item("/x/new.png", "f" * 64, 1, width=20, height=20, mode="L", format="PNG", grey=True)
        assert new_item == max(r[0] for r in before["items"]) + 1
    # the SQLite backup is untouched
    con = sqlite3.connect(root / "alwb.sqlite.moved")
    try:
        assert con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == len(before["labels"])
    finally:
        con.close()


def test_store_copy_refuses_a_target_that_is_not_empty(tmp_path: Path, shapes_tree, pg_url: str) -> None:
    folder, _ = shapes_tree
    root = tmp_path / "proj"
    _busy_sqlite_project(root, folder)
    with Store(pg_url, create=True) as other:
        other.add_classes(["someone else's"])
    assert main(["store", "copy", str(root), pg_url]) == 2
    assert (root / "alwb.sqlite").is_file() and not (root / "store.json").exists()
    with Store(pg_url) as other:
        assert other.classes() == ["someone else's"]


def test_copy_check_catches_a_difference(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row-by-row check is real: a target that changes one value on the way is reported."""
    import alwb.store.copy as copy_mod

    src = Store(tmp_path / "a.sqlite", create=True)
    src.add_classes(["a", "b"])
    real_rows = copy_mod._rows

    def tampered(store: Store, table: str, cols: list[str]) -> list[tuple]:
        rows = real_rows(store, table, cols)
        if store.backend == "postgresql" and table == "classes" and rows:
            rows[-1] = (*rows[-1][:-1], 99)
        return rows

    monkeypatch.setattr(copy_mod, "_rows", tampered)
    with Store(pg_url, create=True) as dst, pytest.raises(ProjectError, match="table classes differs"):
        copy_store(src, dst)
    src.close()


def test_every_table_is_copied(tmp_path: Path) -> None:
    with Store(tmp_path / "a.sqlite", create=True) as s:
        tables = {r[0] for r in s.con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == set(TABLES)


def test_init_with_store_url_and_env(
    tmp_path: Path, shapes_tree, postgres_cluster, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    folder, _ = shapes_tree
    url = postgres_cluster.new_database()
    assert main(["init", str(tmp_path / "p1"), "--images", str(folder), "--store", url]) == 0
    assert "imported 60 image(s)" in capsys.readouterr().out
    assert not (tmp_path / "p1" / "alwb.sqlite").exists()
    with Project.open(tmp_path / "p1") as proj:
        assert proj.store.backend == "postgresql" and proj.store.item_count() == 60
        assert proj.classes == ["circle", "square", "triangle"]
    # a second project cannot take the same database
    assert main(["init", str(tmp_path / "p2"), "--images", str(folder), "--store", url]) == 2
    assert "already holds a project" in capsys.readouterr().err

    url2 = postgres_cluster.new_database()
    monkeypatch.setenv("ALWB_STORE_URL", url2)
    with Project.create(tmp_path / "p3") as proj:
        assert proj.store.backend == "postgresql"
    assert json.loads((tmp_path / "p3" / "store.json").read_text())["url"] == url2


def test_query_label_train_on_a_postgres_project(tmp_path: Path, shapes_flat, pg_url: str, capsys) -> None:
    """The loop itself on PostgreSQL: a random batch, its answers, one training round, a scored query."""
    import csv

    folder, truth = shapes_flat
    root = tmp_path / "proj"
    assert (
        main(["init", str(root), "--images", str(folder), "--classes", "circle,square,triangle", "--store", pg_url])
        == 0
    )
    capsys.readouterr()
    assert main(["query", str(root), "-n", "24", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    with open(tmp_path / "a.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows([i["path"], truth[i["path"]]] for i in items)
    assert main(["label", str(root), str(tmp_path / "a.csv")]) == 0
    assert main(["train", str(root), "--epochs", "4", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.split("saved")[-1].count("round 1:") == 1
    with Project.open(root) as proj:
        assert proj.store.backend == "postgresql"
        assert [r["status"] for r in proj.store.rounds()] == ["done"]
        assert proj.current_model()["round"] == 1
        q = proj.query(6, strategy="entropy")
        assert len(q.items) == 6 and any(i.reason == "entropy" for i in q.items)
