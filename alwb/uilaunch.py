"""``alwb ui``: become the Streamlit server of the workbench (``ui/app.py``), warm, and print its address.

The server runs through :mod:`ui.server`, which imports the pages' modules (PyTorch among them) before it serves and
prints the address once it answers: the first page opened after the address appears does not wait for imports.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import AlwbError

#: Where ``alwb ui`` and ``alwb demo`` serve the workbench unless told otherwise (this machine only).
DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"


def app_path() -> Path:
    """``ui/app.py`` of this checkout (alwb is installed in development mode next to it)."""
    p = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    if not p.is_file():
        raise AlwbError(f"the workbench app is missing ({p}); install alwb from its source folder with pip -e")
    return p


def streamlit_command(project: Path | None, *, port: int, host: str) -> list[str]:
    """The command line that serves the workbench: ``streamlit run`` through :mod:`ui.server` (warm imports), XSRF
    protection on, no telemetry, no browser opened, no full garbage collection after every script run."""
    cmd = [
        sys.executable,
        "-m",
        "ui.server",
        "run",
        str(app_path()),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--server.enableXsrfProtection",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--server.maxUploadSize",
        "1024",
        "--client.toolbarMode",
        "minimal",
        # Streamlit runs gc.collect(2) after every script run; with PyTorch loaded that is ~0.2 s with the GIL held
        # after each submit and each 2-second progress poll, which delayed the next batch by as much
        "--runner.postScriptGC",
        "false",
    ]
    if project is not None:
        cmd += ["--", "--project", str(project.resolve())]
    return cmd


def address_line(project: Path | None, *, port: int, host: str) -> str:
    """What ``alwb ui`` prints when the workbench is ready: its address (and the project)."""
    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    return f"alwb workbench: http://{shown}:{port}" + (f"  (project {project})" if project else "")


def check_exposure(project: Path | None, host: str, *, no_auth: bool = False) -> None:
    """Refuse a non-local ``host`` for a project without users (or no project) unless ``no_auth``."""
    from .users import LOCAL_HOSTS, exposure_error

    if host in LOCAL_HOSTS or no_auth:
        return
    has_users = False
    if project is not None:
        from .store import Store
        from .store.location import store_location

        with Store(store_location(project)) as store:
            has_users = store.active_user_count() > 0
    msg = exposure_error(host, has_users=has_users, no_auth=no_auth)
    if msg:
        raise AlwbError(msg)


def launch(project: Path | None, *, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, no_auth: bool = False) -> int:
    """Replace this process with the Streamlit server of the workbench (runs until interrupted).

    A project with users asks everyone to sign in; one without may only be served on this machine unless
    ``no_auth`` (``alwb ui --no-auth``) opens it on purpose."""
    from .store.location import is_project

    if project is not None and not is_project(project):
        raise AlwbError(f"{project} is not an alwb project (run 'alwb init' first, or start 'alwb ui' without it)")
    check_exposure(project, host, no_auth=no_auth)
    env = {
        **os.environ,
        "ALWB_PROJECT": str(project.resolve()) if project else "",
        "ALWB_UI_BANNER": address_line(project, port=port, host=host),  # printed by ui.server once it answers
    }
    cmd = streamlit_command(project, port=port, host=host)
    sys.stdout.flush()
    # become the server: signals (SIGTERM from a supervisor, Ctrl+C) reach Streamlit itself
    os.execve(sys.executable, cmd, env)
    return 0  # pragma: no cover - execve does not return
