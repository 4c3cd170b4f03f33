"""PostgreSQL behind the store's interface: a psycopg 3 connection that speaks like ``sqlite3``'s.

The store writes its SQL once, with ``?`` placeholders; :class:`PgConnection` turns them into psycopg's ``%s``,
hands back rows that answer by position and by name (like ``sqlite3.Row``), and keeps the connection in autocommit
so that the store's own ``BEGIN`` … ``COMMIT`` is the only transaction. A store transaction on PostgreSQL also takes
one advisory lock for the project (:data:`WRITE_LOCK`): writers take turns as they do on SQLite, so that reads
made inside a write (the current label, the next round number) cannot change under it. Work that must run in
parallel (leases) takes row locks in a transaction of its own instead.

A server that cannot be reached, or that drops the connection (stopped, restarting), raises
:class:`~alwb.errors.StoreUnavailable` with a one-line reason instead of psycopg's error. A transaction cut off that
way was rolled back by the server (a COMMIT cut off may have landed: repeating a label call is harmless); the next
call after the server is back opens a new connection by itself.
"""

from __future__ import annotations

import contextlib
import functools
import select
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import tuple_row

from ..errors import StoreUnavailable
from ..redaction import redact as _redact

T = TypeVar("T")

#: Key of the advisory lock held by every store write transaction.
WRITE_LOCK = 0x616C7762  # "alwb"

IntegrityError = psycopg.IntegrityError
OperationalError = psycopg.OperationalError
#: SQLSTATEs of a lost server: connection exceptions (class 08), and the server shutting down or starting up.
_LOST_STATES = ("57P01", "57P02", "57P03")


def redact(url: str) -> str:
    """The address without its password (for messages and logs; :func:`alwb.redaction.redact`)."""
    return _redact(url)


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

    def __init__(self, cur: psycopg.Cursor[Any] | None, rowcount: int | None = None) -> None:
        self._cur = cur  # None: a statement that had nothing to do (a ROLLBACK on a connection the server dropped)
        self.rowcount = (cur.rowcount if cur is not None else -1) if rowcount is None else rowcount

    @property
    def description(self) -> list[tuple[str, ...]] | None:
        d = None if self._cur is None else self._cur.description
        return None if d is None else [(c.name,) for c in d]

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self.description is not None else None  # type: ignore[union-attr]

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self.description is not None else []  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """One psycopg connection in autocommit mode, with the ``execute`` / ``executemany`` of ``sqlite3``.

    A lost server raises :class:`~alwb.errors.StoreUnavailable`; the connection is opened again at the next
    statement outside a transaction (inside one, the statements until its ``ROLLBACK`` raise it too).
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url
        self.location = redact(url)
        self.timeout = timeout
        self._txn = False  # between the store's BEGIN and its COMMIT / ROLLBACK
        self._con = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            con = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(min(self.timeout, 30))))
            con.row_factory = _row_factory
            # a writer waits for another writer as long as SQLite's busy timeout would
            con.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self.location, _reason(exc)) from None
        return con

    def _live(self) -> psycopg.Connection[Any]:
        """The connection; a new one when the server dropped the old one between transactions."""
        if self._con.closed or self._con.broken:
            if self._txn:
                raise StoreUnavailable(self.location, "the connection was lost in the middle of a transaction")
            self._con = self._connect()
        return self._con

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """psycopg's errors of a lost server become :class:`StoreUnavailable`; every other error stays as it is."""
        try:
            yield
        except psycopg.OperationalError as exc:
            state = exc.sqlstate or ""
            lost = self._con.closed or self._con.broken or state.startswith("08") or state in _LOST_STATES
            if not lost:
                raise
            raise StoreUnavailable(self.location, _reason(exc)) from None

    @property
    def in_transaction(self) -> bool:
        if self._con.closed:
            return self._txn
        return self._con.info.transaction_status != pq.TransactionStatus.IDLE

    @property
    def closed(self) -> bool:
        return self._con.closed

    def _idle_and_dropped(self) -> bool:
        """True when the server ended this connection while it sat idle between transactions (a restart, an
        administrator): libpq has not noticed yet, but the server's goodbye (or the end of the stream) is waiting on
        the socket, where an idle connection in autocommit receives nothing otherwise."""
        if self._txn or self._con.closed or self._con.broken:
            return False
        try:
            fd = self._con.fileno()
            if hasattr(select, "poll"):  # no limit on the descriptor's number (select() stops at 1024)
                poller = select.poll()
                poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
                return bool(poller.poll(0))
            ready, _, _ = select.select([fd], [], [], 0)
        except (OSError, ValueError, psycopg.Error):  # cannot tell: the statement itself will find out
            return False
        return bool(ready)

    def _repeatable(self, sql: str) -> bool:
        """A statement that failed on a lost connection may run once more on a new one: outside a transaction, a
        BEGIN or a read (the server rolled nothing forward that a repeat could double)."""
        if self._txn:
            return False
        head = sql.lstrip()[:6].upper()
        return sql == "BEGIN" or head in ("SELECT", "SHOW")

    def _run(self, sql: str, send: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Every statement of the store reaches the server through here (``execute``, ``executemany``,
        ``column``): a connection the server dropped while it was idle is opened again before the statement is sent
        (nothing was sent on the old one: a write is as safe as a read), and a BEGIN or a read outside a transaction
        that meets a lost connection runs once more on a new one. Inside a transaction nothing is repeated: the
        statements until its ROLLBACK raise :class:`StoreUnavailable`."""
        if self._idle_and_dropped():
            self._con.close()  # the next _live() opens a new one (StoreUnavailable while the server is down)
        try:
            with self._guard():
                return send(self._live())
        except StoreUnavailable:
            if not self._repeatable(sql):
                raise
        with self._guard():
            return send(self._live())

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> PgCursor:
        if sql in ("COMMIT", "ROLLBACK"):
            return self._end(sql)
        args = tuple(params or ())

        def send(con: psycopg.Connection[Any]) -> PgCursor:
            cur = con.cursor()
            cur.execute(_translate(sql), args)
            return PgCursor(cur)

        return self._run(sql, send)

    def _end(self, sql: str) -> PgCursor:
        """COMMIT or ROLLBACK the store's transaction (a ROLLBACK after a lost connection has nothing to do)."""
        was, self._txn = self._txn, False
        if sql == "ROLLBACK" and (self._con.closed or self._con.broken):
            return PgCursor(None)
        with self._guard():
            if was and (self._con.closed or self._con.broken):
                raise StoreUnavailable(self.location, "the connection was lost in the middle of a transaction")
            cur = self._con.cursor()
            cur.execute(sql)
        return PgCursor(cur)

    def column(self, sql: str, params: Sequence[Any] | None = ()) -> list[Any]:
        """The first column of every row, without building row objects (large id lists)."""
        args = tuple(params or ())

        def send(con: psycopg.Connection[Any]) -> list[Any]:
            cur = con.cursor(row_factory=tuple_row)
            cur.execute(_translate(sql), args)
            return [r[0] for r in cur.fetchall()]

        return self._run(sql, send)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> PgCursor:
        rows = [tuple(p) for p in seq]

        def send(con: psycopg.Connection[Any]) -> PgCursor:
            cur = con.cursor()
            if not rows:
                return PgCursor(cur, rowcount=0)
            cur.executemany(_translate(sql), rows)  # pipelined; rowcount is the total, as in sqlite3
            return PgCursor(cur)

        return self._run(sql, send)

    def begin(self, *, lock: bool = True) -> None:
        self.execute("BEGIN")  # on a connection dropped while idle, once more on a new one
        self._txn = True
        try:
            if lock:
                with self._guard():
                    self._con.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        except BaseException:  # the caller's transaction has not started: no one else would end this one
            self._txn = False
            if not (self._con.closed or self._con.broken):
                with contextlib.suppress(psycopg.Error):
                    self._con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._con.close()


def _reason(exc: BaseException) -> str:
    """The first line of a driver error, its spaces squeezed."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _redact(" ".join(first.split()))


def connect(url: str, *, timeout: float = 60.0) -> PgConnection:
    """Open ``url`` (a ``postgresql://`` address)."""
    return PgConnection(url, timeout=timeout)
