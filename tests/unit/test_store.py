"""The label store on both backends (SQLite, PostgreSQL): schema, classes, the label history, pseudo-labels and
rounds. The ``store`` fixture and ``make_store`` run every test on a SQLite file and on a PostgreSQL database of a
throw-away server (tests/_postgres.py)."""

from __future__ import annotations

import sqlite3
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_checks import integrity_ok, label_history

import alwb.store as store_mod
from alwb.errors import LabelError, ProjectError
from alwb.store import SCHEMA_VERSION, LabelRow, Store, validate_class_name

PROPS = settings(deadline=None, max_examples=50, derandomize=True, database=None)
TABLES = (
    "meta",
    "items",
    "classes",
    "labels",
    "pseudo_labels",
    "models",
    "rounds",
    "drafts",
    "users",
    "sessions",
    "leases",
    "reviews",
    "round_requests",
    "workers",
)


# ---------------------------------------------------------------------------- helpers
def add_items(store: Store, n: int) -> list[int]:
    """Insert ``n`` accepted items directly (the store has no item API besides ingest)."""
    ids = []
    with store.transaction():
        start = store.con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        for i in range(start, start + n):
            cur = store.con.execute(
                "INSERT INTO items(path, sha256, size, width, height, status, added_at) VALUES(?, ?, 1, 8, 8, 'ok', ?)"
                " RETURNING id",
                (f"/img/{i:05d}.png", f"{i:064x}", time.time()),
            )
            ids.append(int(cur.fetchone()[0]))
    return ids


def counts(store: Store) -> dict[str, int]:
    return {t: store.con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


def current(store: Store) -> dict[int, str | None]:
    """{item_id: class or None} over current labels, "none of these" included."""
    return {r["item_id"]: r["class"] for r in store.current_labels(include_none=True)}


def max_current_per_item(store: Store) -> int:
    row = store.con.execute(
        "SELECT COALESCE(MAX(c), 0) FROM (SELECT COUNT(*) AS c FROM labels WHERE superseded_at IS NULL"
        " GROUP BY item_id) AS per_item"
    ).fetchone()
    return int(row[0])


@pytest.fixture
def store(store_location: str | Path) -> Store:
    s = Store(store_location, create=True)
    s.add_classes(["cat", "dog", "bird"])
    yield s
    s.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest):  # noqa: ANN201 - returns a factory
    """``make_store(n_items)`` -> (a fresh store with classes a, b, c, its item ids): SQLite in memory, or a new
    PostgreSQL database (module-scoped, so that property tests can use it for every example)."""

    url: list[str] = []

    def make(n_items: int = 6) -> tuple[Store, list[int]]:
        if request.param == "sqlite":
            s = Store(":memory:", create=True)
        else:
            import psycopg

            if not url:
                url.append(request.getfixturevalue("postgres_cluster").new_database("prop"))
            with psycopg.connect(url[0], autocommit=True) as con:  # an empty store again: one database, new schema
                con.execute("DROP SCHEMA public CASCADE")
                con.execute("CREATE SCHEMA public")
            s = Store(url[0], create=True)
        s.add_classes(["a", "b", "c"])
        return s, add_items(s, n_items)

    return make


# ---------------------------------------------------------------------------- schema
def test_new_postgres_store_has_the_tables_and_schema_version(pg_url: str) -> None:
    with Store(pg_url, create=True) as s:
        assert s.backend == "postgresql" and s.schema_version() == SCHEMA_VERSION
        names = {r[0] for r in s.con.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert set(TABLES) <= names
        # one schema for both: the same columns in the same order as on SQLite
        cols = {
            t: [
                r[0]
                for r in s.con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name=? ORDER BY ordinal_position",
                    (t,),
                )
            ]
            for t in TABLES
        }
        # 64-bit ids and double-precision times
        types = dict(
            s.con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name='labels'"
            ).fetchall()
        )
        assert types["id"] == "bigint" and types["created_at"] == "double precision"
        assert integrity_ok(s)
    with Store(":memory:", create=True) as lite:
        for t in TABLES:
            assert [r[1] for r in lite.con.execute(f"PRAGMA table_info({t})")] == cols[t], t


def test_empty_postgres_database_is_refused_without_create(pg_url: str) -> None:
    with pytest.raises(ProjectError, match="no alwb store"):
        Store(pg_url)
    import psycopg

    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT COUNT(*) FROM pg_tables WHERE schemaname='public'").fetchone()[0] == 0


def test_postgres_store_with_newer_schema_is_refused(pg_url: str) -> None:
    Store(pg_url, create=True).close()
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("UPDATE alwb_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(ProjectError, match="newer"):
        Store(pg_url)


def test_unreachable_postgres_is_a_project_error_without_the_password(postgres_cluster) -> None:  # noqa: ANN001
    port = postgres_cluster.port
    with pytest.raises(ProjectError, match="cannot reach") as info:
        Store(f"postgresql://u:secret@127.0.0.1:{port}/no_such_database", timeout=2)
    assert "secret" not in str(info.value) and "***" in str(info.value)


def test_new_store_has_wal_foreign_keys_and_schema_version(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite", create=True) as s:
        assert s.con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert s.con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert s.con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s.con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in s.con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert set(TABLES) <= names
        assert integrity_ok(s)
    # WAL is persistent in the file: a plain connection sees it too
    con = sqlite3.connect(tmp_path / "s.sqlite")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        con.close()


def test_version_1_store_is_migrated_and_keeps_its_labels(
    store_location: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = store_location
    monkeypatch.setattr(store_mod.schema, "SCHEMA_VERSION", 1)
    with Store(path, create=True) as s:  # a store made by the first release
        s.add_classes(["a", "b"])
        (item,) = add_items(s, 1)
        with s.transaction():  # as the first release wrote a label (today's add_labels writes later columns)
            s.con.execute(
                "INSERT INTO labels(item_id, class_id, source, round, created_at) VALUES(?, ?, 'human', 0, 1.0)",
                (item, s.class_ids()["b"]),
            )
    monkeypatch.undo()
    with Store(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert [r["class"] for r in s.current_labels()] == ["b"]
        s.save_draft("x", item, "a")
        assert s.drafts("x", [item]) == {item: "a"}


def test_drafts_are_per_annotator_and_dropped_by_their_labels(make_store) -> None:  # noqa: ANN001
    s, ids = make_store(3)
    s.save_draft("ann", ids[0], "a")
    s.save_draft("ann", ids[0], "b")  # a changed mind overwrites
    s.save_draft("ann", ids[1], "<none>")
    s.save_draft("other", ids[0], "c")
    assert s.drafts("ann", ids) == {ids[0]: "b", ids[1]: "<none>"}
    assert s.drafts("ann", []) == {}
    s.save_draft("ann", ids[1], None)
    assert s.drafts("ann", ids) == {ids[0]: "b"}
    s.add_labels([LabelRow(ids[0], "b")], annotator="ann")
    assert s.drafts("ann", ids) == {}
    assert s.drafts("other", ids) == {ids[0]: "c"}  # someone else's unsubmitted answer stays theirs
    s.clear_drafts("other", ids)
    assert s.drafts("other", ids) == {}


def test_missing_store_is_refused_without_create(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="no alwb store"):
        Store(tmp_path / "absent.sqlite")
    assert not (tmp_path / "absent.sqlite").exists()


def test_reopening_does_not_migrate_again(store_location: str | Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = store_location
    with Store(path, create=True) as s:
        s.add_classes(["cat"])
        s.set_meta("marker", {"x": 1})
    # any migration that ran again would now fail loudly
    monkeypatch.setattr(store_mod.schema, "MIGRATIONS", {v: "THIS IS NOT SQL" for v in range(1, SCHEMA_VERSION + 1)})
    with Store(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.classes() == ["cat"]
        assert s.get_meta("marker") == {"x": 1}


def test_store_with_newer_schema_is_refused_and_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.sqlite"
    Store(path, create=True).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.close()

    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def spy(*args: object, **kwargs: object) -> sqlite3.Connection:
        c = real_connect(*args, **kwargs)
        opened.append(c)
        return c

    monkeypatch.setattr(store_mod.sqlite3, "connect", spy)
    with pytest.raises(ProjectError, match="newer"):
        Store(path)
    monkeypatch.undo()
    # the refused store's connection is not leaked (it would keep the file open)
    assert len(opened) == 1
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0].execute("SELECT 1")
    # and the file is untouched
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    finally:
        con.close()


def test_meta_round_trips_json(store: Store) -> None:
    assert store.get_meta("nope", 7) == 7
    store.set_meta("k", {"a": [1, 2], "b": None})
    store.set_meta("k", {"a": [3]})
    assert store.get_meta("k") == {"a": [3]}


def test_transaction_rolls_back_on_error(store: Store) -> None:
    before = counts(store)
    with pytest.raises(RuntimeError), store.transaction():
        store.con.execute("INSERT INTO meta(key, value) VALUES('x', '1')")
        raise RuntimeError("boom")
    assert counts(store) == before
    assert not store.con.in_transaction


# ---------------------------------------------------------------------------- classes
def test_add_classes_keeps_order_and_skips_known(store: Store) -> None:
    assert store.classes() == ["cat", "dog", "bird"]
    assert store.add_classes(["dog", " fish ", "ant", "fish"]) == ["fish", "ant"]
    assert store.classes() == ["cat", "dog", "bird", "fish", "ant"]
    positions = [r[0] for r in store.con.execute("SELECT position FROM classes ORDER BY position")]
    assert positions == list(range(5))


def test_add_classes_is_all_or_nothing(store: Store) -> None:
    with pytest.raises(LabelError):
        store.add_classes(["fish", "bad/name"])
    assert store.classes() == ["cat", "dog", "bird"]


def test_rename_class_keeps_labels(store: Store) -> None:
    (item,) = add_items(store, 1)
    store.add_labels([LabelRow(item, "cat")])
    store.rename_class("cat", "  kitten ")
    assert store.classes() == ["kitten", "dog", "bird"]
    assert current(store) == {item: "kitten"}


def test_rename_class_errors(store: Store) -> None:
    with pytest.raises(LabelError, match="unknown class"):
        store.rename_class("cow", "ox")
    with pytest.raises(LabelError):
        store.rename_class("cat", "a/b")
    # renaming onto an existing name is a LabelError, not a raw sqlite3.IntegrityError
    with pytest.raises(LabelError, match="dog"):
        store.rename_class("cat", "dog")
    assert store.classes() == ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "/",
        "a/b",
        "a\\b",
        ".",
        "..",
        "a\nb",
        "a\x00b",
        "tab\there",
        "a\x1bb",
        "del\x7f",
        "c1\x85x",
        "x" * 101,
    ],
)
def test_validate_class_name_refuses(name: str) -> None:
    with pytest.raises(LabelError):
        validate_class_name(name)


@pytest.mark.parametrize("name", ["cat", "  dog  ", "a.b", "...", "x" * 100, "chat noir", "猫", "<b>"])
def test_validate_class_name_accepts(name: str) -> None:
    assert validate_class_name(name) == name.strip()


@pytest.mark.parametrize("name", ["<none>", "<NONE>", " <skip> "])
def test_reserved_answer_names_are_not_classes(name: str) -> None:
    with pytest.raises(LabelError, match="reserved"):
        validate_class_name(name)


def test_finish_round_needs_a_running_round(store: Store) -> None:
    with pytest.raises(ProjectError, match="not running"):
        store.finish_round(
            7, model_path="m", arch="a", config={}, metrics={}, timings={}, n_labeled=0, n_pseudo=0, n_val=0
        )
    assert store.con.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 0


def test_validate_class_name_refuses_non_text() -> None:
    with pytest.raises(LabelError, match="text"):
        validate_class_name(3)  # type: ignore[arg-type]


@PROPS
@given(st.text(max_size=120))
def test_validate_class_name_property(name: str) -> None:
    stripped = name.strip()
    ok = (
        0 < len(stripped) <= 100
        and "/" not in stripped
        and "\\" not in stripped
        and stripped not in (".", "..")
        and not any(unicodedata.category(ch) == "Cc" for ch in stripped)
        and stripped.lower() not in ("<none>", "<skip>")
    )
    if ok:
        assert validate_class_name(name) == stripped
    else:
        with pytest.raises(LabelError):
            validate_class_name(name)


@PROPS
@given(st.text(min_size=1, max_size=5), st.characters(whitelist_categories=["Cc"]), st.text(min_size=1, max_size=5))
def test_validate_class_name_refuses_any_control_character(head: str, ctrl: str, tail: str) -> None:
    with pytest.raises(LabelError):
        validate_class_name("a" + head + ctrl + tail + "z")


# ---------------------------------------------------------------------------- labels
def test_add_labels_writes_and_counts(store: Store) -> None:
    a, b, c = add_items(store, 3)
    n = store.add_labels([LabelRow(a, "cat"), LabelRow(b, "dog"), LabelRow(c, None)], annotator="ann", batch_id="b1")
    assert n == 3
    assert current(store) == {a: "cat", b: "dog", c: None}
    assert [r["item_id"] for r in store.current_labels()] == [a, b]  # "none of these" is not a class label
    assert store.labeled_item_ids() == {a, b, c}
    assert store.label_counts() == {"cat": {"human": 1}, "dog": {"human": 1}, "bird": {}}
    row = label_history(store, a)[0]
    assert (row["source"], row["annotator"], row["batch_id"], row["round"]) == ("human", "ann", "b1", 0)


@pytest.mark.parametrize("bad", ["unknown_class", "missing_item"])
@pytest.mark.parametrize("position", [0, 2, 4])
def test_add_labels_batch_is_all_or_nothing(store: Store, bad: str, position: int) -> None:
    ids = add_items(store, 5)
    store.add_labels([LabelRow(ids[0], "bird")], batch_id="before")
    store.replace_pseudo_labels([(ids[1], "cat", 0.9)], round_number=1)
    before = counts(store)
    history = [dict(r) for r in store.con.execute("SELECT * FROM labels ORDER BY id")]
    rows = [LabelRow(i, "dog") for i in ids]
    rows[position] = LabelRow(ids[position], "cow") if bad == "unknown_class" else LabelRow(10**6, "dog")
    with pytest.raises(LabelError):
        store.add_labels(rows, batch_id="bad")
    assert counts(store) == before
    assert [dict(r) for r in store.con.execute("SELECT * FROM labels ORDER BY id")] == history
    assert [r["item_id"] for r in store.pseudo_labels()] == [ids[1]]
    assert not store.con.in_transaction


def test_ids_beyond_sqlite_integers_are_unknown_items(store: Store) -> None:
    (a,) = add_items(store, 1)
    assert store.item(2**63) is None
    assert store.item(-(2**70)) is None
    assert store.item(a)["id"] == a
    with pytest.raises(LabelError, match="does not exist"):
        store.add_labels([LabelRow(a, "cat"), LabelRow(2**64, "cat")])
    assert counts(store)["labels"] == 0


def test_add_labels_refuses_pseudo_source(store: Store) -> None:
    (a,) = add_items(store, 1)
    with pytest.raises(LabelError, match="source"):
        store.add_labels([LabelRow(a, "cat")], source="pseudo")
    assert counts(store)["labels"] == 0


def test_relabel_keeps_history(store: Store) -> None:
    (a,) = add_items(store, 1)
    store.add_labels([LabelRow(a, "cat")], batch_id="b1")
    assert store.add_labels([LabelRow(a, "dog")], batch_id="b2") == 1
    hist = label_history(store, a)
    assert [h["class"] for h in hist] == ["cat", "dog"]
    assert hist[0]["superseded_at"] is not None
    assert hist[0]["superseded_at"] == hist[1]["created_at"]
    assert hist[1]["superseded_at"] is None
    assert current(store) == {a: "dog"}
    assert max_current_per_item(store) == 1


def test_the_same_class_from_another_annotator_is_recorded(store: Store) -> None:
    (a,) = add_items(store, 1)
    assert store.add_labels([LabelRow(a, "cat")], annotator="ann") == 1
    assert store.add_labels([LabelRow(a, "cat")], annotator="ann") == 0  # ann again: nothing new
    assert store.add_labels([LabelRow(a, "cat")], annotator="bob") == 1  # bob agrees: his answer counts
    assert [(h["annotator"], h["class"]) for h in label_history(store, a)] == [("ann", "cat"), ("bob", "cat")]
    assert current(store) == {a: "cat"} and max_current_per_item(store) == 1


def test_relabel_with_same_class_is_a_noop(store: Store) -> None:
    a, b = add_items(store, 2)
    store.add_labels([LabelRow(a, "cat"), LabelRow(b, None)])
    before = [dict(r) for r in store.con.execute("SELECT * FROM labels ORDER BY id")]
    assert store.add_labels([LabelRow(a, "cat"), LabelRow(b, None)], batch_id="again") == 0
    assert [dict(r) for r in store.con.execute("SELECT * FROM labels ORDER BY id")] == before
    assert store.undo_batch("again") == 0


def test_at_most_one_current_label_is_enforced_by_the_schema(store: Store) -> None:
    (a,) = add_items(store, 1)
    store.add_labels([LabelRow(a, "cat")])
    with pytest.raises(store.integrity_errors):
        store.con.execute(
            "INSERT INTO labels(item_id, class_id, source, round, created_at) VALUES(?, 1, 'human', 0, 0)", (a,)
        )


def test_undo_batch_restores_previous_label(store: Store) -> None:
    a, b, c = add_items(store, 3)
    store.add_labels([LabelRow(a, "cat"), LabelRow(b, "dog")], batch_id="b1")
    store.add_labels([LabelRow(a, "bird"), LabelRow(b, "dog"), LabelRow(c, None)], batch_id="b2")
    assert current(store) == {a: "bird", b: "dog", c: None}
    assert store.undo_batch("b2") == 2  # b's answer did not change, so b2 wrote nothing for it
    assert current(store) == {a: "cat", b: "dog"}
    assert [h["class"] for h in label_history(store, a)] == ["cat"]
    assert label_history(store, c) == []
    assert store.undo_batch("b2") == 0
    assert store.undo_batch("b1") == 2
    assert current(store) == {}
    assert counts(store)["labels"] == 0


def test_undo_batch_with_an_item_answered_twice(store: Store) -> None:
    (a,) = add_items(store, 1)
    store.add_labels([LabelRow(a, "cat")], batch_id="b1")
    store.add_labels([LabelRow(a, "dog"), LabelRow(a, "bird")], batch_id="b2")
    assert current(store) == {a: "bird"}  # the last answer wins
    store.undo_batch("b2")
    assert current(store) == {a: "cat"}
    assert [h["class"] for h in label_history(store, a)] == ["cat"]
    assert max_current_per_item(store) == 1


def test_human_label_removes_pseudo_label(store: Store) -> None:
    a, b, c = add_items(store, 3)
    store.replace_pseudo_labels([(a, "cat", 0.91), (b, "dog", 0.8)], round_number=1)
    store.add_labels([LabelRow(a, "dog")])
    assert [(r["item_id"], r["class"]) for r in store.pseudo_labels()] == [(b, "dog")]
    # a "none of these" answer also removes it
    store.add_labels([LabelRow(b, None)])
    assert store.pseudo_labels() == []


def test_replace_pseudo_labels_replaces(store: Store) -> None:
    a, b, c = add_items(store, 3)
    store.replace_pseudo_labels([(a, "cat", 0.91), (b, "dog", 0.8)], round_number=1)
    store.replace_pseudo_labels([(c, "bird", 0.7)], round_number=2)
    rows = store.pseudo_labels()
    assert [(r["item_id"], r["class"], r["round"]) for r in rows] == [(c, "bird", 2)]
    assert rows[0]["confidence"] == pytest.approx(0.7)
    store.replace_pseudo_labels([], round_number=3)
    assert store.pseudo_labels() == []
    # pseudo-labels are never human labels
    assert store.current_labels(include_none=True) == []


def test_unlabeled_and_validation_splits(store: Store) -> None:
    a, b, c, d = add_items(store, 4)
    store.mark_validation([b, d])
    store.add_labels([LabelRow(a, "cat"), LabelRow(d, None)])
    assert sorted(store.val_item_ids()) == [b, d]
    assert store.unlabeled_item_ids() == [c]
    assert store.unlabeled_item_ids(split="val") == [b]
    assert store.unlabeled_item_ids(split=None) == [b, c]
    assert [r["item_id"] for r in store.current_labels(split="val", include_none=True)] == [d]


def _apply(model: dict[int, str | None], rows: list[tuple[int, str | None]]) -> int:
    """Reference semantics of add_labels: the last answer for an item wins; unchanged answers are not written."""
    last: dict[int, str | None] = {}
    for i, c in rows:
        last[i] = c
    written = 0
    for i, c in last.items():
        if i not in model or model[i] != c:
            model[i] = c
            written += 1
    return written


answers = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["a", "b", "c", None])), max_size=8)


@PROPS
@given(st.lists(answers, min_size=1, max_size=6), answers)
def test_label_batches_match_a_reference_model_and_undo_restores(make_store, batches: list, last: list) -> None:  # noqa: ANN001
    s, ids = make_store(6)
    try:
        model: dict[int, str | None] = {}
        for k, batch in enumerate(batches):
            rows = [(ids[i], c) for i, c in batch]
            expected = _apply(model, rows)
            assert s.add_labels([LabelRow(i, c) for i, c in rows], batch_id=f"b{k}") == expected
            assert current(s) == model
            assert max_current_per_item(s) <= 1
        # every change is one row of history; the current row is the last one
        n_rows = s.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        n_super = s.con.execute("SELECT COUNT(*) FROM labels WHERE superseded_at IS NOT NULL").fetchone()[0]
        assert n_rows - n_super == len(model)
        before = dict(model)
        rows = [(ids[i], c) for i, c in last]
        s.add_labels([LabelRow(i, c) for i, c in rows], batch_id="last")
        s.undo_batch("last")
        assert current(s) == before
        assert integrity_ok(s)
    finally:
        s.close()


# ---------------------------------------------------------------------------- rounds and models
def _finish(store: Store, number: int, acc: float) -> int:
    return store.finish_round(
        number,
        model_path=f"/m/round_{number}.safetensors",
        arch="smallcnn",
        config={"lr": 0.1},
        metrics={"acc": acc},
        timings={"train_seconds": 1.5},
        n_labeled=10,
        n_pseudo=0,
        n_val=5,
    )


def test_round_lifecycle(store: Store) -> None:
    assert store.current_round() == 0
    assert store.current_model() is None
    assert store.rounds() == []

    r1 = store.start_round("margin")
    assert r1 == 1
    assert store.current_round() == 0  # running is not finished
    assert store.current_model() is None
    m1 = _finish(store, r1, 0.5)
    assert store.current_round() == 1
    model = store.current_model()
    assert model is not None
    assert (model["id"], model["round"], model["arch"]) == (m1, 1, "smallcnn")
    assert model["config"] == {"lr": 0.1} and model["metrics"] == {"acc": 0.5}

    r2 = store.start_round("entropy")
    assert r2 == 2
    store.fail_round(r2, "RuntimeError: out of memory")
    # a failed round changes neither the current round nor the current model
    assert store.current_round() == 1
    assert store.current_model()["id"] == m1
    failed = [r for r in store.rounds() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] == "RuntimeError: out of memory"
    assert failed[0]["number"] == 2 and failed[0]["finished_at"] is not None

    # the next attempt reuses the number and replaces the failed row
    r2b = store.start_round("entropy")
    assert r2b == 2
    assert [(r["number"], r["status"]) for r in store.rounds()] == [(1, "done"), (2, "running")]
    m2 = _finish(store, r2b, 0.75)
    assert store.current_round() == 2
    assert store.current_model()["id"] == m2
    done = store.rounds()[-1]
    assert done["metrics"] == {"acc": 0.75} and done["timings"] == {"train_seconds": 1.5}
    assert (done["n_labeled"], done["n_pseudo"], done["n_val"], done["model_id"]) == (10, 0, 5, m2)
    assert integrity_ok(store)


def test_labels_record_the_current_round(store: Store) -> None:
    a, b = add_items(store, 2)
    _finish(store, store.start_round("margin"), 0.5)
    store.add_labels([LabelRow(a, "cat")])
    store.add_labels([LabelRow(b, "dog")], source="import", round_number=0)
    assert label_history(store, a)[0]["round"] == 1
    assert label_history(store, b)[0]["round"] == 0
    assert label_history(store, b)[0]["source"] == "import"


def test_integrity_ok_on_a_used_store(store: Store) -> None:
    ids = add_items(store, 5)
    store.add_labels([LabelRow(i, "cat") for i in ids])
    assert integrity_ok(store)
    if store.backend == "sqlite":
        assert store.con.execute("PRAGMA foreign_key_check").fetchall() == []


def test_item_records_rejects_and_splits(store: Store) -> None:
    a = store.record_item("/img/a.png", "a" * 64, 10, width=30, height=20, mode="L", format="PNG", grey=True)
    store.record_rejected("/img/b.png", None, 0, "not an image")
    store.record_rejected("/img/a.png", "x" * 64, 1, "should not touch an accepted item")
    assert store.item_paths() == {"/img/a.png"}
    assert store.item_paths(status="rejected") == {"/img/b.png"}
    assert store.item(a)["reason"] is None and store.item(a)["sha256"] == "a" * 64
    # a file refused earlier and readable now becomes accepted under the same path (and the same id)
    b = store.record_item("/img/b.png", "b" * 64, 11, width=8, height=9, mode="RGB", format="PNG", grey=False)
    assert store.item_by_path("/img/b.png")["id"] == b and store.item(b)["status"] == "ok"
    assert sorted(store.image_geometry()) == [(8, False), (20, True)]
    store.mark_validation([a])
    assert store.val_item_ids() == [a]
    store.reset_validation()
    assert store.val_item_ids() == []
    store.reject_items([(b, "unreadable now")])
    assert store.item_paths() == {"/img/a.png"} and dict(store.rejected()[0])["reason"] == "unreadable now"


def test_last_batch_of_one_annotator(store: Store) -> None:
    a, b = add_items(store, 2)
    store.add_labels([LabelRow(a, "cat")], annotator="ann", batch_id="ann-1")
    store.add_labels([LabelRow(b, "dog")], annotator="bob", batch_id="bob-1")
    assert store.last_batch_id() == "bob-1"
    assert store.last_batch_id("ann") == "ann-1"
    assert store.last_batch_id("cid") is None
