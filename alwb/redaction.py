"""Passwords out of everything alwb says: messages, logs, pages, exports and the project's ``store.json``.

A PostgreSQL address can carry a password in three places: the user part (``postgresql://user:PASSWORD@host/db``),
a query parameter (``?password=PASSWORD``, ``&password=...``) and libpq's environment (``PGPASSWORD``). Addresses may
name several hosts (``postgresql://user:pw@h1:5432,h2:5433/db``), which :func:`urllib.parse.urlsplit` cannot parse,
so this module works on the text with patterns and never raises.
"""

from __future__ import annotations

import logging
import os
import re

MASK = "***"
#: ``scheme://user:password@`` (the password ends at the last ``@`` before the host list).
_USERINFO = re.compile(r"(?P<head>postgres(?:ql)?://[^\s:/@?#]*):(?P<pw>[^\s/?#]*)@", re.IGNORECASE)
#: ``password=...`` as a query parameter (``?`` / ``&``) or a libpq keyword (start of text or after a space).
_PARAM = re.compile(r"(?P<head>(?:[?&]|(?<![\w.-]))password=)(?P<pw>[^&\s'\"]*)", re.IGNORECASE)
#: Shorter ``PGPASSWORD`` values are not searched for in text (they would mask ordinary words).
_MIN_ENV_SECRET = 4


def redact(text: object) -> str:
    """``text`` with every password it holds replaced by ``***`` (URL user parts, ``password=`` parameters and
    the value of ``$PGPASSWORD``)."""
    out = str(text)
    out = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", out)
    out = _PARAM.sub(lambda m: f"{m['head']}{MASK}", out)
    env = os.environ.get("PGPASSWORD") or ""
    if len(env) >= _MIN_ENV_SECRET:
        out = out.replace(env, MASK)
    return out


def without_password(url: str) -> str:
    """The address with its password removed (not masked): what may be written to a file."""
    out = _USERINFO.sub(lambda m: m["head"] + ("" if m["head"].endswith("//") else "@"), url)
    out = re.sub(r"([?&])password=[^&]*&?", r"\1", out, flags=re.IGNORECASE)
    return out.rstrip("?&")


def has_password(url: str) -> bool:
    """True when the address itself carries a password."""
    return bool(_USERINFO.search(url) or re.search(r"[?&]password=", url, re.IGNORECASE))


class RedactingFormatter(logging.Formatter):
    """A log formatter that masks passwords in every line it writes (messages and tracebacks)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redact_logging() -> None:
    """Make every handler of the root logger mask passwords (the CLI and the workbench server call this)."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            fmt = handler.formatter
            handler.setFormatter(RedactingFormatter(fmt._fmt if fmt else None, fmt.datefmt if fmt else None))
