"""The Label and Progress pages show a training worker's round from the store (AppTest, no browser): its phase and
share done, which worker, how long since its heartbeat, a warning when it has gone silent, and the result."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import make_shapes

pytest.importorskip("streamlit")
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from alwb.jobs import is_training, stop_training  # noqa: E402
from alwb.project import Project  # noqa: E402
from alwb.team.worker import request_round  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
WORKER = "gpu-box:4242:1a2b3c"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ALWB_PROJECT", raising=False)
    st.cache_data.clear()
    yield
    st.cache_data.clear()


@pytest.fixture
def project(tmp_path: Path, store_location) -> Path:  # noqa: ANN001
    make_shapes(tmp_path / "shapes", 4, layout="flat")
    root = tmp_path / "proj"
    url = store_location if isinstance(store_location, str) else None
    with Project.create(root, classes=["circle", "square", "triangle"], store_url=url) as proj:
        proj.add_images(tmp_path / "shapes")
        request_round(proj.store, requested_by="ann")
        proj.store.register_worker(WORKER, "gpu-box", 4242, "cuda", time.time())
        proj.store.claim_round_request(WORKER, time.time(), 1)
    return root


def _progress_script() -> None:
    from ui.views import progress

    progress.render()


def _texts(at: AppTest) -> str:
    """Every progress bar's text, warning and caption of the page, markdown escapes removed."""
    parts = [str(p.proto.text) for p in at.get("progress")]
    parts += [w.value for w in at.warning] + [c.value for c in at.caption]
    return "\n".join(parts).replace("\\", "")


def _heartbeat(root: Path, at: float, progress: tuple[str, int, int] | None = None) -> None:
    with Project.open(root) as proj:
        if progress is not None:
            proj.store.report_progress(WORKER, *progress, at, request_id=1)
        proj.store.worker_heartbeat(WORKER, at)


def test_the_label_page_shows_the_workers_progress_and_its_silence(project: Path) -> None:
    _heartbeat(project, time.time(), ("train", 3, 12))
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params["project"] = str(project)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = _texts(at)
    assert f"Round 1 in progress: training 3/12 (25%) · worker {WORKER}, heard from" in shown, shown
    assert "has not been heard from" not in shown

    _heartbeat(project, time.time() - 20)  # silent for 20 s: failed at 30 s (alwb.team.worker.STALE_S)
    at.run()
    shown = _texts(at)
    assert f"Worker {WORKER} has not been heard from for 20 s" in shown, shown
    assert "its round is failed in 10 s" in shown, shown

    _heartbeat(project, time.time() - 31)  # the page itself fails the request, as it said it would
    at.run()
    shown = _texts(at)
    assert "in progress" not in shown, shown
    assert f"worker {WORKER} stopped answering (no heartbeat for 31 s)" in shown, shown
    assert "No training worker is running now" in "\n".join(i.value for i in at.info)
    with Project.open(project) as proj:
        (req,) = proj.store.round_requests()
        assert req["status"] == "failed" and proj.store.worker_rows() == []
    # the page offers to train here, and the round starts in this server's background process
    at.button(key="train_here").click().run()
    assert not at.exception, [e.value for e in at.exception]
    try:
        assert any("Training started in this web server" in i.value for i in at.info), [i.value for i in at.info]
        assert is_training(project)
    finally:
        stop_training(project)


def test_the_progress_page_shows_the_round_and_then_its_result(project: Path) -> None:
    _heartbeat(project, time.time(), ("score", 1, 4))
    at = AppTest.from_function(_progress_script, default_timeout=90)
    at.query_params["project"] = str(project)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"Round 1 in progress: scoring the pool 1/4 (25%) · worker {WORKER}" in _texts(at)
    with Project.open(project) as proj:
        proj.store.finish_round_request(1, round_number=1, error=None, now=time.time())
    at.run()
    shown = _texts(at)
    assert "in progress" not in shown and f"Round 1 trained by worker {WORKER}" in shown, shown


def test_a_round_queued_with_no_worker_can_train_here(tmp_path: Path, store_location) -> None:  # noqa: ANN001
    """A request waits for a worker that is not running: the page says so and offers "Train here now", which
    withdraws the request with the reason and trains in this server's background process."""
    make_shapes(tmp_path / "shapes", 4, layout="flat")
    root = tmp_path / "queued"
    url = store_location if isinstance(store_location, str) else None
    with Project.create(root, classes=["circle", "square", "triangle"], store_url=url) as proj:
        proj.add_images(tmp_path / "shapes")
        request_round(proj.store, requested_by="ann")
    at = AppTest.from_function(_progress_script, default_timeout=90)
    at.query_params["project"] = str(root)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("no training worker is running" in i.value for i in at.info), [i.value for i in at.info]
    at.button(key="train_here").click().run()
    assert not at.exception, [e.value for e in at.exception]
    try:
        assert is_training(root)
        with Project.open(root) as proj:
            (req,) = proj.store.round_requests()
            assert req["status"] == "failed" and "trained in a web server's background" in req["error"]
    finally:
        stop_training(root)
