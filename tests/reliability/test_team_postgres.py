"""A team on one PostgreSQL project, under stress (issue 26): 8 annotator processes x 500 labels while a worker
trains, a training worker SIGKILLed mid-round 5 times, and the PostgreSQL server restarted while people label.

The annotators are separate processes running ``team_annotator.py`` through the library; each writes down what the
store acknowledged only after the call returned, and the store must hold exactly those rows afterwards. The store
keeps no lease history (a submitted answer deletes its lease), so each annotator also writes down every batch it
was handed, with the time, and "never leased to two annotators" is checked on those records. Each test is bounded
in time (:data:`BUDGET_S`); the figures are printed with ``pytest -s`` (``reliability_figures``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _postgres import Cluster, find_bindir
from conftest import CHROMIUM, CHROMIUM_ARGS, SHAPES, free_port, make_shapes
from reliability_figures import report_figures
from store_checks import integrity_ok, lease_rows

from alwb.errors import StoreUnavailable
from alwb.project import Project
from alwb.store import LabelRow, Store
from alwb.team import leases
from alwb.team.worker import live_workers, request_round

HERE = Path(__file__).resolve().parent
ANNOTATOR = HERE / "team_annotator.py"
ANNOTATORS = 8
LABELS = 500  # each
BATCH = 20
#: 4,200 images: 8 x 500 answers need about 3,640 items when 10% of them are answered twice
N_PER_CLASS = 1400
ROUND_EVERY = 800  # labels between two round requests while the team labels
BUDGET_S = 150.0


def _env() -> dict[str, str]:
    # one thread per process: 8 annotators, a worker and the server share two cores
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _make_project(tmp_path: Path, url: str, n_per_class: int) -> Path:
    """A PostgreSQL project of shape images with a tiny, one-epoch CPU training setup."""
    make_shapes(tmp_path / "img", n_per_class, size=12, layout="flat", seed=7)
    root = tmp_path / "proj"
    with Project.create(root, classes=list(SHAPES), store_url=url) as p:
        p.add_images(tmp_path / "img", progress=False, workers=1)
        p.set_train_config(num_threads=1, epochs=1, device="cpu", image_size=12)
        p.set_config(batch_size=BATCH)
    return root


def _annotator(root: Path, name: str, labels: int, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(ANNOTATOR), str(root), name, str(labels), str(BATCH), str(out), *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _records(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def _worker(root: Path, *, heartbeat: float = 1.0, stale_after: float = 30.0, once: bool = False) -> subprocess.Popen:
    """A training worker process (alwb.team.worker.run_worker, as ``alwb worker`` runs it) with a short heartbeat."""
    code = (
        "import sys; from alwb.team.worker import run_worker; "
        f"run_worker(sys.argv[1], device='cpu', poll=0.2, heartbeat={heartbeat}, stale_after={stale_after}, "
        f"once={once})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(root)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def _human_rows(store: Store) -> list[tuple[int, str, str, str]]:
    """(item, class, annotator, batch) of every human label row, history included."""
    rows = store.con.execute(
        "SELECT l.item_id, c.name, l.annotator, l.batch_id FROM labels l LEFT JOIN classes c ON c.id=l.class_id"
        " WHERE l.source='human'"
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def _check_leases(records: dict[str, list[dict[str, Any]]], share: float) -> tuple[int, int]:
    """No item handed to two annotators except overlap items, and those to two at most; returns (batches handed
    out, overlap items handed to two)."""
    holders: dict[int, set[str]] = {}
    batches = 0
    for name, recs in records.items():
        for r in recs:
            if r["kind"] == "lease":
                batches += 1
                for i in r["items"]:
                    holders.setdefault(int(i), set()).add(name)
    twice = {i: who for i, who in holders.items() if len(who) > 1}
    wrong = {i: who for i, who in twice.items() if not leases.is_overlap(i, share)}
    assert not wrong, f"ordinary items leased to two annotators: {dict(list(wrong.items())[:5])}"
    assert all(len(who) == 2 for who in twice.values()), "an overlap item was leased to three annotators"
    return batches, len(twice)


# ---------------------------------------------------------------------------- 8 annotators while a worker trains
def test_eight_annotators_while_a_worker_trains(tmp_path: Path, pg_url: str) -> None:
    """8 annotator processes x 500 labels (batches of 20, each one transaction) against one PostgreSQL project while
    a worker process trains the rounds requested every 800 labels: the store holds exactly the acknowledged rows,
    and no item was leased to two annotators outside the overlap."""
    t_start = time.monotonic()
    root = _make_project(tmp_path, pg_url, N_PER_CLASS)
    setup_s = time.monotonic() - t_start
    outs = {f"ann{k}": tmp_path / f"ann{k}.jsonl" for k in range(ANNOTATORS)}
    worker = _worker(root)
    procs: list[subprocess.Popen] = []
    requested: list[int] = []
    try:
        with Store(pg_url) as store:
            while not live_workers(store):  # the worker is up (it imports torch) before the team starts
                assert worker.poll() is None, worker.stderr.read().decode(errors="replace")
                assert time.monotonic() - t_start < BUDGET_S / 3, "the worker did not start"
                time.sleep(0.2)
            procs = [_annotator(root, name, LABELS, out) for name, out in outs.items()]
            t_label = time.monotonic()
            next_round = ROUND_EVERY
            while any(p.poll() is None for p in procs):
                assert time.monotonic() - t_start < BUDGET_S, "the team did not finish in time"
                n = int(store.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0])
                busy = store.round_requests("queued") + store.round_requests("running")
                if n >= next_round and not busy:
                    requested.append(request_round(store, requested_by="test", epochs=1, device="cpu"))
                    next_round = n + ROUND_EVERY
                time.sleep(0.3)
            labeling_s = time.monotonic() - t_label
            for p in procs:
                assert p.returncode == 0, p.stderr.read().decode(errors="replace") if p.stderr else ""
            # the last request is finished by the worker (it may have been asked for at the very end)
            while any(store.round_request(i)["status"] in ("queued", "running") for i in requested):
                assert time.monotonic() - t_start < BUDGET_S, "the worker did not finish its round in time"
                assert worker.poll() is None, worker.stderr.read().decode(errors="replace")
                time.sleep(0.3)
            statuses = [store.round_request(i)["status"] for i in requested]
            spans = [(r["started_at"], r["finished_at"]) for r in store.rounds() if r["status"] == "done"]
            created = [float(r[0]) for r in store.con.execute("SELECT created_at FROM labels")]
            while_training = sum(1 for t in created if any(a <= t <= b for a, b in spans))

            records = {name: _records(out) for name, out in outs.items()}
            for name, recs in records.items():
                assert not [r for r in recs if r["kind"] == "error"], (name, [r for r in recs if r["kind"] == "error"])
                assert recs[-1] == {**recs[-1], "kind": "done", "labels": LABELS}, (name, recs[-1])
            acked = Counter(
                (int(i), str(c), name, r["batch"])
                for name, recs in records.items()
                for r in recs
                if r["kind"] == "ack"
                for i, c in r["rows"]
            )
            stored = Counter(_human_rows(store))
            assert sum(acked.values()) == ANNOTATORS * LABELS
            assert stored == acked  # none lost, none extra, none twice
            assert integrity_ok(store)
            share = leases.overlap_share(store)
            batches, overlap_twice = _check_leases(records, share)
            # the label history says the same: an ordinary item has one answer, an overlap item two, by two people
            per_item: dict[int, list[str]] = {}
            for item, _c, who, _b in stored:
                per_item.setdefault(item, []).append(who)
            assert all(len(w) == 1 for i, w in per_item.items() if not leases.is_overlap(i, share))
            assert all(len(w) == len(set(w)) <= 2 for w in per_item.values())
            assert lease_rows(store) == []  # every lease ended with its answer
    finally:
        _stop(procs)
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                _stop([worker])
    assert requested and statuses == ["done"] * len(requested), statuses
    assert while_training > 0  # rounds were trained while the team labeled
    total_s = time.monotonic() - t_start
    report_figures(
        tmp_path,
        "team_postgres",
        {
            "annotators": ANNOTATORS,
            "labels": ANNOTATORS * LABELS,
            "batch": BATCH,
            "batches_handed_out": batches,
            "overlap_items_answered_twice": overlap_twice,
            "rounds_requested": len(requested),
            "labels_saved_while_a_round_trained": while_training,
            "setup_seconds": round(setup_s, 1),
            "labeling_seconds": round(labeling_s, 1),
            "labels_per_second": round(ANNOTATORS * LABELS / labeling_s, 1),
            "test_seconds": round(total_s, 1),
        },
    )
    assert total_s < BUDGET_S


# ---------------------------------------------------------------------------- a worker killed mid-round 5 times
KILLS = 5
STALE_S = 2.0  # a worker silent this long is taken for dead (the default is 30 s)


def _wait(what: str, cond: Any, deadline: float, proc: subprocess.Popen | None = None) -> None:
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process ended ({proc.returncode}): {proc.stderr.read().decode(errors='replace')}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within the time bound")
        time.sleep(0.1)


def test_worker_killed_mid_round_five_times(tmp_path: Path, pg_url: str) -> None:
    """Five times: a slow round is queued, a worker process claims it and its round runs (the request is running,
    its heartbeat beats, the round row is running), then the worker is SIGKILLed. Each killed request ends failed
    with the reason (kills 1, 3, 5 found by the stale-heartbeat check a web server runs, kills 2 and 4 by the next
    worker's claim), the killed round is failed, the first model stays in use throughout, and a last request is
    taken and finished by a live worker."""
    t_start = time.monotonic()
    deadline = t_start + BUDGET_S
    root = _make_project(tmp_path, pg_url, 20)  # 60 images
    with Project.open(root) as proj:
        rows = [LabelRow(int(r["id"]), Path(r["path"]).name.split("_")[0]) for r in proj.store.items()[::2]]
        proj.store.add_labels(rows, annotator="ann")
        proj.train(epochs=1, device="cpu")
        first = proj.current_model()
    killed: list[int] = []
    kill_s: list[float] = []
    procs: list[subprocess.Popen] = []
    with Store(pg_url) as store:
        try:
            for k in range(1, KILLS + 1):
                slow = request_round(store, requested_by="test", epochs=5000, device="cpu", from_scratch=True)
                t_k = time.monotonic()
                w = _worker(root, heartbeat=0.3, stale_after=STALE_S)
                procs.append(w)

                def running(req_id: int = slow) -> bool:
                    req = store.round_request(req_id)
                    beat = req["status"] == "running" and (req["heartbeat_at"] or 0) > (req["claimed_at"] or 0)
                    return beat and any(r["status"] == "running" for r in store.rounds())

                _wait(f"kill {k}: the worker runs its round", running, deadline, w)
                if killed and k % 2 == 1:  # the previous kill was found by this worker's claim
                    prev = store.round_request(killed[-1])
                    assert prev["status"] == "failed" and "stopped answering" in prev["error"], prev
                time.sleep(0.5)  # mid-round
                os.kill(w.pid, signal.SIGKILL)
                w.wait(10)
                kill_s.append(time.monotonic() - t_k)
                killed.append(slow)
                (number,) = [r["number"] for r in store.rounds() if r["status"] == "running"]
                assert store.current_model()["id"] == first["id"]  # the previous model stays in use
                time.sleep(STALE_S + 0.3)  # its heartbeat is now stale
                if k % 2 == 1:  # a web server's check (the queue's stale-heartbeat detection)
                    reaped = store.reap_round_requests(time.time(), STALE_S)
                    assert [r["id"] for r in reaped] == [slow]
                    (rnd,) = [r for r in store.rounds() if r["number"] == number]
                    assert rnd["status"] == "failed" and "stopped answering" in rnd["error"], rnd
                req = store.round_request(slow)
                if k % 2 == 1:
                    assert req["status"] == "failed" and "stopped answering" in req["error"], req
                assert store.current_model()["id"] == first["id"]
            # the next request is taken by a live worker and finished
            nxt = request_round(store, requested_by="test", epochs=1, device="cpu")
            w = _worker(root, heartbeat=0.3, stale_after=STALE_S, once=True)
            procs.append(w)
            w.wait(max(1.0, deadline - time.monotonic()))
            assert w.returncode == 0, w.stderr.read().decode(errors="replace")
            assert store.round_request(nxt)["status"] == "done"
        finally:
            _stop(procs)
        requests = {r["id"]: r for r in store.round_requests()}
        assert [requests[i]["status"] for i in killed] == ["failed"] * KILLS
        assert all("stopped answering" in requests[i]["error"] for i in killed)
        model = store.current_model()
        assert model["id"] != first["id"] and model["round"] == first["round"] + 1
        assert (root / model["path"]).exists() or Path(model["path"]).exists()
        assert live_workers(store) == []
    total_s = time.monotonic() - t_start
    report_figures(
        tmp_path,
        "worker_killed",
        {"kills": KILLS, "seconds_per_kill": [round(s, 1) for s in kill_s], "test_seconds": round(total_s, 1)},
    )
    assert total_s < BUDGET_S


# ---------------------------------------------------------------------------- the server restarted while labeling
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


RESTART_ANNOTATORS = 4
RESTART_LABELS = 200  # each
OUTAGE_S = 3.0


def test_server_restarted_while_annotators_label(tmp_path: Path, own_cluster: Cluster) -> None:
    """4 annotator processes x 200 labels through the library while the PostgreSQL server is stopped (fast
    shutdown: open connections are cut) for about 3 s and started again, then stopped the way a crash stops it
    (immediate shutdown, recovery from the WAL; ``synchronous_commit`` on, as in a default server) and started at
    once: every call that returned is in the store, and nothing else; calls during the outage raise
    StoreUnavailable (one line, no psycopg traceback) and succeed when tried again; the CLI says the store is
    unavailable in one line; an ``alwb worker`` idle meanwhile says so, waits, and then trains the next round."""
    t_start = time.monotonic()
    deadline = t_start + BUDGET_S
    url = own_cluster.new_database()
    import psycopg

    with psycopg.connect(own_cluster.url(), autocommit=True) as con:  # the test cluster runs without it elsewhere
        con.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" SET synchronous_commit = on')
    root = _make_project(tmp_path, url, 300)  # 900 images for 800 answers
    outs = {f"ann{k}": tmp_path / f"ann{k}.jsonl" for k in range(RESTART_ANNOTATORS)}
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(  # 'alwb worker' waits through the outages, then takes a request
        [sys.executable, "-m", "alwb", "worker", str(root), "--poll", "0.2", "--device", "cpu"],
        env=_env(),
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    procs: list[subprocess.Popen] = []
    mine = Project.open(root)  # a long-lived connection of the test's own
    try:
        _wait("the worker is up", lambda: bool(live_workers(mine.store)), deadline, worker)
        procs = [_annotator(root, name, RESTART_LABELS, out, "--retry") for name, out in outs.items()]
        acks = lambda: sum(1 for out in outs.values() for r in _records(out) if r["kind"] == "ack")  # noqa: E731
        _wait("the team is labeling", lambda: acks() >= 2 * RESTART_ANNOTATORS, deadline)
        t_down = time.time()
        own_cluster.stop("fast")
        with pytest.raises(StoreUnavailable, match="cannot reach the PostgreSQL store"):
            mine.store.add_labels([LabelRow(1, "circle")], annotator="test")
        with pytest.raises(StoreUnavailable):
            Project.open(root)
        cli = subprocess.run(
            [sys.executable, "-m", "alwb", "status", str(root)], env=_env(), capture_output=True, text=True, timeout=60
        )
        assert cli.returncode != 0 and "cannot reach the PostgreSQL store" in cli.stdout + cli.stderr
        assert "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
        time.sleep(max(0.0, OUTAGE_S - (time.time() - t_down)))
        own_cluster.start()
        t_up = time.time()
        assert mine.store.add_labels([LabelRow(1, "circle")], annotator="test") == 1  # the same object, again
        before = acks()
        _wait("labels after the restart", lambda: acks() >= before + 2 * RESTART_ANNOTATORS, deadline)
        t_crash = time.time()
        own_cluster.stop("immediate")  # as if the server crashed: no shutdown checkpoint, recovery from the WAL
        own_cluster.start()
        t_restart = time.time()
        for p in procs:
            p.wait(max(1.0, deadline - time.monotonic()))
            assert p.returncode == 0, p.stderr.read().decode(errors="replace") if p.stderr else ""
        records = {name: _records(out) for name, out in outs.items()}
        errors = [r for recs in records.values() for r in recs if r["kind"] == "error"]
        assert not errors, errors
        failed = [r for recs in records.values() for r in recs if r["kind"] == "unavailable"]
        assert failed, "no call met the outage"
        assert {r["type"] for r in failed} == {"StoreUnavailable"}
        assert all("cannot reach the PostgreSQL store" in r["error"] and "\n" not in r["error"] for r in failed)
        for name, recs in records.items():
            assert recs[-1]["kind"] == "done" and recs[-1]["labels"] == RESTART_LABELS, (name, recs[-1])
            # one that met an outage went on once the server was back (its clock, not t_up: a retry may land in
            # the moment between the server answering and pg_ctl returning)
            met = [k for k, r in enumerate(recs) if r["kind"] == "unavailable"]
            if met:
                assert any(r["kind"] == "ack" for r in recs[met[-1] :]), (name, recs[met[-1] :][:5])
        assert sum(any(r["kind"] == "unavailable" for r in recs) for recs in records.values()) >= 2
        acked = Counter(
            (int(i), str(c), name, r["batch"])
            for name, recs in records.items()
            for r in recs
            if r["kind"] == "ack"
            for i, c in r["rows"]
        )
        stored = Counter(row for row in _human_rows(mine.store) if row[2] != "test")
        assert stored == acked  # nothing shown as saved is lost, and a repeated call wrote nothing twice
        assert integrity_ok(mine.store)
        batches, overlap_twice = _check_leases(records, leases.overlap_share(mine.store))
        # the worker lived through both outages and takes the next request
        assert worker.poll() is None, (tmp_path / "worker.log").read_text(errors="replace")
        req = request_round(mine.store, requested_by="test", epochs=1, device="cpu")
        _wait("the worker's round", lambda: mine.store.round_request(req)["status"] == "done", deadline, worker)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        said = (tmp_path / "worker.log").read_text(errors="replace")
        assert worker.returncode == 0 and "Traceback" not in said, said
        assert "cannot reach the PostgreSQL store" in said and "; retrying" in said and "the store is back" in said
        assert f"request {req}: round 1 done" in said, said
    finally:
        _stop([*procs, worker])
        worker_log.close()
        mine.close()
    total_s = time.monotonic() - t_start
    during = sorted(r["t"] for r in failed)
    report_figures(
        tmp_path,
        "server_restart",
        {
            "annotators": RESTART_ANNOTATORS,
            "labels": sum(acked.values()),
            "calls_refused_during_outages": len(failed),
            "outage_seconds": round(t_up - t_down, 1),
            "refused_around_the_crash_restart": sum(1 for t in during if t >= t_crash),
            "batches_saved_after_the_crash_restart": sum(
                1 for recs in records.values() for r in recs if r["kind"] == "ack" and r["t2"] > t_restart
            ),
            "overlap_items_answered_twice": overlap_twice,
            "batches_handed_out": batches,
            "test_seconds": round(total_s, 1),
        },
    )
    assert total_s < BUDGET_S


# ---------------------------------------------------------------------------- the page while the server is down
def test_label_page_while_the_server_is_down(tmp_path: Path, own_cluster: Cluster, monkeypatch) -> None:  # noqa: ANN001
    """The workbench's Label page (Streamlit's AppTest on ui/app.py) on a PostgreSQL project: answers are chosen, the
    server stops, Submit is pressed: no traceback, "Nothing was saved" and "The store is unavailable (...);
    retrying in N s" with the answers kept in the session; once the server is back the page comes back with the same
    batch and answers, and the next Submit saves them and only then says "Saved"."""
    pytest.importorskip("streamlit")
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("ALWB_PROJECT", raising=False)
    st.cache_data.clear()
    t_start = time.monotonic()
    url = own_cluster.new_database()
    root = _make_project(tmp_path, url, 20)

    def run(at: AppTest) -> AppTest:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    def texts(at: AppTest) -> list[str]:
        return [e.value.replace("\\", "") for kind in (at.warning, at.error, at.success, at.info) for e in kind]

    def boxes(at: AppTest) -> dict[int, Any]:
        return {int(b.key.split("_")[1]): b for b in at.selectbox if b.key and b.key.startswith("ans_")}

    at = AppTest.from_file(str(HERE.parents[1] / "ui" / "app.py"), default_timeout=60)
    at.query_params["project"] = str(root)
    at.query_params["annotator"] = "alice"
    run(at)
    ids = list(boxes(at))
    assert len(ids) == BATCH
    chosen = {ids[0]: "circle", ids[1]: "square", ids[2]: "triangle"}
    for item_id, value in chosen.items():
        boxes(at)[item_id].select(value)
        run(at)

    own_cluster.stop("fast")
    at.button(key="submit").click()
    run(at)
    shown = texts(at)
    assert any(t.startswith("The store is unavailable (") and "; retrying in 3 s." in t for t in shown), shown
    assert not any("Saved" in t for t in shown), shown
    run(at)  # the page tries again: still down, still no traceback
    assert any(t.startswith("The store is unavailable (") for t in texts(at))

    own_cluster.start()
    run(at)  # what the page's retry does once the server answers: draw the page again
    shown = texts(at)
    assert any(t.startswith("Nothing was saved: cannot reach the PostgreSQL store") for t in shown), shown
    assert list(boxes(at)) == ids  # the same batch, with the answers chosen before the outage
    assert {i: boxes(at)[i].value for i in chosen} == chosen
    with Store(url) as store:
        assert store.current_labels() == []  # nothing was said to be saved, and nothing was
    at.button(key="submit").click()
    run(at)
    assert any(t.startswith("Saved 3 label(s)") for t in texts(at)), texts(at)
    with Store(url) as store:
        assert {int(r["item_id"]): r["class"] for r in store.current_labels()} == chosen
        assert {r["annotator"] for r in store.current_labels()} == {"alice"}
    report_figures(tmp_path, "page_while_down", {"test_seconds": round(time.monotonic() - t_start, 1)})


@pytest.mark.slow
def test_label_page_in_a_browser_retries_by_itself(tmp_path: Path, own_cluster: Cluster) -> None:
    """``alwb ui`` in Chromium on a PostgreSQL project: two answers chosen, the server stopped: without a click the
    page says the store is unavailable; Submit during the outage saves nothing and says so; the server started
    again: with no click the page comes back by itself with the batch and both answers, and Submit saves them."""
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright import sync_api
    from playwright.sync_api import expect

    t_start = time.monotonic()
    url = own_cluster.new_database()
    root = _make_project(tmp_path, url, 20)
    with Project.open(root) as proj:
        proj.set_config(batch_size=8)
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    env = {**_env(), "ALWB_PROJECT": ""}
    server = subprocess.Popen(
        [sys.executable, "-m", "alwb", "ui", str(root), "--port", str(port), "--host", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{port}"
    timings: dict[str, float] = {}
    try:
        _wait("alwb ui answers", lambda: _healthy(address), time.monotonic() + 90, server)
        sync_api.expect.set_options(timeout=60_000)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{address}/label?annotator=alice")
                page.get_by_role("heading", name="Label", exact=True).wait_for()
                chosen = ["circle", "square"]
                for j, cls in enumerate(chosen):
                    page.locator(f".st-key-cell_{j}").get_by_role("combobox").click()
                    page.get_by_role("option", name=cls, exact=True).click()
                    expect(page.locator(f".st-key-cell_{j}").get_by_role("combobox")).to_have_value(cls)
                time.sleep(1.0)  # the last choice's rerun (it saves the draft) is over
                own_cluster.stop("fast")
                t = time.monotonic()
                down = page.get_by_text(re.compile(r"The store is unavailable \(.+\); retrying in \d+ s"))
                expect(down.first).to_be_visible()  # the page's own 2-second refresh, no click
                timings["noticed_down_s"] = time.monotonic() - t
                page.get_by_role("button", name="Submit batch of 8").click()
                expect(page.get_by_text(re.compile(r"retrying in 3 s")).first).to_be_visible()
                expect(page.get_by_text(re.compile(r"Saved \d+ label"))).to_have_count(0)
                assert page.get_by_text("Traceback").count() == 0
                own_cluster.start()
                t = time.monotonic()
                page.get_by_role("heading", name="Label", exact=True).wait_for()  # by itself
                not_saved = page.get_by_text(re.compile("Nothing was saved: cannot reach the PostgreSQL store"))
                expect(not_saved).to_be_visible()
                timings["back_after_start_s"] = time.monotonic() - t
                for j, cls in enumerate(chosen):
                    expect(page.locator(f".st-key-cell_{j}").get_by_role("combobox")).to_have_value(cls)
                with Store(url) as store:
                    assert store.current_labels() == []
                page.get_by_role("button", name="Submit batch of 8").click()
                expect(page.get_by_text(re.compile(r"Saved 2 label\(s\) to the store"))).to_be_visible()
                assert page.get_by_text("Traceback").count() == 0
            finally:
                browser.close()
        with Store(url) as store:
            assert sorted(r["class"] for r in store.current_labels()) == chosen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(15)
        log.close()
    report_figures(
        tmp_path,
        "browser_while_down",
        {**{k: round(v, 1) for k, v in timings.items()}, "test_seconds": round(time.monotonic() - t_start, 1)},
    )


def _healthy(address: str) -> bool:
    import urllib.request

    with contextlib.suppress(OSError), urllib.request.urlopen(f"{address}/_stcore/health", timeout=2) as resp:
        return resp.read().decode().strip() == "ok"
    return False
