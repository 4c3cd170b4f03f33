"""The store's SQL for accounts and sessions (the rules live in :mod:`alwb.team.users`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any


class AccountTables:
    """Mixed into :class:`alwb.store.Store`: rows of ``users`` and ``sessions``."""

    con: Any  # both provided by Store
    transaction: Callable[[], AbstractContextManager[Any]]

    def insert_user(self, name: str, role: str, password_hash: str, now: float) -> int:
        with self.transaction():
            return int(
                self.con.execute(
                    "INSERT INTO users(name, role, password_hash, created_at) VALUES(?, ?, ?, ?) RETURNING id",
                    (name, role, password_hash, now),
                ).fetchone()[0]
            )

    def user_row(self, name: str) -> Any:
        """The user called ``name`` (None if there is none)."""
        return self.con.execute("SELECT * FROM users WHERE name=?", (name,)).fetchone()

    def user_rows(self) -> list[Any]:
        return self.con.execute("SELECT * FROM users ORDER BY name").fetchall()

    def user_count(self) -> int:
        """Every account ever made (accounts are disabled, never deleted)."""
        return int(self.con.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def active_user_count(self) -> int:
        return int(self.con.execute("SELECT COUNT(*) FROM users WHERE disabled=0").fetchone()[0])

    def update_user(self, user_id: int, **values: Any) -> None:
        """Set columns of one user (names checked against the table's columns)."""
        allowed = {"role", "password_hash", "disabled", "failed_signins", "last_failed_at"}
        if not values or not set(values) <= allowed:
            raise ValueError(f"cannot set {sorted(set(values) - allowed)} on a user")
        sets = ", ".join(f"{k}=?" for k in values)
        with self.transaction():
            self.con.execute(f"UPDATE users SET {sets} WHERE id=?", (*values.values(), int(user_id)))

    def throttle_rows(self, keys: Sequence[str]) -> dict[str, tuple[int, float | None]]:
        """Failure count and last failure time of each sign-in throttle key that has a row."""
        if not keys:
            return {}
        marks = ", ".join("?" for _ in keys)
        rows = self.con.execute(
            f"SELECT key, failures, last_failed_at FROM signin_throttle WHERE key IN ({marks})", tuple(keys)
        ).fetchall()
        return {str(r[0]): (int(r[1]), None if r[2] is None else float(r[2])) for r in rows}

    def throttle_set(self, values: Sequence[tuple[str, str | None, int, float | None]]) -> None:
        """Write (key, user name or None, failures, last failure time) rows of the sign-in throttle."""
        with self.transaction():
            for key, name, failures, last in values:
                self.con.execute(
                    "INSERT INTO signin_throttle(key, name, failures, last_failed_at) VALUES(?, ?, ?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET failures=excluded.failures,"
                    " last_failed_at=excluded.last_failed_at",
                    (key, name, int(failures), last),
                )

    def throttle_clear(self, name: str) -> None:
        """Forget the failed sign-ins counted against a user name (a new password)."""
        with self.transaction():
            self.con.execute("DELETE FROM signin_throttle WHERE name=?", (name,))

    def insert_session(self, token_sha256: str, user_id: int, now: float, expires_at: float) -> None:
        with self.transaction():
            self.con.execute("DELETE FROM sessions WHERE expires_at<=?", (now,))
            self.con.execute(
                "INSERT INTO sessions(token_sha256, user_id, created_at, expires_at) VALUES(?, ?, ?, ?)",
                (token_sha256, int(user_id), now, expires_at),
            )

    def session_row(self, token_sha256: str) -> Any:
        """The session and its user's name, role and disabled flag (None if unknown)."""
        return self.con.execute(
            "SELECT s.*, u.name, u.role, u.disabled, u.created_at AS user_created_at"
            " FROM sessions s JOIN users u ON u.id=s.user_id WHERE s.token_sha256=?",
            (token_sha256,),
        ).fetchone()

    def delete_sessions(self, *, token_sha256: str | None = None, user_id: int | None = None) -> int:
        with self.transaction():
            if token_sha256 is not None:
                return self.con.execute("DELETE FROM sessions WHERE token_sha256=?", (token_sha256,)).rowcount
            return self.con.execute("DELETE FROM sessions WHERE user_id=?", (int(user_id or 0),)).rowcount
