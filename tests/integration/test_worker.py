"""The training worker: ``alwb train --queue`` and ``alwb worker`` on both backends; a worker killed mid-round
leaves the round failed with its reason and the previous model in use, and the next request is taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alwb.cli import main
from alwb.project import Project
from alwb.store import LabelRow
from alwb.team.worker import live_workers, request_round, run_worker


@pytest.fixture
def project(tmp_path: Path, shapes_flat, store_location) -> Path:  # noqa: ANN001
    folder, truth = shapes_flat
    root = tmp_path / "proj"
    url = store_location if isinstance(store_location, str) else None
    with Project.create(root, classes=["circle", "square", "triangle"], store_url=url) as proj:
        proj.add_images(folder)
        rows = [LabelRow(proj.store.item_by_path(p)["id"], c) for p, c in sorted(truth.items())[::2]]
        proj.store.add_labels(rows, annotator="ann")
    return root


def test_queued_rounds_are_run_by_the_worker(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(project), "--queue", "--epochs", "2", "--device", "cpu"]) == 0
    assert "queued round request 1; no worker is running" in capsys.readouterr().out
    assert main(["train", str(project), "--queue", "--epochs", "2"]) == 0
    with Project.open(project) as proj:
        assert [r["status"] for r in proj.store.round_requests()] == ["queued", "queued"]
        assert proj.store.rounds() == []  # nothing trained where it was asked for
    assert main(["worker", str(project), "--once", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "request 1: training round 1" in out and "request 1: round 1 done" in out
    assert main(["worker", str(project), "--once", "--device", "cpu"]) == 0
    assert "request 2: round 2 done" in capsys.readouterr().out
    assert main(["worker", str(project), "--once"]) == 0  # an empty queue
    assert "after 0 request(s)" in capsys.readouterr().out
    with Project.open(project) as proj:
        reqs = proj.store.round_requests()
        assert [(r["status"], r["round"], r["options"]) for r in reqs] == [
            ("done", 1, {"device": "cpu", "epochs": 2}),
            ("done", 2, {"epochs": 2}),
        ]
        assert [r["status"] for r in proj.store.rounds()] == ["done", "done"]
        assert proj.current_model()["round"] == 2
        assert proj.store.worker_rows() == []  # workers leave the register when they stop


def test_a_killed_worker_fails_its_round_and_the_next_worker_goes_on(project: Path) -> None:
    with Project.open(project) as proj:
        request_round(proj.store, epochs=2, device="cpu")
    assert run_worker(project, once=True) == 1
    with Project.open(project) as proj:
        first = proj.current_model()
        assert first["round"] == 1
        slow = request_round(proj.store, epochs=2000, device="cpu", from_scratch=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "alwb", "worker", str(project), "--poll", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 180
        with Project.open(project) as proj:
            while time.monotonic() < deadline:
                running = [r for r in proj.store.rounds() if r["status"] == "running"]
                if running and proj.store.round_request(slow)["status"] == "running":
                    break
                assert worker.poll() is None, worker.stdout.read().decode(errors="replace")
                time.sleep(0.2)
            else:
                pytest.fail("the worker did not start the round")
            assert len(live_workers(proj.store)) == 1
            time.sleep(1.0)  # mid-round
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            time.sleep(1.2)
            reaped = proj.store.reap_round_requests(time.time(), stale_after=1.0)
            assert [r["id"] for r in reaped] == [slow]
            req = proj.store.round_request(slow)
            assert req["status"] == "failed" and "stopped answering" in req["error"]
            failed = [r for r in proj.store.rounds() if r["number"] == 2]
            assert failed[0]["status"] == "failed" and "stopped answering" in failed[0]["error"]
            assert proj.current_model() == first  # the previous model stays in use
            assert live_workers(proj.store) == []
            nxt = request_round(proj.store, epochs=2, device="cpu")
        assert run_worker(project, once=True) == 1  # any live worker takes the next request
        with Project.open(project) as proj:
            assert proj.store.round_request(nxt)["status"] == "done"
            assert proj.current_model()["round"] == 2
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)


def test_a_web_server_queues_the_round_when_a_worker_is_registered(project: Path) -> None:
    from alwb.team.worker import start_or_queue

    with Project.open(project) as proj:
        proj.store.register_worker("gpu-box:1:abc", "gpu-box", 1, "cuda", time.time())
        assert start_or_queue(project, proj.store, device="cpu", requested_by="ann") == "queued"
        (req,) = proj.store.round_requests()
        assert (req["status"], req["requested_by"], req["options"]) == ("queued", "ann", {"device": "cpu"})
        assert start_or_queue(project, proj.store) == "busy"  # one request at a time
        assert proj.store.rounds() == []  # nothing trained in the web server


def test_alwb_status_fails_a_silent_workers_request(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no live worker left to notice (the only one was killed), ``alwb status`` notices: the request and its
    round are failed with the reason, and the status shows no round running."""
    from alwb.team.worker import STALE_S

    old = time.time() - STALE_S - 5
    with Project.open(project) as proj:
        request_round(proj.store, requested_by="ann")
        proj.store.register_worker("gone:1:abc", "gone", 1, "cpu", old)
        number = proj.store.start_round("margin")
        proj.store.claim_round_request("gone:1:abc", old, number)
    assert main(["status", str(project), "--json"]) == 0
    capsys.readouterr()
    with Project.open(project) as proj:
        (req,) = proj.store.round_requests()
        assert req["status"] == "failed" and "worker gone:1:abc stopped answering" in req["error"]
        assert [r["status"] for r in proj.store.rounds()] == ["failed"]
        assert proj.store.worker_rows() == [] and live_workers(proj.store) == []
