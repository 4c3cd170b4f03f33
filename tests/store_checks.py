"""Checks of a store's contents that only tests need (the product reads the store through its own methods)."""

from __future__ import annotations

from typing import Any

from alwb.store import Store


def integrity_ok(store: Store) -> bool:
    """SQLite: ``PRAGMA integrity_check`` returns ``ok``. PostgreSQL (which checks its constraints on every write):
    the server answers and no item has two current labels."""
    if store.backend == "sqlite":
        return store.con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    row = store.con.execute(
        "SELECT COUNT(*) FROM (SELECT item_id FROM labels WHERE superseded_at IS NULL GROUP BY item_id"
        " HAVING COUNT(*) > 1) d"
    ).fetchone()
    return int(row[0]) == 0


def label_history(store: Store, item_id: int) -> list[Any]:
    """Every label an item ever had, oldest first."""
    return store.con.execute(
        "SELECT l.*, c.name AS class FROM labels l LEFT JOIN classes c ON c.id=l.class_id"
        " WHERE item_id=? ORDER BY l.id",
        (item_id,),
    ).fetchall()


def lease_rows(store: Store) -> list[Any]:
    """Every lease row, by item and slot."""
    return store.con.execute("SELECT * FROM leases ORDER BY item_id, slot").fetchall()
