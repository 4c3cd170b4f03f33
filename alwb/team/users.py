"""Accounts of a project: roles, argon2 password hashes, sessions that expire, and slowed-down guessing.

Roles: ``annotator`` (Label and their own history), ``reviewer`` (also Review), ``admin`` (also Settings, Export
and users). Passwords are stored as argon2id hashes (argon2-cffi's :class:`~argon2.PasswordHasher`) and rehashed on
sign-in when the parameters change. A session token is 32 random bytes shown once to the browser; the store keeps
only its SHA-256.

Guessing is slowed down by counters of failed sign-ins (:data:`LIMITS`): per name *at* an address (after
:data:`FREE_FAILURES` failures each further attempt waits ``2 ** (failures - FREE_FAILURES)`` s after the last
failure, at most :data:`MAX_DELAY`), per address (password spraying across names) and for everyone together (many
addresses at once, with a short cap). An attempt made sooner is refused without looking at the password. The check and
the count are one step in one store transaction, made *before* the password is verified (the attempt counts as a
failure until it succeeds), so parallel guesses cannot all slip through; a success takes its own count back. Counts
older than :data:`FORGET_AFTER` are forgotten. A name is never throttled on its own, so nobody can lock an account's
owner out from another address; ``alwb users list`` shows the failures counted against each name. Unknown and known
names take the same steps (the same store work and one argon2 verification) and get the same answer.

A project without users needs no sign-in (one person on one machine); see :func:`auth_required`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import AlwbError, ProjectError
from ..store import Store
from ..store.location import store_location

ROLES = ("annotator", "reviewer", "admin")
#: What each role may open in the workbench.
PAGES = {
    "annotator": ("label", "history"),
    "reviewer": ("label", "history", "review", "progress", "map"),
    "admin": ("label", "history", "review", "progress", "map", "settings", "export", "users", "start"),
}
SESSION_SECONDS = 12 * 3600.0
MIN_PASSWORD = 8
FREE_FAILURES = 3
MAX_DELAY = 300.0
#: Failures older than this (seconds since the last one) no longer count.
FORGET_AFTER = 15 * 60.0


@dataclass(frozen=True)
class Limit:
    """A throttle counter: ``free`` failures cost nothing, then each attempt waits ``2 ** (failures - free)`` s after
    the last failure, at most ``cap`` s."""

    free: int
    cap: float

    def wait(self, failures: int, last_failed_at: float | None, now: float) -> float:
        if failures < self.free or last_failed_at is None or now - last_failed_at > FORGET_AFTER:
            return 0.0
        return max(0.0, last_failed_at + min(self.cap, 2.0 ** (failures - self.free)) - now)


#: The counters: a name at one address, one address (any name), everyone; ``name`` only counts (never throttles).
LIMITS = {
    "name@address": Limit(FREE_FAILURES, MAX_DELAY),
    "address": Limit(10, MAX_DELAY),
    "everyone": Limit(100, 10.0),
}

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when a name is unknown, so that a wrong name costs as long as a wrong password (made on
    first use: hashing takes a sixth of a second, which every import would otherwise pay)."""
    return _hasher.hash("not a password of anyone " + secrets.token_hex(8))


class UserError(AlwbError):
    """A refused account operation (unknown name, bad role, short password...)."""


class SignInError(AlwbError):
    """Wrong name or password, or a disabled account (the message does not say which)."""


class SignInThrottled(SignInError):
    """Too many failed sign-ins: try again after :attr:`retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = float(retry_after)
        super().__init__(f"too many failed sign-ins: try again in {int(retry_after) + 1} s")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool
    created_at: float

    def may_open(self, page: str) -> bool:
        """True when this user's role shows ``page`` (see :data:`PAGES`)."""
        return not self.disabled and page in PAGES[self.role]


@dataclass(frozen=True)
class Session:
    token: str
    user: User
    expires_at: float


def _user(row: Any) -> User:
    return User(int(row["id"]), str(row["name"]), str(row["role"]), bool(row["disabled"]), float(row["created_at"]))


def validate_name(name: str) -> str:
    """A user name: 1-64 characters, no spaces or control characters."""
    if not isinstance(name, str) or not name.strip():
        raise UserError("user name is empty")
    name = name.strip()
    if len(name) > 64:
        raise UserError("user name longer than 64 characters")
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in name):
        raise UserError(f"user name {name!r} contains a space or control character")
    return name


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UserError(f"password must have at least {MIN_PASSWORD} characters")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def _get(store: Store, name: str) -> Any:
    row = store.user_row(name)
    if row is None:
        raise UserError(f"no user {name!r}")
    return row


def add_user(store: Store, name: str, password: str, role: str = "annotator", *, now: float | None = None) -> User:
    """Create an account; the name must be new."""
    name, role = validate_name(name), _check_role(role)
    _check_password(password)
    if store.user_row(name) is not None:
        raise UserError(f"user {name!r} already exists")
    try:
        store.insert_user(name, role, _hasher.hash(password), time.time() if now is None else now)
    except store.integrity_errors:
        raise UserError(f"user {name!r} already exists") from None
    return _user(_get(store, name))


def list_users(store: Store) -> list[User]:
    """Every account, by name."""
    return [_user(r) for r in store.user_rows()]


def get_user(store: Store, name: str) -> User:
    return _user(_get(store, name))


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def exposure_error(host: str, *, has_users: bool, no_auth: bool) -> str | None:
    """Why the workbench must not listen on ``host`` (None when it may): a non-local address needs accounts
    (everyone signs in) or ``--no-auth`` given on purpose."""
    if host in LOCAL_HOSTS or has_users or no_auth:
        return None
    return (
        f"refusing to serve on {host} without sign-in: the project has no users, so anyone who can reach that "
        "address could label, export and change settings. Add accounts ('alwb users add PROJECT NAME --role admin') "
        "or pass --no-auth to open it anyway"
    )


@contextmanager
def open_store(root: str | Path) -> Iterator[Store]:
    """The project's store alone, for the sign-in check a page makes every few seconds (lighter than opening the
    :class:`~alwb.project.Project`); :class:`~alwb.errors.ProjectError` when ``root`` holds no project."""
    location = store_location(root)
    if location is None:
        raise ProjectError(f"no alwb project at {root}")
    with Store(location) as store:
        yield store


def project_key(store: Store) -> str:
    """A short name of the project that every web server of it shares (it follows the store, not the folder): the
    sign-in cookie is named after it."""
    ident = json.dumps(store.get_meta("created_at"))
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def active_user_count(store: Store) -> int:
    """Accounts that may sign in (not disabled)."""
    return int(store.active_user_count())


def auth_required(store: Store) -> bool:
    """True once the project has had an account: the workbench asks for a sign-in from then on, even when every
    account is disabled (then nobody can sign in: it fails closed, never open)."""
    return store.user_count() > 0


def set_disabled(store: Store, name: str, disabled: bool = True) -> User:
    """Disable (or enable again) an account; disabling ends its sessions."""
    row = _get(store, name)
    with store.transaction():
        store.update_user(row["id"], disabled=int(disabled))
        if disabled:
            store.delete_sessions(user_id=row["id"])
    return get_user(store, name)


def set_role(store: Store, name: str, role: str) -> User:
    """Give an account another role; its sessions end when the role changes (a demoted admin's open tab must not
    keep an admin's page), in one transaction."""
    role = _check_role(role)
    row = _get(store, name)
    with store.transaction():
        if row["role"] != role:
            store.update_user(row["id"], role=role)
            store.delete_sessions(user_id=row["id"])
    return get_user(store, name)


def set_password(store: Store, name: str, password: str) -> None:
    """Change a password: the failure count resets and every session of the account ends."""
    _check_password(password)
    row = _get(store, name)
    with store.transaction():
        store.update_user(row["id"], password_hash=_hasher.hash(password))
        store.throttle_clear(row["name"])
        store.delete_sessions(user_id=row["id"])


def retry_after(failures: int, last_failed_at: float | None, now: float) -> float:
    """Seconds to wait before the next attempt of a name at one address is looked at (0: go ahead)."""
    return LIMITS["name@address"].wait(failures, last_failed_at, now)


def _throttle_keys(name: str, address: str | None) -> dict[str, tuple[str, str | None]]:
    """Counter kind → (store key, user name the row is about) for one attempt."""
    addr = address or "-"
    return {
        "name@address": (f"na:{json.dumps([name, addr])}", name),
        "address": (f"a:{addr}", None),
        "everyone": ("*", None),
        "name": (f"n:{json.dumps(name)}", name),
    }


def _take_attempt(store: Store, name: str, address: str | None, now: float) -> dict[str, tuple[str, str | None]]:
    """Check every counter and count this attempt as a failure, in one transaction; raises
    :class:`SignInThrottled` (counting nothing) when any counter says wait."""
    keys = _throttle_keys(name, address)
    with store.transaction():
        rows = store.throttle_rows([k for k, _ in keys.values()])
        counts = {
            kind: (0, None) if (r := rows.get(key)) is None or r[1] is None or now - r[1] > FORGET_AFTER else r
            for kind, (key, _) in keys.items()
        }
        wait = max(limit.wait(*counts[kind], now) for kind, limit in LIMITS.items())
        if wait > 0:
            raise SignInThrottled(wait)
        store.throttle_set([(key, who, counts[kind][0] + 1, now) for kind, (key, who) in keys.items()])
    return keys


def _give_back(store: Store, keys: dict[str, tuple[str, str | None]]) -> None:
    """A successful sign-in: its name's counters start again, and its own attempt leaves the others' counts."""
    rows = store.throttle_rows([k for k, _ in keys.values()])
    values = []
    for kind, (key, who) in keys.items():
        failures, last = rows.get(key, (0, None))
        values.append((key, who, 0 if kind in ("name@address", "name") else max(0, failures - 1), last))
    store.throttle_set(values)


def failures_against(store: Store, name: str, *, now: float | None = None) -> int:
    """Failed sign-ins counted against ``name`` from any address in the last :data:`FORGET_AFTER` seconds."""
    now = time.time() if now is None else now
    key = _throttle_keys(name, None)["name"][0]
    failures, last = store.throttle_rows([key]).get(key, (0, None))
    return 0 if last is None or now - last > FORGET_AFTER else failures


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def sign_in(
    store: Store,
    name: str,
    password: str,
    *,
    now: float | None = None,
    ttl: float = SESSION_SECONDS,
    address: str | None = None,
) -> Session:
    """Check a name and password from ``address`` (the client's, when known); return a new session, or raise
    :class:`SignInError` / :class:`SignInThrottled`."""
    now = time.time() if now is None else now
    name = name.strip() if isinstance(name, str) else ""
    keys = _take_attempt(store, name, address, now)  # throttled or counted, before any password is looked at
    row = store.user_row(name) if name else None
    try:
        _hasher.verify(row["password_hash"] if row is not None else _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise SignInError("wrong name or password") from None
    if row is None or row["disabled"]:
        raise SignInError("wrong name or password")
    changes: dict[str, Any] = {}
    if _hasher.check_needs_rehash(row["password_hash"]):
        changes["password_hash"] = _hasher.hash(password)
    token = secrets.token_urlsafe(32)
    with store.transaction():
        _give_back(store, keys)
        if changes:
            store.update_user(row["id"], **changes)
        store.insert_session(_token_hash(token), row["id"], now, now + ttl)
    return Session(token, _user(row), now + ttl)


def session_user(store: Store, token: str | None, *, now: float | None = None) -> User | None:
    """The user of a live session (None for an unknown, expired or disabled one; an expired one is removed)."""
    if not token:
        return None
    now = time.time() if now is None else now
    row = store.session_row(_token_hash(token))
    if row is None:
        return None
    if row["expires_at"] <= now:
        store.delete_sessions(token_sha256=_token_hash(token))
        return None
    if row["disabled"]:
        return None
    return User(int(row["user_id"]), str(row["name"]), str(row["role"]), False, float(row["user_created_at"]))


def session_expires_at(store: Store, token: str | None) -> float | None:
    """When a session ends (a Unix time), or None for an unknown one."""
    row = store.session_row(_token_hash(token)) if token else None
    return None if row is None else float(row["expires_at"])


def sign_out(store: Store, token: str) -> None:
    """End a session."""
    store.delete_sessions(token_sha256=_token_hash(token))
