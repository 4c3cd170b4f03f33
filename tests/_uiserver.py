"""Start ``alwb ui`` on a free port for a test and wait until it answers; always stopped, with its Streamlit child."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from conftest import free_port


def read(path: Path) -> str:
    """A log file's text (empty when it is not there)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def serve(
    project: Path | None,
    log_path: Path,
    *extra: str,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    startup_s: float = 90,
) -> Iterator[str]:
    """``alwb ui [PROJECT] --host HOST EXTRA...`` on a free port; yields its address (``http://127.0.0.1:PORT``)."""
    port = free_port()
    log = open(log_path, "wb")  # noqa: SIM115 - closed in the finally below
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    environ.pop("ALWB_PROJECT", None)
    cmd: Sequence[str] = [sys.executable, "-m", "alwb", "ui", *([str(project)] if project else [])]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--host", host, *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=environ,
        start_new_session=True,  # its own process group: the Streamlit child is stopped with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"alwb ui exited with {proc.returncode}:\n{read(log_path)}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().decode().strip() == "ok":
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"alwb ui did not answer in {startup_s:g} s:\n{read(log_path)}")
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()
