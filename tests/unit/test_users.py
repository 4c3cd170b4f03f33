"""Accounts on both store backends: argon2 hashes, roles, sessions that expire, slowed-down failed sign-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from alwb.store import Store
from alwb.team import users
from alwb.team.users import SignInError, SignInThrottled, UserError

T0 = 1_800_000_000.0


CHEAP = users.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash with small argon2 parameters (the defaults cost ~0.1 s per hash on two cores)."""
    monkeypatch.setattr(users, "_hasher", CHEAP)


@pytest.fixture
def store(store_location: str | Path) -> Store:
    s = Store(store_location, create=True)
    yield s
    s.close()


def test_add_list_and_the_stored_hash(store: Store) -> None:
    assert not users.auth_required(store)
    ann = users.add_user(store, "ann", "correct horse", "annotator", now=T0)
    users.add_user(store, "rev", "battery staple", "reviewer")
    assert (ann.name, ann.role, ann.disabled, ann.created_at) == ("ann", "annotator", False, T0)
    assert [u.name for u in users.list_users(store)] == ["ann", "rev"]
    assert users.auth_required(store)
    stored = store.user_row("ann")["password_hash"]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert CHEAP.verify(stored, "correct horse")


def test_a_hash_with_old_parameters_is_renewed_at_sign_in(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    users.add_user(store, "ann", "correct horse")
    old = store.user_row("ann")["password_hash"]
    monkeypatch.setattr(users, "_hasher", users.PasswordHasher())  # the product's parameters
    users.sign_in(store, "ann", "correct horse")
    new = store.user_row("ann")["password_hash"]
    assert new != old and not users.PasswordHasher().check_needs_rehash(new)
    assert users.sign_in(store, "ann", "correct horse").user.name == "ann"


@pytest.mark.parametrize(
    ("name", "password", "role", "match"),
    [
        ("", "longenough", "annotator", "empty"),
        ("a b", "longenough", "annotator", "space"),
        ("ann", "short", "annotator", "at least 8"),
        ("ann", "longenough", "boss", "role must be"),
    ],
)
def test_add_user_refuses(store: Store, name: str, password: str, role: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        users.add_user(store, name, password, role)
    assert users.list_users(store) == []


def test_a_name_is_taken_once(store: Store) -> None:
    users.add_user(store, "ann", "correct horse")
    with pytest.raises(UserError, match="already exists"):
        users.add_user(store, "ann", "another password")


def test_sign_in_session_and_expiry(store: Store) -> None:
    users.add_user(store, "ann", "correct horse", "reviewer")
    s = users.sign_in(store, "ann", "correct horse", now=T0, ttl=3600)
    assert s.user.name == "ann" and s.expires_at == T0 + 3600
    assert s.token not in str(store.session_row(users._token_hash(s.token)).keys())  # only its hash is kept
    assert store.con.execute("SELECT COUNT(*) FROM sessions WHERE token_sha256=?", (s.token,)).fetchone()[0] == 0
    assert users.session_user(store, s.token, now=T0 + 3599).role == "reviewer"
    assert users.session_user(store, s.token, now=T0 + 3600) is None  # expired, and removed
    assert users.session_user(store, s.token, now=T0) is None
    assert users.session_user(store, "made-up token") is None
    assert users.session_user(store, None) is None
    s2 = users.sign_in(store, "ann", "correct horse", now=T0)
    users.sign_out(store, s2.token)
    assert users.session_user(store, s2.token, now=T0) is None


def test_wrong_password_unknown_name_and_disabled_look_the_same(store: Store) -> None:
    users.add_user(store, "ann", "correct horse")
    users.add_user(store, "bob", "bobs password")
    live = users.sign_in(store, "bob", "bobs password", now=T0)
    users.set_disabled(store, "bob")
    assert users.session_user(store, live.token, now=T0) is None  # disabling ends sessions
    messages = set()
    for name, pw in [("ann", "wrong pass"), ("nobody", "correct horse"), ("bob", "bobs password")]:
        with pytest.raises(SignInError) as info:
            users.sign_in(store, name, pw, now=T0)
        messages.add(str(info.value))
    assert messages == {"wrong name or password"}
    assert not any(u.name == "bob" for u in users.list_users(store) if not u.disabled)
    users.set_disabled(store, "bob", False)
    assert users.sign_in(store, "bob", "bobs password", now=T0).user.name == "bob"


def test_repeated_failures_are_slowed_down_and_reset_by_success(store: Store) -> None:
    users.add_user(store, "ann", "correct horse")
    now = T0
    for _ in range(users.FREE_FAILURES):  # the first few failures cost nothing more than the hash
        with pytest.raises(SignInError) as info:
            users.sign_in(store, "ann", "guess", now=now)
        assert not isinstance(info.value, SignInThrottled)
    # from now on every attempt waits 2**(failures - FREE_FAILURES) s after the last failure
    with pytest.raises(SignInThrottled) as info:
        users.sign_in(store, "ann", "correct horse", now=now + 0.25)  # even the right password is not looked at
    assert info.value.retry_after == pytest.approx(0.75)
    with pytest.raises(SignInError) as info:
        users.sign_in(store, "ann", "guess", now=now + 1.5)  # the wait is over: a wrong guess doubles it
    assert not isinstance(info.value, SignInThrottled)
    with pytest.raises(SignInThrottled) as info:
        users.sign_in(store, "ann", "correct horse", now=now + 2.5)
    assert info.value.retry_after == pytest.approx(1.0)
    assert users.failures_against(store, "ann", now=now + 2.5) == users.FREE_FAILURES + 1  # refused ones not counted
    s = users.sign_in(store, "ann", "correct horse", now=now + 3.5)
    assert s.user.name == "ann" and users.failures_against(store, "ann", now=now + 3.5) == 0
    assert users.retry_after(100, T0, T0) == users.MAX_DELAY


def test_passwd_resets_failures_and_ends_sessions(store: Store) -> None:
    users.add_user(store, "ann", "correct horse")
    s = users.sign_in(store, "ann", "correct horse", now=T0)
    for _ in range(users.FREE_FAILURES):
        with pytest.raises(SignInError):
            users.sign_in(store, "ann", "guess", now=T0)
    with pytest.raises(SignInThrottled):
        users.sign_in(store, "ann", "correct horse", now=T0)
    users.set_password(store, "ann", "new password!")
    assert users.session_user(store, s.token, now=T0) is None
    assert users.sign_in(store, "ann", "new password!", now=T0).user.name == "ann"
    with pytest.raises(SignInError):
        users.sign_in(store, "ann", "correct horse", now=T0)
    with pytest.raises(UserError, match="no user"):
        users.set_password(store, "nobody", "whatever123")


def test_roles_open_pages() -> None:
    ann = users.User(1, "ann", "annotator", False, T0)
    rev = users.User(2, "rev", "reviewer", False, T0)
    adm = users.User(3, "adm", "admin", False, T0)
    assert ann.may_open("label") and not ann.may_open("review") and not ann.may_open("settings")
    assert rev.may_open("review") and not rev.may_open("export")
    assert adm.may_open("users") and adm.may_open("export")
    assert not users.User(4, "x", "admin", True, T0).may_open("label")
