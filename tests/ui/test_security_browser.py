"""Attacks on a real ``alwb ui PROJECT`` with accounts (issue 34): raw HTTP and a websocket handshake with forged
``Host`` headers, ``?project=`` in Chromium, hostile upload names through the Start page, and a disabled admin's
open tab clicking inside a fragment. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import socket
import time
import zipfile
from pathlib import Path

import _uiserver
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, make_shapes
from PIL import Image

from alwb.learning import pretrain
from alwb.project import Project
from alwb.team import users

pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]
TIMEOUT_MS = 60_000


def settle(page) -> None:  # noqa: ANN001
    """Wait until Streamlit has finished the current run and drawn it."""
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
            && !document.querySelector('[data-stale="true"]')""",
        timeout=TIMEOUT_MS,
    )


def _uploads(root: Path) -> int:
    folder = root / "uploads"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def _click_until(page, name: str, done, timeout: float = 60.0) -> None:  # noqa: ANN001
    """Click a button until ``done()`` (a click made while a rerun had the page inert is lost; one that landed
    makes ``done`` true, so it is never repeated)."""
    deadline = time.monotonic() + timeout
    while True:
        page.get_by_role("button", name=name).click()
        wait = time.monotonic() + 15
        while time.monotonic() < wait and not done():
            time.sleep(0.2)
        if done():
            return
        assert time.monotonic() < deadline, f"clicking {name!r} never took effect"


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buf, format="PNG")
    return buf.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _outside_uploads(root: Path) -> dict[str, str]:
    """Every file of the folder around the project, except what the project writes for itself and its uploads."""
    skip = ("uploads", "cache", "scores", "models")
    return {
        str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.parent.rglob("*"))
        if p.is_file()
        and not (p.is_relative_to(root) and p.relative_to(root).parts[0] in skip)
        and not p.name.startswith("alwb.sqlite")
        and p.name != "ui_active"  # the server's own "a person is here" mark
        and p.suffix != ".log"
    }


def _request(url: str, path: str, host: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    port = int(url.rsplit(":", 1)[1])
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        con.putrequest("GET", path, skip_host=True)
        con.putheader("Host", host)
        for k, v in (headers or {}).items():
            con.putheader(k, v)
        con.endheaders()
        resp = con.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        con.close()


def _websocket_status(url: str, host: str) -> int:
    """The status line of a websocket handshake to Streamlit's stream naming ``host``."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            (
                "GET /_stcore/stream HTTP/1.1\r\n"
                f"Host: {host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: streamlit\r\n"
                f"Origin: http://{host}\r\n\r\n"
            ).encode()
        )
        line = s.recv(4096).split(b"\r\n", 1)[0].decode()
    return int(line.split()[1])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_shapes(tmp_path / "shapes", 4, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=["circle", "square", "triangle"]) as proj:
        proj.add_images(tmp_path / "shapes")
        users.add_user(proj.store, "adm", "admin password", "admin")
    other = tmp_path / "other"  # another project on the machine, without accounts
    make_shapes(tmp_path / "other-shapes", 2, layout="flat")
    with Project.create(other, classes=["circle", "square", "triangle"]) as proj:
        proj.add_images(tmp_path / "other-shapes")
    return root


def test_attacks_on_a_served_project(project: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with _uiserver.serve(project, tmp_path / "server.log") as url:
        port = url.rsplit(":", 1)[1]
        # DNS rebinding / forged Host: refused on HTTP and on the websocket; the real names are served
        assert _request(url, "/", "evil.example")[0] == 403
        assert _request(url, "/", f"attacker.example:{port}")[0] == 403
        assert _websocket_status(url, f"evil.example:{port}") != 101
        assert _websocket_status(url, f"127.0.0.1:{port}") == 101
        status, headers = _request(url, "/", f"localhost:{port}")
        assert status == 200
        assert headers["x-frame-options"] == "SAMEORIGIN" and "frame-ancestors" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        status, headers = _request(url, "/_stcore/metrics", f"127.0.0.1:{port}")
        assert "openmetrics" not in headers.get("content-type", "")  # not served (the page's index answers)

        before = _outside_uploads(project)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
                page.set_default_timeout(TIMEOUT_MS)
                # ?project= cannot skip the sign-in or open another folder
                for query in ("/start?project=/nonexistent", f"/?project={project.parent / 'other'}", "/export"):
                    page.goto(url + query)
                    page.get_by_role("heading", name="Sign in", exact=True).wait_for()
                    expect(page.get_by_role("heading", name="alwb workbench")).to_have_count(0)
                    expect(page.get_by_role("tab", name="Create a project")).to_have_count(0)
                    assert "project=" not in page.url or "nonexistent" in page.url or "other" in page.url

                page.get_by_role("textbox", name="Name").fill("adm")
                page.get_by_role("textbox", name="Password").fill("admin password")
                page.get_by_role("button", name="Sign in").click()
                page.get_by_role("heading", name="Label", exact=True).wait_for()

                # hostile upload names: each lands in a fresh folder under uploads/, nothing else changes
                page.goto(f"{url}/start")
                page.get_by_role("heading", name="alwb workbench").wait_for()
                expect(page.get_by_role("tab", name="Open a project")).to_have_count(0)
                expect(page.get_by_role("button", name="Close project")).to_have_count(0)
                names = ["...zip", "..zip", ".zip", "x/../../.ssh.zip", "photos.zip", "photos.zip"]
                for i, name in enumerate(names):
                    payload = _zip(
                        {
                            "alwb.sqlite": b"an attacker's store",
                            "authorized_keys": b"ssh-ed25519 AAAA attacker",
                            f"new_{i}.png": _png((40 * i, 10, 200)),
                        }
                    )
                    if not page.get_by_role("button", name="Import").is_visible():
                        page.get_by_text("Add images").click()
                    page.locator("input[type=file]").set_input_files(
                        files=[{"name": name, "mimeType": "application/zip", "buffer": payload}]
                    )
                    page.wait_for_timeout(500)  # the upload's own rerun starts
                    settle(page)
                    _click_until(page, "Import", lambda n=i + 1: _uploads(project) == n)
                    settle(page)
                    expect(page.get_by_text("Import failed")).to_have_count(0)
                assert _outside_uploads(project) == before
                folders = sorted((project / "uploads").iterdir())
                assert len(folders) == len(names), folders
                assert all(f.is_dir() and f.name not in (".", "..") and not f.is_symlink() for f in folders)
                for f in folders:  # each holds exactly the one upload written into it
                    assert (f / "alwb.sqlite").read_bytes() == b"an attacker's store"
                    assert len(list(f.rglob("*.png"))) == 1
                with Project.open(project) as proj:
                    assert [u.name for u in users.list_users(proj.store)] == ["adm"]  # the store is the same one

                # a disabled admin's open tab: a click inside the Settings fragment starts nothing
                page.goto(f"{url}/settings")
                page.get_by_role("heading", name="Settings", exact=True).wait_for()
                page.get_by_text("Pretrained features (not used: these images are small").click()  # 24 px: folded
                page.get_by_role("button", name="Learn features from these images").wait_for()
                with Project.open(project) as proj:
                    users.set_disabled(proj.store, "adm")
                page.get_by_role("button", name="Learn features from these images").click()
                page.get_by_role("heading", name="Sign in", exact=True).wait_for()
                assert pretrain.job_status(project)["state"] == "none"
                # the only account is disabled now: the form stays (fail closed) and says nobody can sign in
                page.get_by_text("Every account of this project is disabled").wait_for()
                page.goto(f"{url}/label")
                page.get_by_role("heading", name="Sign in", exact=True).wait_for()
                page.get_by_role("textbox", name="Name").fill("adm")
                page.get_by_role("textbox", name="Password").fill("admin password")
                page.get_by_role("button", name="Sign in").click()
                page.get_by_text("wrong name or password").wait_for()
                expect(page.get_by_role("heading", name="Label", exact=True)).to_have_count(0)
            except BaseException:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                print(f"screenshot: {tmp_path / 'failure.png'}\n{_uiserver.read(tmp_path / 'server.log')[-3000:]}")
                raise
            finally:
                browser.close()
