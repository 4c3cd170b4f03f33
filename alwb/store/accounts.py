"""The store's SQL for accounts and sessions (the rules live in :mod:`alwb.users`)."""

from __future__ import annotations

from collections.abc import Callable
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

    def record_failed_signin(self, user_id: int, now: float) -> int:
        """Count one more failed sign-in; returns the number of consecutive failures."""
        with self.transaction():
            return int(
                self.con.execute(
                    "UPDATE users SET failed_signins=failed_signins+1, last_failed_at=? WHERE id=?"
                    " RETURNING failed_signins",
                    (now, int(user_id)),
                ).fetchone()[0]
            )

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
