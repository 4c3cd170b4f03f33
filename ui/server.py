"""Serve the workbench warm: ``python -m ui.server run ui/app.py [streamlit options] [-- --project PROJECT]``.

The same command line as ``streamlit run``, with two differences: before the server starts, this process imports
every page and what they use (PyTorch, scikit-learn, modAL, pandas, Altair: most of a first page's time on a small
machine), so the first page a person opens does not pay for it; and once the server answers, it prints the line
in ``$ALWB_UI_BANNER`` (the address ``alwb ui`` shows), so the address appears when the workbench is ready.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import urllib.request
from typing import Any

#: What the pages import, the heaviest first; imported once here, shared by every session's script run.
WARM_MODULES = (
    "alwb.project",
    "ui.state",
    "ui.keyboard",
    "ui.views.common",
    "ui.views.label",
    "ui.views.progress",
    "ui.views.review",
    "ui.views.settings",
    "ui.views.start",
    "ui.views.export",
    "ui.views.history",
    "ui.views.signin",
    "ui.views.unavailable",
    "ui.views.insight",
    "ui.views.datamap",
)


def warm() -> float:
    """Import :data:`WARM_MODULES`; returns the seconds it took."""
    import logging

    # importing the pages' cached functions before the runtime exists makes Streamlit warn that it uses a memory
    # cache for now; the server's runtime replaces it, so the person need not read that at every start
    importlib.import_module("streamlit.runtime.caching.cache_data_api")  # creates (and sets the level of) its logger
    quiet = logging.getLogger("streamlit.runtime.caching.cache_data_api")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    t0 = time.perf_counter()
    try:
        for name in WARM_MODULES:
            importlib.import_module(name)
    finally:
        quiet.setLevel(level)
    return time.perf_counter() - t0


def _option(argv: list[str], name: str, default: str) -> str:
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def _announce_when_ready(host: str, port: str, banner: str, timeout: float = 120.0) -> None:
    """Print ``banner`` once ``/_stcore/health`` answers (a daemon thread: the server's start is not held up)."""
    probe = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    url = f"http://{'[' + probe + ']' if ':' in probe else probe}:{port}/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    break
        except OSError:
            time.sleep(0.05)
    print(banner, flush=True)


#: Headers added to every HTTP answer: no framing by other sites (clickjacking), no content sniffing, no referrer
#: sent elsewhere. Same-origin frames stay allowed (Streamlit's components are frames of this server).
SECURITY_HEADERS = (
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"content-security-policy", b"frame-ancestors 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
#: ``alwb ui --metrics`` sets it: serve Streamlit's ``/_stcore/metrics`` (off otherwise: it is unauthenticated).
ENV_METRICS = "ALWB_UI_METRICS"


class Hardening:
    """ASGI middleware in front of Streamlit's: a request whose ``Host`` is not one of ``server.allowedHosts`` is
    refused (403; Streamlit itself checks only its websocket), which stops DNS rebinding; every HTTP answer gets
    :data:`SECURITY_HEADERS`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        from streamlit.web.server.starlette.starlette_websocket import is_host_allowed

        host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
        if not is_host_allowed(host):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = b"Host not allowed\n"
            length = str(len(body)).encode()
            headers = [(b"content-type", b"text/plain"), (b"content-length", length), *SECURITY_HEADERS]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in SECURITY_HEADERS if h[0] not in have)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def harden() -> None:
    """Put :class:`Hardening` in front of Streamlit's middleware, and leave ``/_stcore/metrics`` out unless
    ``$ALWB_UI_METRICS`` is set. Streamlit has no option for either; both are applied where it builds its app."""
    from starlette.middleware import Middleware
    from streamlit.web.server.starlette import starlette_app

    make_middleware = starlette_app.create_streamlit_middleware
    if getattr(make_middleware, "_alwb", False):
        return

    def create_streamlit_middleware() -> list[Any]:
        return [Middleware(Hardening), *make_middleware()]

    create_streamlit_middleware._alwb = True  # type: ignore[attr-defined]
    starlette_app.create_streamlit_middleware = create_streamlit_middleware
    if not os.environ.get(ENV_METRICS):
        starlette_app.create_metrics_routes = lambda runtime, base_url: []


def main(argv: list[str] | None = None) -> int:
    """Warm up, then run Streamlit's command line with ``argv`` (``run APP ...``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    warm()
    harden()
    import logging

    from alwb.redaction import redact_logging

    # the workbench's own messages (alwb.*) go to stderr with every password masked
    logging.basicConfig(level=logging.WARNING, format="alwb: %(levelname)s: %(message)s")
    redact_logging()
    banner = os.environ.get("ALWB_UI_BANNER")
    if banner:
        host = _option(argv, "--server.address", "127.0.0.1")
        port = _option(argv, "--server.port", "8501")
        threading.Thread(target=_announce_when_ready, args=(host, port, banner), daemon=True).start()
    from streamlit.web import cli

    return cli.main(args=argv, prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main())
