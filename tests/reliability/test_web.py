"""The workbench server: local-only by default, XSRF protection on, and always stopped by the test."""

from __future__ import annotations

import contextlib
import inspect
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from reliability_figures import report_figures

from alwb.cli import build_parser
from alwb.project import Project
from alwb.uilaunch import launch, spawn_ui, streamlit_command

STARTUP_S = 60.0


def _option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_command_line_is_local_and_xsrf_protected() -> None:
    host_param = inspect.signature(streamlit_command).parameters["host"]
    assert host_param.default in (inspect.Parameter.empty, "127.0.0.1")  # no way to open it up by omission
    assert inspect.signature(launch).parameters["host"].default == "127.0.0.1"
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    cmd = streamlit_command(None, port=8765, host="127.0.0.1")
    assert _option(cmd, "--server.address") == "127.0.0.1"
    assert _option(cmd, "--server.enableXsrfProtection") == "true"
    assert _option(cmd, "--server.headless") == "true"
    assert _option(cmd, "--browser.gatherUsageStats") == "false"
    assert "--server.enableCORS" not in cmd or _option(cmd, "--server.enableCORS") == "true"


def test_ui_help_documents_host() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "alwb", "ui", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "--host" in out and "127.0.0.1" in out


def _listeners(port: int) -> list[tuple[str, str]]:
    """(table, local address hex) of every LISTEN socket on ``port`` in /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if int(hexport, 16) == port and state == "0A":  # 0A = TCP_LISTEN
                    found.append((table.rsplit("/", 1)[1], addr))
    return found


def _non_loopback_ipv4() -> list[str]:
    """This machine's own IPv4 addresses that are not loopback (from the routing table; no packet is sent)."""
    addrs: set[str] = set()
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))  # UDP connect only picks a source address
        addrs.add(s.getsockname()[0])
    with contextlib.suppress(OSError):
        addrs.update(socket.gethostbyname_ex(socket.gethostname())[2])
    return sorted(a for a in addrs if not a.startswith("127.") and a != "0.0.0.0")


def _get(
    url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy: straight to 127.0.0.1
    try:
        with opener.open(req, timeout=5) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.fixture
def server(tmp_path: Path):  # noqa: ANN201
    """``python -m alwb ui PROJECT --port PORT`` (no ``--host``: the default), in its own process group; stopped
    whatever happens (:func:`alwb.uilaunch.spawn_ui`)."""
    with Project.create(tmp_path / "proj", classes=["a", "b"]):
        pass
    ui = spawn_ui(
        tmp_path / "proj",
        tmp_path / "server.log",
        host=None,
        env={"STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"},
        cwd=tmp_path,
    )
    try:
        ui.wait_ready(STARTUP_S)
        yield ui.port, ui.proc, ui.seconds
    finally:
        ui.stop()
        assert not _listeners(ui.port), "the server still listens after being stopped"


def test_server_listens_on_loopback_only_with_xsrf(server, tmp_path: Path) -> None:
    port, proc, startup = server
    listeners = _listeners(port)
    assert listeners == [("tcp", "0100007F")], listeners  # 127.0.0.1 only: no 0.0.0.0, no IPv6 any-address
    others = _non_loopback_ipv4()
    for addr in others:
        with pytest.raises(OSError), socket.create_connection((addr, port), timeout=2):
            pass
    # XSRF protection: the health endpoint hands out the token cookie, and an upload without the token is refused
    status, headers, body = _get(f"http://127.0.0.1:{port}/_stcore/health")
    assert status == 200 and body.strip() == b"ok"
    assert "_streamlit_xsrf=" in headers.get("set-cookie", "")
    status_put, _, _ = _get(
        f"http://127.0.0.1:{port}/_stcore/upload_file/some-session/some-file", method="PUT", data=b"x"
    )
    assert status_put == 403, status_put
    # the same request with the token is let through the XSRF check (and fails later: the session is unknown)
    token = headers["set-cookie"].split("_streamlit_xsrf=", 1)[1].split(";", 1)[0]
    status_tok, _, _ = _get(
        f"http://127.0.0.1:{port}/_stcore/upload_file/some-session/some-file",
        method="PUT",
        data=b"x",
        headers={"Cookie": f"_streamlit_xsrf={token}", "X-Xsrftoken": token},
    )
    assert status_tok != 403, status_tok
    # the running server is the Streamlit process itself (alwb ui replaced itself with it; ui.server runs
    # Streamlit's own command line after importing the pages)
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"ui.server" in cmdline and b"run" in cmdline and b"--server.enableXsrfProtection" in cmdline
    assert cmdline[cmdline.index(b"--server.enableXsrfProtection") + 1] == b"true"
    assert cmdline[cmdline.index(b"--server.address") + 1] == b"127.0.0.1"
    report_figures(
        tmp_path,
        "web",
        {
            "port": port,
            "listeners": listeners,
            "non_loopback_addresses_tried": others,
            "upload_without_xsrf_status": status_put,
            "upload_with_xsrf_status": status_tok,
            "startup_seconds": round(startup, 2),
        },
    )
