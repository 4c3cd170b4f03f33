"""The label store: SQLite (one file per project, WAL, foreign keys) or PostgreSQL, one schema, versioned.

``Store(path)`` opens a SQLite file; ``Store("postgresql://...")`` a PostgreSQL database (:mod:`.postgres`).
Both run the same SQL and the same migrations (:mod:`.schema`).

Tables
------
items         every file ever seen: path, sha256, size, geometry, status (``ok`` / ``rejected``) and reason,
              ``split`` (``pool`` or ``val``: the validation set drawn at random, never trained on).
classes       class names in model order (``position``).
labels        the label history. The current label of an item is its row with ``superseded_at IS NULL``
              (a partial unique index guarantees at most one); a changed label keeps the old row.
pseudo_labels the pseudo-labels of the latest round (replaced every round, never exported as human labels).
rounds        one row per training round: strategy, counts, metrics, timings, status, error.
models        one row per trained model file.
meta          schema version and project settings.

Every write that the user sees as "saved" is one committed transaction (SQLite ``synchronous=FULL``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LabelError, ProjectError
from ..intake.imageroot import ENV_IMAGE_ROOT, IMAGE_ROOT_KEY, ImageRoot, in_project
from . import schema
from .accounts import AccountTables
from .flags import FlagTables
from .leasing import LeaseTables
from .queue import QueueTables
from .reviewing import ReviewTables
from .schema import SCHEMA_VERSION

__all__ = ["RESERVED_NAMES", "SCHEMA_VERSION", "LabelRow", "RootChange", "Store", "is_url", "validate_class_name"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Answers that are not classes ("none of these classes", "skip").
RESERVED_NAMES = frozenset({"<none>", "<skip>"})


@dataclass
class RootChange:
    """What :meth:`Store.set_image_root` did: the old and new root, and how many stored paths it rewrote and how
    many are now relative to the root or absolute (outside it)."""

    old: str | None
    new: str | None
    changed: int = 0
    unchanged: int = 0
    relative: int = 0
    absolute: int = 0
    in_project: int = 0


@dataclass(frozen=True)
class LabelRow:
    """One answer to store: ``class_name=None`` means "none of these classes"; ``accepted_guess``: the person
    submitted the model's preselected guess untouched (they did not choose it)."""

    item_id: int
    class_name: str | None
    accepted_guess: bool = False


def is_url(location: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) store address, False for a SQLite path."""
    return isinstance(location, str) and (location.startswith("postgresql://") or location.startswith("postgres://"))


class Store(AccountTables, LeaseTables, ReviewTables, QueueTables, FlagTables):
    """A connection to a project's store (a SQLite file or a PostgreSQL URL). Not shared between threads."""

    def __init__(self, path: str | Path, *, create: bool = False, timeout: float = 60.0) -> None:
        #: The project folder on this machine (set by :class:`~alwb.project.Project`): uploads are stored relative to
        # it.
        self.project_dir: Path | None = None
        self.backend = "postgresql" if is_url(path) else "sqlite"
        if self.backend == "postgresql":
            from . import postgres

            self.path: Path | None = None
            self.url: str | None = str(path)
            self.location = postgres.redact(str(path))
            self.integrity_errors: tuple[type[BaseException], ...] = (postgres.IntegrityError,)
            self.con: Any = postgres.connect(str(path), timeout=timeout)  # StoreUnavailable when it cannot
        else:
            self.path = Path(path)
            self.url = None
            self.location = str(self.path)
            self.integrity_errors = (sqlite3.IntegrityError,)
            if not create and not self.path.exists():
                raise ProjectError(f"no alwb store at {self.path} (run 'alwb init' first)")
            if create and str(path) != ":memory:" and not self.path.exists():
                # readable by its owner only (it holds password hashes); SQLite gives its -wal and -shm files the
                # same permissions
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            elif str(path) != ":memory:":
                _owner_only(self.path)  # a store made before stores were created 0600
            self.con = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            if self.backend == "sqlite":
                self.con.row_factory = sqlite3.Row
                self.con.execute("PRAGMA journal_mode=WAL")
                self.con.execute("PRAGMA foreign_keys=ON")
                self.con.execute("PRAGMA synchronous=FULL")
                self.con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._migrate(create=create)
        except BaseException:
            self.con.close()  # a refused store must not stay open
            raise

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self, *, serialise: bool = True) -> Iterator[Any]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception. Nested use is flattened.

        On PostgreSQL the transaction first takes the store's write lock, so writers take turns as on SQLite;
        ``serialise=False`` leaves it out for work that takes row locks of its own (leases, queued rounds).
        """
        if self.con.in_transaction:
            yield self.con
            return
        if self.backend == "sqlite":
            self.con.execute("BEGIN IMMEDIATE")
        else:
            self.con.begin(lock=serialise)
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")

    def schema_version(self) -> int:
        """The version of the store's schema (0 for an empty database)."""
        if self.backend == "sqlite":
            return int(self.con.execute("PRAGMA user_version").fetchone()[0])
        if self.con.execute("SELECT to_regclass('alwb_schema')").fetchone()[0] is None:
            return 0
        row = self.con.execute("SELECT version FROM alwb_schema").fetchone()
        return 0 if row is None else int(row[0])

    def _migrate(self, *, create: bool) -> None:
        target_version = schema.SCHEMA_VERSION
        version = self.schema_version()
        if version == 0 and not create and self.backend == "postgresql":
            raise ProjectError(f"no alwb store at {self.location} (run 'alwb init' first)")
        if version > target_version:
            raise ProjectError(
                f"store {self.location} has schema version {version}, newer than this alwb ({target_version})"
            )
        if version == target_version:
            return
        with self.transaction():
            if self.backend == "postgresql":
                self.con.execute("CREATE TABLE IF NOT EXISTS alwb_schema (version INTEGER NOT NULL)")
                version = self.schema_version()  # another process may have migrated while this one waited
        for target in range(version + 1, target_version + 1):
            with self.transaction():
                if self.schema_version() >= target:
                    continue
                for stmt in schema.render(schema.MIGRATIONS[target], self.backend):
                    self.con.execute(stmt)
                if self.backend == "sqlite":
                    self.con.execute(f"PRAGMA user_version={target}")
                else:
                    self.con.execute("DELETE FROM alwb_schema")
                    self.con.execute("INSERT INTO alwb_schema(version) VALUES(?)", (target,))

    # ------------------------------------------------------------------ meta / settings
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A JSON value from the meta table."""
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value in the meta table."""
        with self.transaction():
            self.con.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    # ------------------------------------------------------------------ classes
    def classes(self) -> list[str]:
        """Class names in model order."""
        return [r[0] for r in self.con.execute("SELECT name FROM classes ORDER BY position")]

    def class_ids(self) -> dict[str, int]:
        """Map class name -> row id."""
        return {r["name"]: r["id"] for r in self.con.execute("SELECT id, name FROM classes")}

    def add_classes(self, names: Iterable[str]) -> list[str]:
        """Add classes not yet known (keeping order); return the ones added."""
        added = []
        with self.transaction():
            existing = set(self.classes())
            pos = self.con.execute("SELECT COALESCE(MAX(position), -1) FROM classes").fetchone()[0]
            for name in names:
                name = validate_class_name(name)
                if name in existing:
                    continue
                pos += 1
                self.con.execute("INSERT INTO classes(name, position) VALUES(?, ?)", (name, pos))
                existing.add(name)
                added.append(name)
        return added

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class; labels follow (they reference the id)."""
        new = validate_class_name(new)
        with self.transaction():
            try:
                cur = self.con.execute("UPDATE classes SET name=? WHERE name=?", (new, old))
            except self.integrity_errors:
                raise LabelError(f"cannot rename {old!r} to {new!r}: that class already exists") from None
            if cur.rowcount != 1:
                raise LabelError(f"unknown class {old!r}")

    # ------------------------------------------------------------------ items
    def known_hashes(self) -> set[str]:
        """SHA-256 of every accepted item."""
        return {r[0] for r in self.con.execute("SELECT sha256 FROM items WHERE status='ok'")}

    def item_count(self, status: str = "ok") -> int:
        """Number of items with ``status``."""
        return self.con.execute("SELECT COUNT(*) FROM items WHERE status=?", (status,)).fetchone()[0]

    def items(self, *, status: str = "ok") -> list[Any]:
        """Item rows ordered by id."""
        return self.con.execute("SELECT * FROM items WHERE status=? ORDER BY id", (status,)).fetchall()

    def item_ids(self) -> list[int]:
        """Ids of accepted items, ascending."""
        return [r[0] for r in self.con.execute("SELECT id FROM items WHERE status='ok' ORDER BY id")]

    def item(self, item_id: int) -> Any:
        """One item row (None for an id no item can have, e.g. beyond SQLite's 64-bit integers)."""
        if not _INT64_MIN <= int(item_id) <= _INT64_MAX:
            return None
        return self.con.execute("SELECT * FROM items WHERE id=?", (item_id,)).fetchone()

    def item_by_path(self, path: str) -> Any:
        """An item by its stored path, or by a file's absolute path on this machine (an item stored relative to the
        image root is found by its full path under the root in use here, see :meth:`image_root`)."""
        row = self.con.execute("SELECT * FROM items WHERE path=?", (path,)).fetchone()
        if row is None and Path(path).is_absolute():
            stored = self.image_root().to_stored(path)
            if stored != path:
                row = self.con.execute("SELECT * FROM items WHERE path=?", (stored,)).fetchone()
        return row

    def digests(self, paths: Sequence[str]) -> dict[str, str]:
        """The SHA-256 imported for each stored path of ``paths`` that is an item (others are left out)."""
        rows = self._rows_in("SELECT path, sha256 FROM items WHERE path", list(dict.fromkeys(str(p) for p in paths)))
        return {str(r[0]): str(r[1]) for r in rows}

    def item_statuses(self, item_ids: Sequence[int]) -> dict[int, str]:
        """The status (``ok`` / ``rejected``) of each of ``item_ids`` that is an item (others are left out)."""
        uniq = [i for i in dict.fromkeys(int(i) for i in item_ids) if _INT64_MIN <= i <= _INT64_MAX]
        return {int(r[0]): str(r[1]) for r in self._rows_in("SELECT id, status FROM items WHERE id", uniq)}

    def _rows_in(self, sql: str, values: Sequence[Any]) -> list[Any]:
        """``sql`` (ending in the column to match) ``IN`` ``values``, 500 values a query."""
        out: list[Any] = []
        for start in range(0, len(values), 500):
            chunk = list(values[start : start + 500])
            out += self.con.execute(f"{sql} IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        return out

    # ------------------------------------------------------------------ the image root
    def image_root(self) -> ImageRoot:
        """Where the project's images are on this machine: the recorded root, or ``$ALWB_IMAGE_ROOT`` instead."""
        return ImageRoot.of(self.get_meta(IMAGE_ROOT_KEY), project=self.project_dir)

    def set_image_root(self, root: str | Path | None) -> RootChange:
        """Record ``root`` (an absolute folder on this machine; None: no root) as the project's image root and
        rewrite every stored path, in one transaction: paths under it become relative to it (POSIX separators),
        all others absolute. Stored relative paths are read through the root in use here before the change."""
        new_root = None if root is None else str(Path(root).expanduser().absolute())
        change = RootChange(old=self.get_meta(IMAGE_ROOT_KEY), new=new_root)
        with self.transaction():
            old = self.image_root()  # read inside the transaction: no import writes in between
            new = ImageRoot(new_root, Path(new_root) if new_root else None, project=self.project_dir)
            rows = self.con.execute("SELECT id, path FROM items ORDER BY id").fetchall()
            moves: list[tuple[int, str]] = []
            for item_id, stored in rows:
                if in_project(stored) and self.project_dir is None:
                    raise ProjectError(f"item {item_id} is stored relative to the project folder: open the project")
                full = old.locate(stored)
                if not full.is_absolute():  # a relative path with no root anywhere: nothing to anchor it to
                    raise ProjectError(
                        f"item {item_id} is stored as {stored!r} but no image root is known (set {ENV_IMAGE_ROOT})"
                    )
                target = new.to_stored(full)
                if target == stored:
                    change.unchanged += 1
                else:
                    moves.append((int(item_id), target))
                if in_project(target):
                    change.in_project += 1
                elif Path(target).is_absolute():
                    change.absolute += 1
                else:
                    change.relative += 1
            # two passes, so that one path taking another's old name never meets the UNIQUE index half-way
            self.con.executemany("UPDATE items SET path=? WHERE id=?", [(f"\x01alwb-moving:{i}", i) for i, _ in moves])
            self.con.executemany("UPDATE items SET path=? WHERE id=?", [(t, i) for i, t in moves])
            self.set_meta(IMAGE_ROOT_KEY, new_root)
        change.changed = len(moves)
        return change

    def rejected(self) -> list[Any]:
        """Rejected files with their reasons."""
        return self.con.execute("SELECT path, reason FROM items WHERE status='rejected' ORDER BY id").fetchall()

    def item_paths(self, *, status: str = "ok") -> set[str]:
        """Stored paths of the items with ``status``."""
        return {r[0] for r in self.con.execute("SELECT path FROM items WHERE status=?", (status,))}

    def stored_paths(self, *, status: str = "ok") -> list[str]:
        """Stored paths of the items with ``status``, by item id."""
        return [r[0] for r in self.con.execute("SELECT path FROM items WHERE status=? ORDER BY id", (status,))]

    def image_geometry(self) -> list[tuple[int, bool]]:
        """(shorter side, greyscale) of every accepted item."""
        smaller = "MIN" if self.backend == "sqlite" else "LEAST"
        rows = self.con.execute(f"SELECT {smaller}(width, height), grey FROM items WHERE status='ok'").fetchall()
        return [(int(r[0]), bool(r[1])) for r in rows]

    def record_rejected(
        self, path: str, sha256: str | None, size: int, reason: str, *, now: float | None = None
    ) -> None:
        """Record a refused file with its reason (an accepted item at that path is left alone)."""
        with self.transaction():
            self.con.execute(
                "INSERT INTO items(path, sha256, size, status, reason, added_at) VALUES(?, ?, ?, 'rejected', ?, ?)"
                " ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, size=excluded.size, reason=excluded.reason"
                " WHERE items.status='rejected'",
                (path, sha256, size, reason, time.time() if now is None else now),
            )

    def record_item(
        self,
        path: str,
        sha256: str,
        size: int,
        *,
        width: int,
        height: int,
        mode: str,
        format: str | None,
        grey: bool,
        now: float | None = None,
    ) -> int:
        """Record an accepted file (a file rejected earlier at that path becomes accepted); return its item id."""
        with self.transaction():
            row = self.con.execute(
                "INSERT INTO items(path, sha256, size, width, height, mode, format, grey, status, added_at)"
                " VALUES(?, ?, ?, ?, ?, ?, ?, ?, 'ok', ?) ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256,"
                " size=excluded.size, width=excluded.width, height=excluded.height, mode=excluded.mode,"
                " format=excluded.format, grey=excluded.grey, status='ok', reason=NULL, added_at=excluded.added_at"
                " RETURNING id",
                (path, sha256, size, width, height, mode, format, int(grey), time.time() if now is None else now),
            ).fetchone()
        return int(row[0])

    def reject_items(self, reasons: Sequence[tuple[int, str]]) -> None:
        """Mark accepted items rejected with their reasons, in one transaction."""
        with self.transaction():
            self.con.executemany(
                "UPDATE items SET status='rejected', reason=? WHERE id=?", [(r, int(i)) for i, r in reasons]
            )

    def val_item_ids(self) -> list[int]:
        """Items in the validation split."""
        return [r[0] for r in self.con.execute("SELECT id FROM items WHERE status='ok' AND split='val'")]

    def mark_validation(self, item_ids: Sequence[int]) -> None:
        """Move items to the validation split (never trained on, never pseudo-labelled)."""
        with self.transaction():
            self.con.executemany("UPDATE items SET split='val' WHERE id=?", [(int(i),) for i in item_ids])

    def reset_validation(self) -> None:
        """Move every item back to the pool split (a new validation set is drawn afterwards)."""
        with self.transaction():
            self.con.execute("UPDATE items SET split='pool'")

    # ------------------------------------------------------------------ labels
    def add_labels(
        self,
        rows: Sequence[LabelRow],
        *,
        source: str = "human",
        round_number: int | None = None,
        annotator: str | None = None,
        batch_id: str | None = None,
        created_at: float | None = None,
    ) -> int:
        """Record a batch of labels in ONE transaction (all or nothing); return how many were written.

        ``created_at`` is when the answers were given when that was earlier than now (an import from another tool
        says so); a label they supersede is marked superseded now.

        An item's previous current label is superseded (kept in the history). A label equal to the current
        one is not duplicated, unless it comes from another annotator: a second person's answer is recorded even
        when it agrees (agreement is measured on the history).
        """
        if source not in ("human", "import"):
            raise LabelError(f"label source must be human or import, not {source!r}")
        now = time.time()
        given = now if created_at is None else float(created_at)
        latest: dict[int, LabelRow] = {}
        for row in rows:  # an item answered twice in one batch: the last answer wins
            if not _INT64_MIN <= int(row.item_id) <= _INT64_MAX:
                raise LabelError(f"item {row.item_id} does not exist")
            latest.pop(int(row.item_id), None)
            latest[int(row.item_id)] = row
        with self.transaction():
            cids = self.class_ids()
            rnd = self.current_round() if round_number is None else round_number
            written = 0
            for row in latest.values():
                cid = None
                if row.class_name is not None:
                    if row.class_name not in cids:
                        raise LabelError(f"unknown class {row.class_name!r}")
                    cid = cids[row.class_name]
                cur = self.con.execute(
                    "SELECT id, class_id, annotator, accepted_guess FROM labels"
                    " WHERE item_id=? AND superseded_at IS NULL",
                    (row.item_id,),
                ).fetchone()
                if cur is not None:
                    same = cur["class_id"] == cid and (annotator is None or cur["annotator"] == annotator)
                    # the same answer, unless it now confirms a guess that was only accepted before
                    if same and not (cur["accepted_guess"] and not row.accepted_guess):
                        continue
                    self.con.execute("UPDATE labels SET superseded_at=? WHERE id=?", (now, cur["id"]))
                try:
                    self.con.execute(
                        "INSERT INTO labels(item_id, class_id, source, round, annotator, batch_id, created_at,"
                        " accepted_guess) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                        (int(row.item_id), cid, source, rnd, annotator, batch_id, given, int(bool(row.accepted_guess))),
                    )
                except self.integrity_errors as exc:
                    raise LabelError(f"item {row.item_id} does not exist") from exc
                written += 1
            # an item labelled by a person is no longer a pseudo-label, nor anyone's unsubmitted draft
            self.con.executemany("DELETE FROM pseudo_labels WHERE item_id=?", [(int(r.item_id),) for r in rows])
            if annotator is not None:
                pairs = [(annotator, int(r.item_id)) for r in rows]
                self.con.executemany("DELETE FROM drafts WHERE annotator=? AND item_id=?", pairs)
                # a submitted answer ends the annotator's lease on the item
                self.con.executemany("DELETE FROM leases WHERE annotator=? AND item_id=?", pairs)
        return written

    # ------------------------------------------------------------------ drafts (answers not yet submitted)
    def save_draft(self, annotator: str, item_id: int, answer: str | None) -> None:
        """Remember (or with ``None`` forget) an answer chosen but not yet submitted."""
        with self.transaction():
            if answer is None:
                self.con.execute("DELETE FROM drafts WHERE annotator=? AND item_id=?", (annotator, int(item_id)))
            else:
                self.con.execute(
                    "INSERT INTO drafts(annotator, item_id, answer, updated_at) VALUES(?, ?, ?, ?)"
                    " ON CONFLICT(annotator, item_id) DO UPDATE SET answer=excluded.answer,"
                    " updated_at=excluded.updated_at",
                    (annotator, int(item_id), answer, time.time()),
                )

    def drafts(self, annotator: str, item_ids: Sequence[int]) -> dict[int, str]:
        """Unsubmitted answers of ``annotator`` for ``item_ids``."""
        ids = [int(i) for i in item_ids]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.con.execute(
            f"SELECT item_id, answer FROM drafts WHERE annotator=? AND item_id IN ({marks})", (annotator, *ids)
        ).fetchall()
        return {int(r[0]): str(r[1]) for r in rows}

    def clear_drafts(self, annotator: str, item_ids: Sequence[int]) -> None:
        """Forget ``annotator``'s drafts for ``item_ids`` (skipped items, a submitted batch)."""
        with self.transaction():
            self.con.executemany(
                "DELETE FROM drafts WHERE annotator=? AND item_id=?", [(annotator, int(i)) for i in item_ids]
            )

    def undo_batch(self, batch_id: str) -> int:
        """Remove the labels written by ``batch_id`` and restore what they superseded; one transaction."""
        with self.transaction():
            rows = self.con.execute(
                "SELECT id, item_id, created_at FROM labels WHERE batch_id=? AND superseded_at IS NULL",
                (batch_id,),
            ).fetchall()
            for r in rows:
                self.con.execute("DELETE FROM labels WHERE id=?", (r["id"],))
                prev = self.con.execute(
                    "SELECT id FROM labels WHERE item_id=? AND superseded_at=? ORDER BY id DESC LIMIT 1",
                    (r["item_id"], r["created_at"]),
                ).fetchone()
                if prev is not None:
                    self.con.execute("UPDATE labels SET superseded_at=NULL WHERE id=?", (prev["id"],))
        return len(rows)

    def last_batch_id(self, annotator: str | None = None) -> str | None:
        """The batch id of the most recent human batch that still has current labels (for undo); with
        ``annotator``, that annotator's (one person's undo must not take back someone else's batch)."""
        sql = "SELECT batch_id FROM labels WHERE source='human' AND batch_id IS NOT NULL AND superseded_at IS NULL"
        args: list[Any] = []
        if annotator is not None:
            sql += " AND annotator=?"
            args.append(annotator)
        row = self.con.execute(sql + " ORDER BY created_at DESC, id DESC LIMIT 1", args).fetchone()
        return None if row is None else row[0]

    def current_labels(self, *, split: str | None = None, include_none: bool = False) -> list[Any]:
        """Current labels joined with items and classes: item_id, path, sha256, class, position, source, ..."""
        sql = (
            "SELECT l.item_id, i.path, i.sha256, i.split, c.name AS class, c.position, l.source, l.round,"
            " l.annotator, l.created_at, l.accepted_guess FROM labels l JOIN items i ON i.id=l.item_id"
            " LEFT JOIN classes c ON c.id=l.class_id WHERE l.superseded_at IS NULL AND i.status='ok'"
        )
        args: list[Any] = []
        if not include_none:
            sql += " AND l.class_id IS NOT NULL"
        if split is not None:
            sql += " AND i.split=?"
            args.append(split)
        return self.con.execute(sql + " ORDER BY l.item_id", args).fetchall()

    def labels_at(self, when: float, *, split: str | None = None) -> list[Any]:
        """The labels (with a class) that were current at time ``when``: class, source, accepted_guess, split."""
        sql = (
            "SELECT l.item_id, c.name AS class, l.source, l.accepted_guess, i.split FROM labels l"
            " JOIN items i ON i.id=l.item_id JOIN classes c ON c.id=l.class_id"
            " WHERE i.status='ok' AND l.created_at<=? AND (l.superseded_at IS NULL OR l.superseded_at>?)"
        )
        args: list[Any] = [float(when), float(when)]
        if split is not None:
            sql += " AND i.split=?"
            args.append(split)
        return self.con.execute(sql + " ORDER BY l.item_id", args).fetchall()

    def labeled_item_ids(self) -> set[int]:
        """Items with a current answer (including "none of these")."""
        return {r[0] for r in self.con.execute("SELECT item_id FROM labels WHERE superseded_at IS NULL")}

    def unlabeled_item_ids(self, split: str | None = "pool") -> list[int]:
        """Accepted items without a current answer."""
        sql = (
            "SELECT id FROM items WHERE status='ok' AND id NOT IN "
            "(SELECT item_id FROM labels WHERE superseded_at IS NULL)"
        )
        args: list[Any] = []
        if split is not None:
            sql += " AND split=?"
            args.append(split)
        if self.backend != "sqlite":
            return self.con.column(sql + " ORDER BY id", args)
        cur = self.con.cursor()
        cur.row_factory = None  # plain tuples: building 60,000 Row objects costs more than the query
        return [r[0] for r in cur.execute(sql + " ORDER BY id", args)]

    def label_counts(self) -> dict[str, dict[str, int]]:
        """{class: {source: count}} over current labels."""
        out: dict[str, dict[str, int]] = {c: {} for c in self.classes()}
        for r in self.con.execute(
            "SELECT c.name, l.source, COUNT(*) FROM labels l JOIN classes c ON c.id=l.class_id"
            " JOIN items i ON i.id=l.item_id WHERE l.superseded_at IS NULL AND i.status='ok'"
            " GROUP BY c.name, l.source"
        ):
            out.setdefault(r[0], {})[r[1]] = r[2]
        return out

    # ------------------------------------------------------------------ pseudo-labels
    def replace_pseudo_labels(self, rows: Sequence[tuple[int, str, float]], round_number: int) -> None:
        """Replace every pseudo-label with ``rows`` of (item_id, class, confidence)."""
        with self.transaction():
            cids = self.class_ids()
            unknown = sorted({c for _, c, _ in rows if c not in cids})
            if unknown:
                raise LabelError(f"unknown class(es) for pseudo-labels: {', '.join(map(repr, unknown))}")
            self.con.execute("DELETE FROM pseudo_labels")
            self.con.executemany(
                "INSERT INTO pseudo_labels(item_id, class_id, confidence, round) VALUES(?, ?, ?, ?)",
                [(int(i), cids[c], float(p), round_number) for i, c, p in rows],
            )

    def remove_pseudo_labels(self, item_ids: Sequence[int]) -> int:
        """Delete the pseudo-labels of these items (rejected in review); returns how many were removed."""
        with self.transaction():
            cur = self.con.executemany("DELETE FROM pseudo_labels WHERE item_id=?", [(int(i),) for i in item_ids])
        return cur.rowcount

    def pseudo_labels(self) -> list[Any]:
        """Current pseudo-labels joined with items and classes."""
        return self.con.execute(
            "SELECT p.item_id, i.path, i.sha256, c.name AS class, c.position, p.confidence, p.round"
            " FROM pseudo_labels p JOIN items i ON i.id=p.item_id JOIN classes c ON c.id=p.class_id"
            " ORDER BY p.item_id"
        ).fetchall()

    # ------------------------------------------------------------------ rounds and models
    def current_round(self) -> int:
        """The number of the last finished round (0 before any)."""
        r = self.con.execute("SELECT COALESCE(MAX(number), 0) FROM rounds WHERE status='done'").fetchone()
        return int(r[0])

    def start_round(self, strategy: str | None) -> int:
        """Insert a ``running`` round and return its number (failed attempts are replaced)."""
        with self.transaction():
            number = self.current_round() + 1
            self.con.execute("DELETE FROM rounds WHERE number>=? AND status!='done'", (number,))
            self.con.execute(
                "INSERT INTO rounds(number, strategy, status, started_at) VALUES(?, ?, 'running', ?)",
                (number, strategy, time.time()),
            )
        return number

    def finish_round(
        self,
        number: int,
        *,
        model_path: str,
        arch: str,
        config: dict[str, Any],
        metrics: dict[str, Any],
        timings: dict[str, float],
        n_labeled: int,
        n_pseudo: int,
        n_val: int,
    ) -> int:
        """Record the model and mark the round done, in one transaction; return the model id."""
        now = time.time()
        with self.transaction():
            model_id = int(
                self.con.execute(
                    "INSERT INTO models(round, path, arch, config, metrics, created_at) VALUES(?, ?, ?, ?, ?, ?)"
                    " RETURNING id",
                    (number, model_path, arch, json.dumps(config), json.dumps(metrics), now),
                ).fetchone()[0]
            )
            upd = self.con.execute(
                "UPDATE rounds SET status='done', n_labeled=?, n_pseudo=?, n_val=?, metrics=?, timings=?,"
                " model_id=?, finished_at=? WHERE number=? AND status='running'",
                (n_labeled, n_pseudo, n_val, json.dumps(metrics), json.dumps(timings), model_id, now, number),
            )
            if upd.rowcount != 1:
                raise ProjectError(f"round {number} is not running; its result was not recorded")
        return model_id

    def fail_round(self, number: int, error: str) -> None:
        """Mark a round failed with its error; the previous model stays current."""
        with self.transaction():
            self.con.execute(
                "UPDATE rounds SET status='failed', error=?, finished_at=? WHERE number=?",
                (error, time.time(), number),
            )

    def rounds(self) -> list[dict[str, Any]]:
        """All rounds as dicts with decoded metrics and timings."""
        out = []
        for r in self.con.execute("SELECT * FROM rounds ORDER BY number, id"):
            d = dict(r)
            d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else {}
            d["timings"] = json.loads(d["timings"]) if d["timings"] else {}
            out.append(d)
        return out

    def current_model(self) -> dict[str, Any] | None:
        """The model of the last finished round, or None."""
        r = self.con.execute(
            "SELECT m.* FROM rounds r JOIN models m ON m.id=r.model_id WHERE r.status='done'"
            " ORDER BY r.number DESC LIMIT 1"
        ).fetchone()
        if r is None:
            return None
        d = dict(r)
        d["config"] = json.loads(d["config"])
        d["metrics"] = json.loads(d["metrics"])
        return d


def _owner_only(path: Path) -> None:
    """Take group and other permissions off a store file (and its -wal, -shm files) that this user owns: it holds
    password hashes. Files of another owner, and file systems that refuse, are left as they are."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            st = p.stat()
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                os.chmod(p, st.st_mode & 0o700)
        except OSError:
            continue


def validate_class_name(name: str) -> str:
    """Strip and check a class name: non-empty, no path separators or control characters, ≤ 100 chars."""
    if not isinstance(name, str):
        raise LabelError(f"class name must be text, not {type(name).__name__}")
    name = name.strip()
    if not name:
        raise LabelError("class name is empty")
    if len(name) > 100:
        raise LabelError(f"class name longer than 100 characters: {name[:20]!r}...")
    if any(ch in name for ch in "/\\") or name in (".", ".."):
        raise LabelError(f"class name {name!r} contains a path separator")
    # control characters (Cc) and format characters (Cf: bidi overrides such as U+202E, zero-width joiners) make a
    # name read differently from what it is, on a page, in a file name and in a terminal
    hidden = [ch for ch in name if unicodedata.category(ch) in ("Cc", "Cf")]
    if hidden:
        codes = ", ".join(f"U+{ord(ch):04X}" for ch in dict.fromkeys(hidden))
        raise LabelError(f"class name {name!r} contains invisible control or format characters ({codes}); type it anew")
    if name.lower() in RESERVED_NAMES:
        raise LabelError(f"class name {name!r} is reserved for answers that are not a class")
    return name
