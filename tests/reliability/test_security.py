"""The workbench as an attacker on the network sees it (issue 34), each hole written as the attack.

Library and AppTest tests here; the same attacks against a real ``alwb ui`` (raw HTTP, a websocket handshake and
Chromium) are in ``tests/ui/test_security_browser.py``. The threat model is in docs/reliability.md ("Security").
"""

from __future__ import annotations

import hashlib
import io
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import make_shapes
from PIL import Image

from alwb.cli import main
from alwb.errors import AlwbError, LabelError
from alwb.intake.ziputil import extract_upload
from alwb.io.export import export_project
from alwb.project import Project
from alwb.redaction import redact, without_password
from alwb.store import Store, validate_class_name
from alwb.team import users

CHEAP = users.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users, "_hasher", CHEAP)
    users._dummy_hash.cache_clear()
    yield
    users._dummy_hash.cache_clear()


def _project(tmp_path: Path, *, accounts: bool = True, url: str | None = None, n: int = 4) -> Path:
    make_shapes(tmp_path / "shapes", n, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=["circle", "square", "triangle"], store_url=url) as proj:
        proj.add_images(tmp_path / "shapes")
        if accounts:
            users.add_user(proj.store, "adm", "admin password", "admin")
            users.add_user(proj.store, "ann", "annotator pw", "annotator")
    return root


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), color).save(buf, format="PNG")
    return buf.getvalue()


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the SHA-256 of its content."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------- uploads
def test_every_upload_lands_in_a_fresh_folder_and_replaces_nothing(tmp_path: Path) -> None:
    """A zip that would have landed in the project folder (its name was the folder's name: ``...zip`` gave ``..``)
    and one uploaded twice under the same name: each goes to a new folder under uploads/, nothing else changes."""
    root = _project(tmp_path, accounts=False)
    before = _tree(root)
    payload = _zip({"alwb.sqlite": b"an attacker's store", "photos/a.png": _png((255, 0, 0))})
    first = extract_upload(io.BytesIO(payload), root)
    second = extract_upload(io.BytesIO(_zip({"photos/a.png": _png((0, 0, 255))})), root)
    folders = sorted((root / "uploads").iterdir())
    assert len(folders) == 2 and all(f.parent == root / "uploads" for f in folders)
    assert {first.relative_to(root).parts[:2], second.relative_to(root).parts[:2]} == {
        ("uploads", folders[0].name),
        ("uploads", folders[1].name),
    }
    assert all(f.name not in (".", "..", "") and stat.S_IMODE(f.stat().st_mode) == 0o700 for f in folders)
    after = _tree(root)
    assert {k: v for k, v in after.items() if not k.startswith("uploads/")} == before  # the store untouched
    first_png = next(p for p in (root / "uploads").rglob("a.png") if p.is_relative_to(folders[0]))
    assert first_png.read_bytes() in (_png((255, 0, 0)), _png((0, 0, 255)))
    assert len({(p.read_bytes()) for p in (root / "uploads").rglob("a.png")}) == 2  # the first was not replaced


@pytest.mark.parametrize("entry", ["../escape.png", "/etc/escape.png", "C:/escape.png", "a/../../escape.png"])
def test_a_hostile_zip_writes_nothing(tmp_path: Path, entry: str) -> None:
    root = _project(tmp_path, accounts=False)
    before = _tree(tmp_path)
    with pytest.raises(AlwbError, match="unsafe zip entry"):
        extract_upload(io.BytesIO(_zip({"ok.png": _png((1, 2, 3)), entry: _png((4, 5, 6))})), root)
    assert list((root / "uploads").iterdir()) == []  # the fresh folder was removed again
    assert _tree(tmp_path) == before


def test_an_uploads_link_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path, accounts=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "uploads").symlink_to(elsewhere)
    with pytest.raises(AlwbError, match="not a plain folder"):
        extract_upload(io.BytesIO(_zip({"a.png": _png((1, 1, 1))})), root)
    assert list(elsewhere.iterdir()) == []


# ------------------------------------------------------------------------------ a replaced image file
def test_a_replaced_image_is_caught_at_export_and_in_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An image labeled, then its file replaced (a zip uploaded again under the same name did that before uploads
    got fresh folders; anyone who can write the folder still can): the export leaves it out with its path and
    never writes the new content under the old label; a round rejects it."""
    root = _project(tmp_path, accounts=False)
    with Project.open(root) as proj:
        rows = proj.store.items()
        answers = [(int(r["id"]), Path(r["path"]).name.split("_")[0]) for r in rows]
        proj.label(answers, annotator="me")
        victim = proj.store.image_root().locate(rows[0]["path"])
    victim.write_bytes(_png((9, 9, 9)))
    with Project.open(root) as proj:
        rep = export_project(proj, tmp_path / "out")
    assert [Path(p) for p, _ in rep.changed] == [victim]
    assert "the file changed since it was imported" in rep.changed[0][1]
    exported = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "out" / "dataset").rglob("*.png")}
    assert hashlib.sha256(_png((9, 9, 9))).hexdigest() not in exported
    assert rep.n_images == len(answers) - 1 and sum(rep.counts.values()) == len(answers) - 1
    assert main(["export", str(root), str(tmp_path / "out2")]) == 0
    assert f"not exported: {victim}: the file changed since it was imported" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- secrets
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:s3cr3t-pw@127.0.0.1:1/db",
        "postgresql://alice@127.0.0.1:1/db?password=s3cr3t-pw",
        "postgresql://alice@127.0.0.1:1/db?sslmode=disable&password=s3cr3t-pw&application_name=x",
        "postgresql://alice:s3cr3t-pw@127.0.0.1:1,127.0.0.1:2/db",
        "postgres://alice:s3cr3t@pw@127.0.0.1:1/db",
    ],
)
def test_no_store_address_form_shows_its_password(tmp_path: Path, url: str, capsys: pytest.CaptureFixture) -> None:
    """``alwb init --store`` on a server that is not there: one line, no traceback, never the password, whatever
    form the address takes (the multi-host form crashed with an internal error before)."""
    assert "s3cr3t" not in redact(url) and "s3cr3t" not in without_password(url)
    make_shapes(tmp_path / "img", 1, layout="flat")
    assert main(["init", str(tmp_path / "p"), "--images", str(tmp_path / "img"), "--store", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alwb: error: cannot reach the PostgreSQL store") and err.count("\n") == 1, err
    assert "s3cr3t" not in err and "internal error" not in err


def test_pgpassword_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "env-secret-9")
    assert redact("connection to postgresql://a@h/db failed with password env-secret-9") == (
        "connection to postgresql://a@h/db failed with password ***"
    )


def test_store_json_never_holds_the_password(tmp_path: Path, postgres_cluster, capsys) -> None:  # noqa: ANN001
    """A multi-host address works, and its passwords are written and printed nowhere. The throw-away cluster
    trusts every local connection, so a password in the address is accepted and ignored."""
    url = postgres_cluster.new_database("secret")
    head, tail = url.split("://", 1)
    user, rest = tail.split("@", 1)
    hostport, db = rest.split("/", 1)
    # two hosts (libpq tries them in order; the second is not there), a password in the user part and one more
    with_pw = f"{head}://{user}:s3cr3t-pw@{hostport},127.0.0.1:1/{db}?password=s3cr3t-pw2"
    make_shapes(tmp_path / "img", 1, layout="flat")
    assert main(["init", str(tmp_path / "p"), "--images", str(tmp_path / "img"), "--store", with_pw]) == 0
    assert main(["status", str(tmp_path / "p")]) == 0
    out = capsys.readouterr()
    pointer = (tmp_path / "p" / "store.json").read_text()
    assert "s3cr3t" not in pointer and "s3cr3t" not in out.out + out.err
    assert stat.S_IMODE((tmp_path / "p" / "store.json").stat().st_mode) == 0o600


def test_the_sqlite_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    root = _project(tmp_path)
    for f in root.glob("alwb.sqlite*"):  # the -wal and -shm files follow the store's permissions
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f


def test_a_world_readable_store_made_before_is_made_owner_only_when_opened(tmp_path: Path) -> None:
    """A store created by an older alwb (umask 022: readable by everyone on the machine) holds password hashes too:
    opening it takes the group and other permissions off the store and its -wal and -shm files."""
    root = _project(tmp_path)
    files = sorted(root.glob("alwb.sqlite*"))
    assert files
    for f in files:
        f.chmod(0o644)
    with Project.open(root) as proj:
        assert proj.store.item_count() > 0
        for f in root.glob("alwb.sqlite*"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


# -------------------------------------------------------------------------------- class names
@pytest.mark.parametrize("name", ["ants\u202eexe", "zero\u200bwidth", "bell\x07", "left\u2066to\u2069"])
def test_class_names_refuse_control_and_format_characters(tmp_path: Path, name: str) -> None:
    with pytest.raises(LabelError, match="invisible control or format characters"):
        validate_class_name(name)
    with Store(tmp_path / "s.sqlite", create=True) as store, pytest.raises(LabelError):
        store.add_classes(["fine", name])
    assert validate_class_name("Ameisen – große") == "Ameisen – große"  # ordinary text, accents and dashes pass


# ------------------------------------------------------------------------------- sign-in throttle
def _guess_in_parallel(location: str | Path, attempts: list[tuple[str, str]], address: str) -> list[str]:
    """Each (name, password) in its own thread with its own store connection, all released at once."""
    barrier = threading.Barrier(len(attempts))
    results: list[str] = [""] * len(attempts)

    def attempt(i: int, name: str, password: str) -> None:
        with Store(location) as store:
            barrier.wait()
            try:
                users.sign_in(store, name, password, address=address)
                results[i] = "signed in"
            except users.SignInThrottled:
                results[i] = "throttled"
            except users.SignInError:
                results[i] = "wrong"

    threads = [threading.Thread(target=attempt, args=(i, *a)) for i, a in enumerate(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_parallel_guesses_are_throttled(store_location, cheap_hashes) -> None:  # noqa: ANN001
    """20 guesses at once (the right one last in line): no more than FREE_FAILURES passwords are looked at; the
    check and the count are one step, so the guesses cannot all read "no failures yet" (before, all 20 were
    checked and the right one among 19 wrong ones signed in)."""
    with Store(store_location, create=True) as store:
        users.add_user(store, "ann", "the right one")
    attempts = [("ann", f"wrong {i}") for i in range(19)] + [("ann", "the right one")]
    results = _guess_in_parallel(store_location, attempts, "203.0.113.7")
    # at most FREE_FAILURES wrong passwords are looked at; the right one only signs in when it happened to be among
    # the first attempts taken (a success starts the count again, as for the owner)
    ok = results.count("signed in")
    assert results.count("wrong") <= users.FREE_FAILURES * (1 + ok), results
    assert results.count("throttled") >= len(attempts) - users.FREE_FAILURES * (1 + ok) - ok, results
    with Store(store_location) as store:
        assert users.failures_against(store, "ann") <= results.count("wrong")


def test_unknown_and_known_names_answer_alike(tmp_path: Path) -> None:
    """The same answer, the same throttling and the same time for a name that exists and one that does not
    (with the real argon2 parameters: the hash dominates both)."""
    with Store(tmp_path / "s.sqlite", create=True) as store:
        users.add_user(store, "ann", "the right one")
        answers = {}
        for name in ("ann", "nobody"):
            seen = []
            for i in range(users.FREE_FAILURES + 1):
                try:
                    users.sign_in(store, name, "guess", now=1000.0 + i * 0.01, address=f"198.51.100.{len(name)}")
                except users.SignInError as exc:
                    seen.append((type(exc).__name__, str(exc).split(":")[0]))
            answers[name] = seen
        assert answers["ann"] == answers["nobody"]
        assert answers["ann"][-1][0] == "SignInThrottled"
        times: dict[str, list[float]] = {"ann": [], "nobody": []}
        for i in range(8):
            for name in ("ann", "nobody") if i % 2 else ("nobody", "ann"):
                t0 = time.perf_counter()
                with pytest.raises(users.SignInError):
                    users.sign_in(store, name, "guess", address=f"192.0.2.{i}")
                times[name].append(time.perf_counter() - t0)
    known, unknown = sorted(times["ann"])[4], sorted(times["nobody"])[4]
    assert 0.6 < known / unknown < 1.6, times


def test_a_stranger_cannot_lock_the_owner_out(tmp_path: Path, cheap_hashes) -> None:  # noqa: ANN001
    """Failures from one address throttle that address, not the account: the owner signs in from theirs. Before,
    one wrong guess every 5 minutes from anywhere kept the owner out."""
    with Store(tmp_path / "s.sqlite", create=True) as store:
        users.add_user(store, "ann", "the right one")
        t = 1000.0
        for i in range(40):  # a patient attacker: always past the wait they are told
            try:
                users.sign_in(store, "ann", f"guess {i}", now=t, address="203.0.113.66")
            except users.SignInThrottled as exc:
                t += exc.retry_after + 0.01
            except users.SignInError:
                t += 0.01
        assert users.sign_in(store, "ann", "the right one", now=t, address="198.51.100.5").user.name == "ann"
        assert users.failures_against(store, "ann", now=t) == 0  # reset by the owner's success


def test_password_spraying_from_one_address_is_slowed(tmp_path: Path, cheap_hashes) -> None:  # noqa: ANN001
    """One wrong password for many names from one address: the address is throttled after its free failures,
    whatever the names; another address is not."""
    limit = users.LIMITS["address"].free
    with Store(tmp_path / "s.sqlite", create=True) as store:
        for i in range(limit):
            with pytest.raises(users.SignInError) as info:
                users.sign_in(store, f"user{i}", "Summer2026!", now=2000.0, address="203.0.113.9")
            assert not isinstance(info.value, users.SignInThrottled)
        with pytest.raises(users.SignInThrottled):
            users.sign_in(store, "someone-else", "Summer2026!", now=2000.0, address="203.0.113.9")
        with pytest.raises(users.SignInError) as info:
            users.sign_in(store, "someone-else", "Summer2026!", now=2000.0, address="198.51.100.1")
        assert not isinstance(info.value, users.SignInThrottled)
        # counts are forgotten after a quiet while
        later = 2000.0 + users.FORGET_AFTER + 1
        with pytest.raises(users.SignInError) as info:
            users.sign_in(store, "user0", "Summer2026!", now=later, address="203.0.113.9")
        assert not isinstance(info.value, users.SignInThrottled)


def test_users_list_tells_admins_about_failed_sign_ins(tmp_path: Path, capsys, cheap_hashes) -> None:  # noqa: ANN001
    root = _project(tmp_path)
    with Project.open(root) as proj:
        for i in range(2):
            with pytest.raises(users.SignInError):
                users.sign_in(proj.store, "ann", f"guess {i}", address=f"203.0.113.{i}")
    assert main(["users", "list", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ann\tannotator\t2 failed sign-in(s) in the last 15 min" in out


# --------------------------------------------------------------------- the workbench (AppTest, served mode)
st = pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, cheap_hashes):  # noqa: ANN001, ANN201
    """AppTest as ``alwb ui PROJECT`` runs the app: the project in $ALWB_PROJECT, the address in $ALWB_UI_HOST."""
    st.cache_data.clear()
    st.cache_resource.clear()

    def start(root: Path, *, host: str = "127.0.0.1", import_dirs: str = "") -> AppTest:
        monkeypatch.setenv("ALWB_PROJECT", str(root))
        monkeypatch.setenv("ALWB_UI_HOST", host)
        monkeypatch.setenv("ALWB_IMPORT_DIRS", import_dirs)
        return AppTest.from_file(str(APP), default_timeout=90)

    yield start
    st.cache_data.clear()
    st.cache_resource.clear()


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def _sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="signin_name").input(name)
    at.text_input(key="signin_password").input(password)
    return _ok(at.button[0].click().run())


@pytest.mark.parametrize("param", ["/nonexistent", "OTHER", ""])
def test_the_url_cannot_choose_the_project_or_skip_sign_in(tmp_path: Path, served, param: str) -> None:  # noqa: ANN001
    """``?project=`` naming a missing folder or another project on the machine (one without accounts) once skipped
    the sign-in gate; the served project is fixed now and the gate runs first."""
    root = _project(tmp_path)
    other = _project(tmp_path / "other", accounts=False)
    at = served(root)
    if param:
        at.query_params["project"] = str(other) if param == "OTHER" else param
    _ok(at.run())
    assert _titles(at) == ["Sign in"]
    assert not at.tabs and not [b for b in at.button if b.label in ("Open", "Create project", "Close project")]
    _sign_in(at, "ann", "annotator pw")
    assert _titles(at) == ["Label"]
    assert not at.query_params.get("project")  # the path is never put into the URL


def test_a_served_project_that_vanished_shows_no_page(tmp_path: Path, served) -> None:  # noqa: ANN001
    root = _project(tmp_path)
    (root / "alwb.sqlite").rename(tmp_path / "moved.sqlite")
    at = served(root)
    _ok(at.run())
    assert _titles(at) == [] and any("cannot be opened" in e.value for e in at.error)
    assert str(root) not in " ".join(e.value for e in at.error)


def test_disabling_every_account_keeps_the_sign_in(tmp_path: Path, served) -> None:  # noqa: ANN001
    """Fail closed: with every account disabled (what an admin does during an incident) nobody gets a page."""
    root = _project(tmp_path)
    at = served(root, host="0.0.0.0")
    _ok(at.run())
    _sign_in(at, "adm", "admin password")
    assert _titles(at) == ["Label"]
    with Project.open(root) as proj:
        users.set_disabled(proj.store, "adm")
        users.set_disabled(proj.store, "ann")
        assert users.auth_required(proj.store)
    _ok(at.run())
    assert _titles(at) == ["Sign in"]
    assert any("Every account of this project is disabled" in w.value for w in at.warning)
    _sign_in(at, "adm", "admin password")
    assert _titles(at) == ["Sign in"]
    from alwb.uilaunch import check_exposure

    check_exposure(root, "0.0.0.0")  # sign-in is required, so serving it is not refused either


def test_a_served_project_imports_by_path_only_from_its_import_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Start page of a served project (an admin's page): no free server paths. Images by path only from the
    folders the server was given (``alwb ui --import-dir``), else uploads only; free paths are for one person on
    this machine alone (no project fixed by the server, loopback)."""
    from ui import state
    from ui.views.start import _server_path_allowed

    secret, allowed = tmp_path / "secret-photos", tmp_path / "allowed"
    secret.mkdir()
    (allowed / "sub").mkdir(parents=True)
    monkeypatch.setenv("ALWB_PROJECT", str(tmp_path / "proj"))
    monkeypatch.setenv("ALWB_UI_HOST", "127.0.0.1")
    monkeypatch.setenv("ALWB_IMPORT_DIRS", str(allowed))
    assert not state.local_mode() and state.import_dirs() == [allowed.resolve()]
    assert "outside" in (_server_path_allowed(secret) or "")
    assert "outside" in (_server_path_allowed(allowed / "sub" / ".." / ".." / "secret-photos") or "")
    assert _server_path_allowed(allowed / "sub") is None
    monkeypatch.setenv("ALWB_IMPORT_DIRS", "")
    assert "uploads only" in (_server_path_allowed(allowed) or "")
    monkeypatch.setenv("ALWB_PROJECT", "")
    assert state.local_mode() and _server_path_allowed(secret) is None
    monkeypatch.setenv("ALWB_UI_HOST", "0.0.0.0")  # alwb ui --no-auth --host 0.0.0.0 without a project
    assert not state.local_mode() and state.project_root() is None


def test_ui_process_prints_no_password(tmp_path: Path) -> None:
    """``python -m alwb`` in a child process with a bad store pointer holding a password: the message masks it."""
    root = tmp_path / "p"
    root.mkdir()
    (root / "store.json").write_text('{"url": "postgresql://u:s3cr3t-pw@127.0.0.1:1/db?password=s3cr3t-pw"}')
    out = subprocess.run(
        [sys.executable, "-m", "alwb", "status", str(root)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "s3cr3t" not in out.stdout + out.stderr, out.stderr
