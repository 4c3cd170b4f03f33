"""PostgreSQL behind the store's interface: a psycopg 3 connection that speaks like ``sqlite3``'s.

The store writes its SQL once, with ``?`` placeholders; :class:`PgConnection` turns them into psycopg's ``%s``,
hands back rows that answer by position and by name (like ``sqlite3.Row``), and keeps the connection in autocommit
so that the store's own ``BEGIN`` … ``COMMIT`` is the only transaction. A store transaction on PostgreSQL also takes
one advisory lock for the project (:data:`WRITE_LOCK`): writers take turns as they do on SQLite, so that reads
made inside a write (the current label, the next round number) cannot change under it. Work that must run in
parallel (leases) takes row locks in a transaction of its own instead.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.rows import tuple_row

#: Key of the advisory lock held by every store write transaction.
WRITE_LOCK = 0x616C7762  # "alwb"

IntegrityError = psycopg.IntegrityError
OperationalError = psycopg.OperationalError


def redact(url: str) -> str:
    """The address without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


class Row(tuple):
    """A result row: ``row[0]``, ``row["name"]``, ``row.keys()`` and ``dict(row)``, as ``sqlite3.Row``."""

    _names: tuple[str, ...]
    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: tuple[str, ...], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: psycopg.Cursor[Any]) -> Any:
    if cursor.description is None:
        return None
    names = tuple(c.name for c in cursor.description)
    index = {n: i for i, n in enumerate(names)}
    return lambda values: Row(values, names, index)


@functools.lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PgCursor:
    """The part of ``sqlite3.Cursor`` the store uses."""

    def __init__(self, cur: psycopg.Cursor[Any], rowcount: int | None = None) -> None:
        self._cur = cur
        self.rowcount = cur.rowcount if rowcount is None else rowcount

    @property
    def description(self) -> list[tuple[str, ...]] | None:
        d = self._cur.description
        return None if d is None else [(c.name,) for c in d]

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self._cur.description is not None else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """One psycopg connection in autocommit mode, with the ``execute`` / ``executemany`` of ``sqlite3``."""

    dialect = "postgresql"

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url
        self._con = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(min(timeout, 30))))
        self._con.row_factory = _row_factory
        # a writer waits for another writer as long as SQLite's busy timeout would
        self._con.execute(f"SET lock_timeout = {int(timeout * 1000)}")

    @property
    def in_transaction(self) -> bool:
        return self._con.info.transaction_status != pq.TransactionStatus.IDLE

    @property
    def closed(self) -> bool:
        return self._con.closed

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> PgCursor:
        cur = self._con.cursor()
        cur.execute(_translate(sql), tuple(params or ()))
        return PgCursor(cur)

    def column(self, sql: str, params: Sequence[Any] | None = ()) -> list[Any]:
        """The first column of every row, without building row objects (large id lists)."""
        cur = self._con.cursor(row_factory=tuple_row)
        cur.execute(_translate(sql), tuple(params or ()))
        return [r[0] for r in cur.fetchall()]

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> PgCursor:
        cur = self._con.cursor()
        rows = [tuple(p) for p in seq]
        if not rows:
            return PgCursor(cur, rowcount=0)
        cur.executemany(_translate(sql), rows)  # pipelined; rowcount is the total, as in sqlite3
        return PgCursor(cur)

    def begin(self, *, lock: bool = True) -> None:
        self._con.execute("BEGIN")
        if lock:
            self._con.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))

    def close(self) -> None:
        self._con.close()


def connect(url: str, *, timeout: float = 60.0) -> PgConnection:
    """Open ``url`` (a ``postgresql://`` address)."""
    return PgConnection(url, timeout=timeout)
