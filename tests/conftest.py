"""Shared fixtures: seeds, a small thread budget, and real image files drawn by the tests."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from _postgres import pg_url, postgres_cluster, store_location  # noqa: F401 - the PostgreSQL fixtures

SHAPES = ("circle", "square", "triangle")

#: Debian's Chromium and the flags the browser tests launch it with (Playwright's own browser download is not used).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    from alwb.uilaunch import free_port as port

    return port()


def make_label_store(path: Path, n_items: int, classes: tuple[str, ...]) -> None:
    """A bare store with ``classes`` and items 1..``n_items`` (no image files): for label-only stress tests."""
    from alwb.store import Store

    with Store(path, create=True) as s:
        s.add_classes(classes)
        with s.transaction():
            s.con.executemany(
                "INSERT INTO items(id, path, sha256, size, width, height, status, added_at)"
                " VALUES(?, ?, ?, 1, 8, 8, 'ok', 0)",
                [(i, f"/img/{i:05d}.png", f"{i:064x}") for i in range(1, n_items + 1)],
            )


@pytest.fixture(autouse=True, scope="session")
def _no_weights_from_outside(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reaches the network for weights or sees this machine's own weight caches: an empty torch hub folder
    and alwb's offline switch for the whole session (child processes inherit both). Tests of the download path
    point the hub elsewhere and lift the switch themselves (``tests/weights_helpers.py``)."""
    import os

    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    os.environ["ALWB_OFFLINE"] = "1"
    os.environ["ALWB_PRESTART"] = "0"  # Label pages start no waiting first round (test_jobs.py tests that)


@pytest.fixture(autouse=True)
def _forget_project_backbones():
    """Opening a project with its own backbone (alwb pretrain) registers it for the process: forget it after each
    test, so that the registry other tests see is the built-in one."""
    yield
    from alwb.learning import backbones
    from alwb.learning.pretrain import POOL_BACKBONE

    backbones.unregister(POOL_BACKBONE)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(2)


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> Image.Image:  # noqa: F821
    """A grey image with one white shape of ``kind`` at a random place and scale, plus noise."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (size, size), int(rng.integers(0, 60)))
    d = ImageDraw.Draw(img)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
    fill = int(rng.integers(180, 256))
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(size, size))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")


def make_shapes(
    root: Path, n_per_class: int = 20, *, size: int = 20, layout: str = "imagefolder", seed: int = 0
) -> dict[str, str]:
    """Write shape images under ``root``; returns {absolute path: true class}.

    ``layout``: ``imagefolder`` (class subfolders), ``flat`` (one folder), ``manifest`` (flat + ``root/labels.csv``).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    truth: dict[str, str] = {}
    for kind in SHAPES:
        for i in range(n_per_class):
            folder = root / kind if layout == "imagefolder" else root
            folder.mkdir(exist_ok=True)
            path = folder / f"{kind}_{i:03d}.png"
            draw_shape(kind, size, rng).save(path)
            truth[str(path.resolve())] = kind
    if layout == "manifest":
        lines = ["path,label"] + [f"{Path(p).name},{c}" for p, c in truth.items()]
        (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return truth


@pytest.fixture
def shapes_flat(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A flat folder of 60 shape images (20 per class) and their true classes."""
    folder = tmp_path / "shapes"
    return folder, make_shapes(folder, 20, layout="flat")


@pytest.fixture
def shapes_tree(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An ImageFolder tree of 60 shape images."""
    folder = tmp_path / "tree"
    return folder, make_shapes(folder, 20, layout="imagefolder")
