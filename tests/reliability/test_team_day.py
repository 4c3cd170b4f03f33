"""A team's working day holds up (issue 41): a round survives a PostgreSQL restart, and a dead sole worker does not
block training. Each test runs a PostgreSQL server of its own where it restarts one (``tests/_postgres.py``) and is
skipped, with the reason, without the server binaries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _postgres import Cluster, find_bindir
from conftest import SHAPES, make_shapes
from reliability_figures import report_figures

from alwb.project import Project


@pytest.fixture
def own_cluster():  # noqa: ANN201 - a generator fixture
    """A PostgreSQL server of this test's own (it is stopped and started again; the session's server is not)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (initdb/pg_ctl: install Debian's postgresql)")
    cluster = Cluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def _durable_database(cluster: Cluster) -> str:
    """A new database whose commits are flushed before they are acknowledged, as on a default server (the test
    cluster runs without it elsewhere): an immediate shutdown then loses nothing that was acknowledged."""
    import psycopg

    url = cluster.new_database()
    with psycopg.connect(cluster.url(), autocommit=True) as con:
        con.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" SET synchronous_commit = on')
    return url


def _project(tmp_path: Path, url: str, n_labels: int = 24) -> Project:
    """30 shapes on PostgreSQL, ``n_labels`` of the pool answered, a one-epoch CPU round of a few seconds."""
    make_shapes(tmp_path / "img", 10, size=12, layout="flat", seed=3)
    proj = Project.create(tmp_path / "proj", classes=list(SHAPES), store_url=url)
    proj.add_images(tmp_path / "img", progress=False, workers=1)
    proj.set_train_config(num_threads=1, epochs=1, device="cpu", image_size=12)
    truth = {r["id"]: Path(r["path"]).name.split("_")[0] for r in proj.store.items()}
    pool = proj.store.unlabeled_item_ids(split="pool")[:n_labels]
    proj.label([(i, truth[i]) for i in pool], annotator="ann")
    return proj


def test_a_round_survives_a_server_restart_before_its_score_step(tmp_path: Path, own_cluster: Cluster) -> None:
    """The server is stopped as a crash stops it (``pg_ctl stop -m immediate``: every connection cut) and started
    again as the round's training ends, before the score step's first store call (the unlabeled pool's ids): the
    round's connection, dropped while it was idle, is opened again by that call and the round completes. Before,
    that read had no second try and the round failed (3 of 3)."""
    proj = _project(tmp_path, _durable_database(own_cluster))
    restarts: list[float] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "train" and total and done == total and not restarts:
            t = time.perf_counter()
            own_cluster.stop("immediate")
            own_cluster.start()
            restarts.append(time.perf_counter() - t)

    try:
        summary = proj.train(progress=progress)
        assert restarts, "the round never reported the end of its training"
        assert summary.round == 1
        rounds = proj.store.rounds()
        assert [r["status"] for r in rounds] == ["done"] and proj.current_model() is not None
        report_figures(tmp_path, "round_across_a_restart", {"restart_s": round(restarts[0], 2), "rounds_done": 1})
    finally:
        proj.close()


def test_a_round_the_store_outlasts_fails_and_keeps_the_previous_model(tmp_path: Path, own_cluster: Cluster) -> None:
    """The server stops as a round's training ends and stays down: the round says so (StoreUnavailable, one line)
    and leaves nothing behind; the previous model stays current, and once the server is back the next round
    trains."""
    from alwb.errors import StoreUnavailable
    from alwb.learning.scores import read_scores

    proj = _project(tmp_path, _durable_database(own_cluster))
    try:
        first = proj.train()
        assert first.round == 1
        stopped: list[bool] = []

        def progress(phase: str, done: int, total: int) -> None:
            if phase == "train" and total and done == total and not stopped:
                own_cluster.stop("immediate")
                stopped.append(True)

        with pytest.raises(StoreUnavailable, match="cannot reach the PostgreSQL store") as err:
            proj.train(progress=progress)
        assert "\n" not in str(err.value)
        own_cluster.start()
        assert proj.store.current_round() == 1 and proj.current_model()["round"] == 1
        assert read_scores(proj.root, 2) is None and not (proj.root / "models" / "round_0002.safetensors").exists()
        assert proj.train().round == 2
    finally:
        proj.close()


STALE_S = 3.0  # instead of alwb.team.worker.STALE_S (30 s)


def test_a_killed_only_worker_is_noticed_by_a_page_and_retrain_works(tmp_path: Path, pg_url: str) -> None:
    """The project's only worker is SIGKILLed in the middle of a round. Before, nothing failed its request but
    another worker's claim: the pages said "failed soon" for good and Retrain answered "already running". Now what
    a page does every 2 s (:func:`alwb.team.worker.round_activity`) fails it once it has been silent ``STALE_S``
    seconds, the previous model stays current, and Retrain (no live worker left) trains in the web server's
    background process and its model becomes current."""
    from alwb.jobs import is_training, stop_training
    from alwb.team.worker import request_round, round_activity, start_or_queue

    proj = _project(tmp_path, pg_url)
    root = proj.root
    code = (
        "import sys; from alwb.team.worker import run_worker; "
        "run_worker(sys.argv[1], device='cpu', poll=0.2, heartbeat=0.5, stale_after=30.0)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-c", code, str(root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        request_round(proj.store, epochs=400, requested_by="ann")  # a round of minutes on this machine
        deadline = time.monotonic() + 120
        while True:
            run = round_activity(proj.store, stale_after=STALE_S)["running"]
            if run is not None and run["phase"] == "train" and run["done"] > 0:
                break
            assert time.monotonic() < deadline, "the worker never started training"
            assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
            time.sleep(0.2)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        t_kill = time.monotonic()
        assert start_or_queue(root, proj.store, device="cpu", stale_after=STALE_S) == "busy"  # not silent yet
        while True:  # a page's refresh, every 0.5 s
            act = round_activity(proj.store, stale_after=STALE_S)
            if act["running"] is None:
                break
            assert time.monotonic() - t_kill < STALE_S + 2.0, act
            time.sleep(0.5)
        noticed = time.monotonic() - t_kill
        (req,) = proj.store.round_requests()
        assert req["status"] == "failed" and "stopped answering" in req["error"]
        assert [r["status"] for r in proj.store.rounds()] == ["failed"] and proj.current_model() is None
        assert act["workers"] == 0 and [r["id"] for r in act["reaped"]] == [req["id"]]
        # Retrain: nobody is left to queue for, so the round trains here, in the background
        assert start_or_queue(root, proj.store, device="cpu", stale_after=STALE_S) == "started"
        deadline = time.monotonic() + 120
        while is_training(root):
            assert time.monotonic() < deadline, "the background round did not end"
            time.sleep(0.5)
        assert proj.store.current_round() == 1 and proj.current_model() is not None
        report_figures(tmp_path, "killed_only_worker", {"noticed_after_s": round(noticed, 2), "stale_after_s": STALE_S})
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        stop_training(root)
        proj.close()
