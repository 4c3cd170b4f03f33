"""``alwb users add|list|passwd|role|disable|enable`` on a project (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from alwb.cli import ROLES, main
from alwb.project import Project
from alwb.team import users


@pytest.fixture
def project(tmp_path: Path, store_location: str | Path) -> Path:
    root = tmp_path / "proj"
    url = store_location if isinstance(store_location, str) else None
    Project.create(root, classes=["a", "b"], store_url=url).close()
    return root


def test_users_commands(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert ROLES == users.ROLES
    assert main(["users", "list", str(project)]) == 0
    assert "no users" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    assert main(["users", "add", str(project), "ann", "--role", "reviewer", "--password-stdin"]) == 0
    assert capsys.readouterr().out.strip() == "added reviewer ann"
    # from the terminal: asked twice
    answers = iter(["battery staple", "battery staple", "typo one", "typo two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["users", "add", str(project), "bob"]) == 0
    assert main(["users", "add", str(project), "cid"]) == 2
    assert "differ" in capsys.readouterr().err
    assert main(["users", "list", str(project), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [
        {"name": "ann", "role": "reviewer", "disabled": False, "failed_signins": 0},
        {"name": "bob", "role": "annotator", "disabled": False, "failed_signins": 0},
    ]
    assert main(["users", "disable", str(project), "bob"]) == 0
    assert main(["users", "list", str(project)]) == 0
    assert "bob\tannotator\tdisabled" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("new password\n"))
    assert main(["users", "passwd", str(project), "ann", "--password-stdin"]) == 0
    assert main(["users", "passwd", str(project), "nobody", "--password-stdin"]) == 2
    assert main(["users", "add", str(project), "ann", "--password-stdin"]) == 2  # taken (stdin is empty: short)
    with Project.open(project) as proj:
        assert users.sign_in(proj.store, "ann", "new password").user.role == "reviewer"
        with pytest.raises(users.SignInError):
            users.sign_in(proj.store, "bob", "battery staple")
    assert main(["users", "enable", str(project), "bob"]) == 0
    with Project.open(project) as proj:
        assert users.sign_in(proj.store, "bob", "battery staple").user.name == "bob"


def test_users_role_changes_the_role_and_ends_the_sessions(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An admin demoted during the day: the new role holds at once (the open tab's session ends); an unknown name or
    role is refused with one line and changes nothing; the same role again keeps the sessions."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    assert main(["users", "add", str(project), "ann", "--role", "admin", "--password-stdin"]) == 0
    with Project.open(project) as proj:
        token = users.sign_in(proj.store, "ann", "correct horse").token
    capsys.readouterr()
    assert main(["users", "role", str(project), "ann", "annotator"]) == 0
    assert capsys.readouterr().out.strip() == "ann: annotator; their sessions ended"
    with Project.open(project) as proj:
        assert users.session_user(proj.store, token) is None
        assert users.get_user(proj.store, "ann").role == "annotator"
        token = users.sign_in(proj.store, "ann", "correct horse").token
    assert main(["users", "role", str(project), "ann", "annotator"]) == 0
    assert capsys.readouterr().out.strip() == "ann: annotator already"
    with pytest.raises(SystemExit):
        main(["users", "role", str(project), "ann", "owner"])  # argparse: not one of the roles
    assert main(["users", "role", str(project), "nobody", "admin"]) == 2
    assert "nobody" in capsys.readouterr().err
    with Project.open(project) as proj:
        assert users.session_user(proj.store, token).role == "annotator"


def test_password_stdin_from_a_script(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    Project.create(root).close()
    res = subprocess.run(
        [sys.executable, "-m", "alwb", "users", "add", str(root), "ann", "--role", "admin", "--password-stdin"],
        input="from a script 1\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    with Project.open(root) as proj:
        assert users.sign_in(proj.store, "ann", "from a script 1").user.role == "admin"
