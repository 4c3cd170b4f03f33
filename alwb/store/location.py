"""Which store a project folder uses.

A project folder always keeps its settings and caches (``cache/``, ``models/``, ``scores/``). Its store is
either the SQLite file ``alwb.sqlite`` in the folder, or a PostgreSQL database named by ``store.json``
(``{"url": "postgresql://..."}``, written by ``alwb init --store`` or ``alwb store copy``). The pointer wins when
both are there. A folder with neither uses ``$ALWB_STORE_URL`` when it is set (a machine that only trains, say).

The pointer never holds a password (one given in the URL is left out when the file is written): libpq reads
``PGPASSWORD`` and ``~/.pgpass`` on each machine. The file is written readable by its owner only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ProjectError
from ..redaction import redact, without_password

STORE_FILE = "alwb.sqlite"
POINTER_FILE = "store.json"
ENV_URL = "ALWB_STORE_URL"


def _is_url(location: object) -> bool:
    return isinstance(location, str) and (location.startswith("postgresql://") or location.startswith("postgres://"))


def pointer_url(root: str | Path) -> str | None:
    """The URL in ``root/store.json``, or None when there is no pointer."""
    path = Path(root) / POINTER_FILE
    if not path.is_file():
        return None
    try:
        url = json.loads(path.read_text(encoding="utf-8"))["url"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProjectError(f"{path} does not name a store ({exc})") from None
    if not _is_url(url):
        raise ProjectError(f"{path} does not name a postgresql:// store")
    return str(url)


def store_location(root: str | Path) -> str | Path | None:
    """Where the project in ``root`` keeps its store (a URL or the SQLite path), or None for no project."""
    root = Path(root)
    url = pointer_url(root)
    if url is not None:
        return url
    if (root / STORE_FILE).is_file():
        return root / STORE_FILE
    env = os.environ.get(ENV_URL)
    if env and root.is_dir():
        if not _is_url(env):
            raise ProjectError(f"${ENV_URL} must be a postgresql:// URL, not {redact(env)[:30]!r}")
        return env
    return None


def is_project(root: str | Path) -> bool:
    """True when ``root`` holds a project (a SQLite store or a pointer to one elsewhere)."""
    root = Path(root)
    return (root / STORE_FILE).is_file() or (root / POINTER_FILE).is_file()


def write_pointer(root: str | Path, url: str) -> Path:
    """Make ``root`` use the PostgreSQL store at ``url`` (atomically; owner-only permissions)."""
    if not _is_url(url):
        raise ProjectError(f"not a postgresql:// URL: {redact(url)[:30]!r}")
    url = without_password(url)  # the file holds the address only: passwords come from PGPASSWORD or ~/.pgpass
    path = Path(root) / POINTER_FILE
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
