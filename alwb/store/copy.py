"""Moving a project's store to another backend: every row of every table copied, then checked row by row.

``copy_store(src, dst)`` copies into an empty store (same schema version) inside one transaction on each side: the
source is held in a write transaction for the whole copy, so no label can be written to it and missed. Ids are
copied as they are (the label history keeps pointing at the same items and classes) and PostgreSQL's identity
sequences are moved past them. After the commit the target is read back on a fresh connection and compared with
the source, table by table and row by row; any difference raises :class:`~alwb.errors.ProjectError`.

``move_project_store(root, url)`` does that for a project folder and then makes the folder use the new store: it
writes ``store.json`` and renames ``alwb.sqlite`` to ``alwb.sqlite.moved`` (kept as a backup, never opened again).
Stop the workbench and any running round first: a process that still has the SQLite file open would write to the
backup.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ProjectError
from . import Store
from .location import POINTER_FILE, STORE_FILE, pointer_url, write_pointer
from .schema import IDENTITY_TABLES, SCHEMA_VERSION

#: Every table, parents before children (foreign keys), with the columns that order its rows.
TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key",),
    "classes": ("id",),
    "items": ("id",),
    "models": ("id",),
    "rounds": ("id",),
    "labels": ("id",),
    "pseudo_labels": ("item_id",),
    "drafts": ("annotator", "item_id"),
    "users": ("id",),
    "sessions": ("token_sha256",),
    "leases": ("item_id", "annotator"),
    "reviews": ("id",),
    "round_requests": ("id",),
    "workers": ("name",),
    "flag_verdicts": ("id",),
    "signin_throttle": ("key",),
    "round_progress": ("runner",),
}


@dataclass
class CopyReport:
    """Rows copied (and checked) per table."""

    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{n} {t}" for t, n in self.rows.items())
        return f"copied {self.source} to {self.target} and checked every row: {counts}"


def _columns(store: Store, table: str) -> list[str]:
    return [d[0] for d in store.con.execute(f"SELECT * FROM {table} LIMIT 0").description]


def _rows(store: Store, table: str, cols: list[str]) -> list[tuple[Any, ...]]:
    order = ", ".join(TABLES[table])
    return [tuple(r) for r in store.con.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")]


def _check_empty(dst: Store) -> None:
    full = [t for t in TABLES if dst.con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]]
    if full:
        raise ProjectError(f"the target store {dst.location} is not empty ({', '.join(full)} hold rows)")


def copy_store(src: Store, dst: Store) -> CopyReport:
    """Copy every row of ``src`` into the empty store ``dst`` and check them; see the module docstring."""
    for s in (src, dst):
        if s.schema_version() != SCHEMA_VERSION:
            raise ProjectError(f"store {s.location} has schema version {s.schema_version()}, not {SCHEMA_VERSION}")
    report = CopyReport(source=src.location, target=dst.location)
    with src.transaction():  # no writer can slip a label in between the copy and the switch
        _check_empty(dst)
        expected: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        with dst.transaction():
            for table in TABLES:
                cols = _columns(src, table)
                if cols != _columns(dst, table):
                    raise ProjectError(f"table {table} has different columns in the two stores")
                rows = _rows(src, table, cols)
                marks = ", ".join("?" * len(cols))
                dst.con.executemany(f"INSERT INTO {table}({', '.join(cols)}) VALUES({marks})", rows)
                expected[table] = (cols, rows)
            if dst.backend == "postgresql":
                for table in IDENTITY_TABLES:
                    dst.con.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false)"
                        f" FROM {table}"
                    )
        # read back through a connection of its own: what a new process will see
        with Store(dst.url or dst.path) as check:  # type: ignore[arg-type]
            for table, (cols, rows) in expected.items():
                got = _rows(check, table, cols)
                if got != rows:
                    bad = next((i for i, (a, b) in enumerate(zip(rows, got, strict=False)) if a != b), None)
                    where = f"first difference at row {bad}" if bad is not None else f"{len(got)} rows, not {len(rows)}"
                    raise ProjectError(f"the copy of table {table} differs from the source ({where})")
                report.rows[table] = len(rows)
    return report


def move_project_store(root: str | Path, url: str) -> CopyReport:
    """Copy the SQLite store of the project in ``root`` to ``url`` and make the project use it."""
    root = Path(root)
    if pointer_url(root) is not None:
        raise ProjectError(f"{root} already uses the store named in {POINTER_FILE}")
    sqlite_path = root / STORE_FILE
    if not sqlite_path.is_file():
        raise ProjectError(f"{root} is not an alwb project with a SQLite store (no {STORE_FILE})")
    with Store(sqlite_path) as src, Store(url, create=True) as dst:
        with src.transaction():  # held until the folder points to the new store
            report = copy_store(src, dst)
            write_pointer(root, url)
        src.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.replace(sqlite_path, root / (STORE_FILE + ".moved"))
    for suffix in ("-wal", "-shm"):
        side = root / (STORE_FILE + suffix)
        if side.exists():
            os.replace(side, root / (STORE_FILE + ".moved" + suffix))
    return report
