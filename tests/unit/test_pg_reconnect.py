"""A PostgreSQL store whose connection the server dropped (issue 41): every read and write outside a transaction
goes through once more on a new connection, and nothing inside a broken transaction is ever repeated.

The server ends the store's connection with ``pg_terminate_backend`` (as a restart or an administrator does): the
backend says goodbye and closes the socket while the store's connection sits idle."""

from __future__ import annotations

import threading
import time

import pytest

from alwb.errors import StoreUnavailable
from alwb.store import LabelRow, Store

psycopg = pytest.importorskip("psycopg")


def _drop(store: Store, admin_url: str) -> None:
    """End ``store``'s server connection from another one, and wait until its backend is gone."""
    pid = int(store.con.execute("SELECT pg_backend_pid()").fetchone()[0])
    with psycopg.connect(admin_url, autocommit=True) as con:
        assert con.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        for _ in range(100):
            if con.execute("SELECT count(*) FROM pg_stat_activity WHERE pid=%s", (pid,)).fetchone()[0] == 0:
                return
            time.sleep(0.05)
    raise AssertionError("the backend did not go away")


@pytest.fixture
def store(pg_url: str):  # noqa: ANN201
    s = Store(pg_url, create=True)
    s.add_classes(["a", "b"])
    for i in range(5):
        s.record_item(f"/img/{i}.png", f"{i:064x}", 1, width=8, height=8, mode="L", format="PNG", grey=True)
    yield s
    s.close()


def test_reads_and_writes_outside_a_transaction_go_through_after_a_drop(store: Store, postgres_cluster) -> None:  # noqa: ANN001
    admin = postgres_cluster.url()
    _drop(store, admin)
    assert len(store.unlabeled_item_ids()) == 5  # the read of a round's score step (PgConnection.column)
    _drop(store, admin)
    assert store.add_labels([LabelRow(store.item_ids()[0], "a")], annotator="ann") == 1  # a write transaction
    _drop(store, admin)
    store.con.executemany("UPDATE items SET size=? WHERE id=?", [(7, i) for i in store.item_ids()])  # no BEGIN
    _drop(store, admin)
    assert store.con.execute("SELECT count(*) FROM items WHERE size=7").fetchone()[0] == 5
    _drop(store, admin)
    assert store.con.execute("SHOW lock_timeout").fetchone()[0] == "1min"  # the new connection is set up again


def test_a_transaction_cut_off_is_never_repeated(store: Store, postgres_cluster) -> None:  # noqa: ANN001
    ids = store.item_ids()
    with pytest.raises(StoreUnavailable), store.transaction():
        store.con.execute("UPDATE items SET size=9 WHERE id=?", (ids[0],))
        _drop(store, postgres_cluster.url())
        store.con.execute("UPDATE items SET size=9 WHERE id=?", (ids[1],))  # on the lost connection: refused
    assert store.con.execute("SELECT count(*) FROM items WHERE size=9").fetchone()[0] == 0  # rolled back, once
    assert store.add_labels([LabelRow(ids[1], "b")]) == 1  # and the next call works


def test_a_write_that_meets_a_lost_server_is_not_repeated(store: Store, postgres_cluster, pg_url: str) -> None:  # noqa: ANN001
    """A write outside a transaction whose connection is lost while it runs may have landed: it raises instead of
    running twice (a read would run once more)."""
    pid = int(store.con.execute("SELECT pg_backend_pid()").fetchone()[0])
    with psycopg.connect(pg_url, autocommit=True) as other:
        # the statement waits on a lock the other connection holds; the server then ends it mid-statement
        other.execute("BEGIN")
        other.execute("LOCK TABLE meta IN ACCESS EXCLUSIVE MODE")

        def kill() -> None:
            time.sleep(0.5)
            with psycopg.connect(postgres_cluster.url(), autocommit=True) as k:
                k.execute("SELECT pg_terminate_backend(%s)", (pid,))

        t = threading.Thread(target=kill)
        t.start()
        with pytest.raises(StoreUnavailable):
            store.con.execute("INSERT INTO meta(key, value) VALUES('k', '1')")
        t.join()
        other.execute("ROLLBACK")
    assert store.get_meta("k") is None  # not written, and not tried again behind the caller's back
