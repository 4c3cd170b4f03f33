"""``alwb ui``: become the Streamlit server of the workbench (``ui/app.py``), warm, and print its address.

The server runs through :mod:`ui.server`, which imports the pages' modules (PyTorch among them) before it serves and
prints the address once it answers: the first page opened after the address appears does not wait for imports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import AlwbError

#: Where ``alwb ui`` and ``alwb demo`` serve the workbench unless told otherwise (this machine only).
DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def app_path() -> Path:
    """``ui/app.py`` of this checkout (alwb is installed in development mode next to it)."""
    p = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    if not p.is_file():
        raise AlwbError(f"the workbench app is missing ({p}); install alwb from its source folder with pip -e")
    return p


def host_allow_list(host: str, extra: Sequence[str] = ()) -> list[str]:
    """The host names browsers may use to reach a server listening on ``host`` (Streamlit's
    ``server.allowedHosts``): ``extra`` (``alwb ui --allowed-host``), the address itself, this machine's own names on
    loopback, and for an address on every interface (``0.0.0.0`` / ``::``) this machine's host names and addresses.
    A request naming any other host (DNS rebinding, a forged ``Host``) is refused."""
    names: list[str] = [h.strip().lower() for h in extra if h.strip()]
    wildcard = host in ("", "0.0.0.0", "::")
    if not wildcard:
        names.append(host.strip("[]").lower())
    if wildcard or host in LOOPBACK_HOSTS:
        names += ["localhost", "127.0.0.1", "::1"]
    if wildcard or host not in LOOPBACK_HOSTS:
        with contextlib.suppress(OSError):
            hostname = socket.gethostname()
            names += [hostname.lower(), socket.getfqdn().lower()]
            names += socket.gethostbyname_ex(hostname)[2]
    return list(dict.fromkeys(n for n in names if n))


def streamlit_command(project: Path | None, *, port: int, host: str, allowed: Sequence[str] | None = None) -> list[str]:
    """The command line that serves the workbench: ``streamlit run`` through :mod:`ui.server` (warm imports, the
    Host check and security headers), XSRF protection on, only the ``allowed`` host names (default
    :func:`host_allow_list`), no telemetry, no browser opened, no full garbage collection after every script run."""
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
        # one address printed: alwb's own line (address_line), not Streamlit's welcome with a second URL too
        "--logger.hideWelcomeMessage",
        "true",
    ]
    for name in host_allow_list(host) if allowed is None else allowed:
        cmd += ["--server.allowedHosts", name]
    if project is not None:
        cmd += ["--", "--project", str(project.resolve())]
    return cmd


def address_line(project: Path | None, *, port: int, host: str) -> str:
    """What ``alwb ui`` prints when the workbench is ready: its address (and the project)."""
    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    return f"alwb workbench: http://{shown}:{port}" + (f"  (project {project})" if project else "")


def check_exposure(project: Path | None, host: str, *, no_auth: bool = False) -> None:
    """Refuse a non-local ``host`` for a project without users (or no project) unless ``no_auth``."""
    from .team.users import LOCAL_HOSTS, exposure_error

    if host in LOCAL_HOSTS or no_auth:
        return
    has_users = False
    if project is not None:
        from .store import Store
        from .store.location import store_location

        with Store(store_location(project)) as store:
            has_users = store.user_count() > 0  # disabled accounts too: sign-in stays required
    msg = exposure_error(host, has_users=has_users, no_auth=no_auth)
    if msg:
        raise AlwbError(msg)


def launch(
    project: Path | None,
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    no_auth: bool = False,
    allowed_hosts: Sequence[str] = (),
    import_dirs: Sequence[Path] = (),
    metrics: bool = False,
) -> int:
    """Replace this process with the Streamlit server of the workbench (runs until interrupted).

    The project is fixed here: no page can open another. A project with users asks everyone to sign in; one without
    may only be served on this machine unless ``no_auth`` (``alwb ui --no-auth``) opens it on purpose. Browsers must
    name one of the allowed hosts; a served project imports images by path only from ``import_dirs``;
    ``/_stcore/metrics`` is served only with ``metrics``."""
    from .store.location import is_project

    if project is not None and not is_project(project):
        raise AlwbError(f"{project} is not an alwb project (run 'alwb init' first, or start 'alwb ui' without it)")
    for d in import_dirs:
        if not Path(d).is_dir():
            raise AlwbError(f"--import-dir {d}: no such folder")
    check_exposure(project, host, no_auth=no_auth)
    env = {
        **os.environ,
        "ALWB_PROJECT": str(project.resolve()) if project else "",
        "ALWB_UI_HOST": host,
        "ALWB_IMPORT_DIRS": os.pathsep.join(str(Path(d).resolve()) for d in import_dirs),
        "ALWB_UI_BANNER": address_line(project, port=port, host=host),  # printed by ui.server once it answers
    }
    if metrics:
        env["ALWB_UI_METRICS"] = "1"
    else:
        env.pop("ALWB_UI_METRICS", None)
    cmd = streamlit_command(project, port=port, host=host, allowed=host_allow_list(host, allowed_hosts))
    sys.stdout.flush()
    # become the server: signals (SIGTERM from a supervisor, Ctrl+C) reach Streamlit itself
    os.execve(sys.executable, cmd, env)
    return 0  # pragma: no cover - execve does not return


# ------------------------------------------------------------------ a workbench in a child process (tests, bench)
def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on at ``host`` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServedUI:
    """``alwb ui`` running in a child process of its own process group (its Streamlit server is the same process:
    ``alwb ui`` execs it). ``seconds``: from the start to the first healthy answer (0 until :meth:`wait_ready`)."""

    proc: subprocess.Popen
    url: str
    port: int
    log_path: Path
    seconds: float = 0.0

    def log(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of the server's output."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 90.0, *, started: float | None = None) -> None:
        """Wait until ``/_stcore/health`` answers ``ok``; raises :class:`AlwbError` (with the log's tail) when the
        server exits or does not answer within ``timeout`` seconds."""
        t0 = time.monotonic() if started is None else started
        while True:
            if self.proc.poll() is not None:
                raise AlwbError(f"alwb ui exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    self.seconds = time.monotonic() - t0
                    return
            if time.monotonic() - t0 > timeout:
                raise AlwbError(f"alwb ui did not answer in {timeout:g} s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the server's process group and reap it (SIGKILL when SIGTERM is not enough in 15 s)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)


def spawn_ui(
    project: Path | None,
    log_path: Path,
    *extra: str,
    host: str | None = DEFAULT_HOST,
    port: int | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ServedUI:
    """Start ``alwb ui [PROJECT] --port PORT --host HOST EXTRA...`` (a free port unless given; no ``--host`` when
    ``host`` is None: the default) writing its output to ``log_path`` (appended); returns at once (see
    :meth:`ServedUI.wait_ready`)."""
    port = free_port() if port is None else port
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    environ.pop("ALWB_PROJECT", None)
    cmd = [sys.executable, "-m", "alwb", "ui", *([str(project)] if project else [])]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), *(["--host", host] if host else []), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environ,
            cwd=cwd,
            start_new_session=True,  # its own process group: stopped with everything it starts
        )
    return ServedUI(proc, f"http://127.0.0.1:{port}", port, Path(log_path))


@contextlib.contextmanager
def served_ui(
    project: Path | None,
    log_path: Path,
    *extra: str,
    host: str = DEFAULT_HOST,
    env: dict[str, str] | None = None,
    startup_s: float = 90.0,
    cwd: Path | None = None,
) -> Iterator[ServedUI]:
    """:func:`spawn_ui`, wait until it answers, yield it; always stopped (tests and benchmarks start it so)."""
    t0 = time.monotonic()
    ui = spawn_ui(project, log_path, *extra, host=host, env=env, cwd=cwd)
    try:
        ui.wait_ready(startup_s, started=t0)
        yield ui
    finally:
        ui.stop()
