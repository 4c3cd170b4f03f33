"""``alwb ui`` starts warm: the address is printed once the server answers, with the pages' modules (PyTorch among
them) already imported in the server process, so the first page does not wait for them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, make_shapes

from alwb.uilaunch import streamlit_command

pytest.importorskip("streamlit")


def test_the_server_command_warms_up_through_ui_server() -> None:
    from ui import server

    cmd = streamlit_command(None, port=8765, host="127.0.0.1")
    assert cmd[1:5] == ["-m", "ui.server", "run", cmd[4]] and cmd[4].endswith(os.path.join("ui", "app.py"))
    assert "alwb.project" in server.WARM_MODULES and "ui.views.label" in server.WARM_MODULES
    assert server._option(["run", "a.py", "--server.port", "9"], "--server.port", "8501") == "9"
    assert server._option(["run", "a.py", "--server.port=7"], "--server.port", "8501") == "7"
    assert server._option(["run", "a.py", "--", "--server.port", "9"], "--server.port", "8501") == "8501"


def test_every_page_module_the_app_imports_is_warmed_before_serving() -> None:
    import ast

    from ui import server

    tree = ast.parse((Path(server.__file__).parent / "app.py").read_text(encoding="utf-8"))
    views = {
        f"{node.module}.{a.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "ui.views"
        for a in node.names
    }
    assert "ui.views.signin" in views and views <= set(server.WARM_MODULES), views - set(server.WARM_MODULES)


def test_importing_the_accounts_module_hashes_nothing() -> None:
    code = "import alwb.team.users as u; print(u._dummy_hash.cache_info().currsize)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"  # the dummy hash (a sixth of a second) is made at the first unknown name


@pytest.mark.slow
def test_the_address_is_printed_when_the_server_answers_with_torch_loaded(tmp_path: Path) -> None:
    from alwb.project import Project

    make_shapes(tmp_path / "shapes", 3, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=["circle", "square", "triangle"]) as proj:
        proj.add_images(tmp_path / "shapes")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ALWB_PROJECT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "alwb", "ui", str(root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        lines: list[str] = []
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("alwb workbench: http://localhost:"):
                break
        assert lines and lines[-1].startswith(f"alwb workbench: http://localhost:{port}"), lines
        assert f"(project {root})" in lines[-1]
        # at that moment the server answers, and PyTorch is already in its memory (execve: the same process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as resp:
            assert resp.read().strip() == b"ok"
        maps = Path(f"/proc/{proc.pid}/maps")
        if maps.exists():  # Linux
            assert "libtorch" in maps.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
