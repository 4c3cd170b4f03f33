"""A person's own label history (alwb.history) and a training worker's progress in the store
(alwb.team.worker.round_activity), on both backends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from alwb.history import own_labels, summarise
from alwb.project import Project
from alwb.store import LabelRow, Store
from alwb.team import agreement
from alwb.team.worker import request_round, round_activity, run_worker


@pytest.fixture
def project(tmp_path: Path, shapes_flat, store_location) -> Path:  # noqa: ANN001
    folder, _ = shapes_flat
    root = tmp_path / "proj"
    url = store_location if isinstance(store_location, str) else None
    with Project.create(root, classes=["circle", "square", "triangle"], store_url=url) as proj:
        proj.add_images(folder)
    return root


def test_own_labels_newest_first_with_what_became_of_them(project: Path) -> None:
    with Project.open(project) as proj:
        s = proj.store
        a, b, c, d = s.item_ids()[:4]
        s.add_labels([LabelRow(a, "circle"), LabelRow(b, "square")], annotator="ann", batch_id="b1")
        time.sleep(0.01)
        s.add_labels([LabelRow(c, None)], annotator="ann", batch_id="b2")
        s.add_labels([LabelRow(a, "square"), LabelRow(d, "circle")], annotator="bob", batch_id="b3")
        time.sleep(0.01)
        agreement.decide(s, a, "rev", "triangle")  # changes ann's answer
        agreement.decide(s, b, "rev", "square")  # confirms ann's answer (no new label)
        mine = own_labels(s, "ann")
        assert [e.item_id for e in mine] == [c, b, a] or [e.item_id for e in mine] == [c, a, b]
        assert mine[0].answer is None and mine[0].batch_id == "b2" and mine[0].current
        by_item = {e.item_id: e for e in mine}
        assert by_item[a].changed and by_item[a].reviewer == "rev" and by_item[a].reviewed_as == "triangle"
        assert not by_item[a].current
        assert by_item[b].reviewer == "rev" and not by_item[b].changed  # the decision is a label of its own
        assert {e.item_id for e in own_labels(s, "bob")} == {a, d}  # nobody else's labels
        assert summarise(mine) == summarise(mine).__class__(
            answers=3, batches=2, current=1, changed=1, confirmed=1, decisions=0
        )
        rev = own_labels(s, "rev")
        assert sorted((e.item_id, e.decision, e.answer) for e in rev) == sorted(
            [(a, True, "triangle"), (b, True, "square")]
        )
        assert summarise(rev).decisions == 2 and summarise(rev).answers == 0
        assert own_labels(s, "nobody") == []


def test_round_activity_shows_progress_heartbeat_age_and_a_silent_worker(project: Path) -> None:
    with Project.open(project) as proj:
        s = proj.store
        assert round_activity(s) == {"running": None, "queued": 0, "workers": 0, "last": None, "reaped": []}
        request_round(s, epochs=1)
        assert round_activity(s)["queued"] == 1
        s.register_worker("box:1:abc", "box", 1, "cpu", 1000.0)
        s.claim_round_request("box:1:abc", 1000.0, 1)
        s.report_progress("box:1:abc", "train", 3, 12, 1002.0, request_id=1)
        s.worker_heartbeat("box:1:abc", 1002.0)
        act = round_activity(s, now=1005.0)
        assert act["running"] == {
            "request": 1,
            "worker": "box:1:abc",
            "round": 1,
            "phase": "train",
            "done": 3,
            "total": 12,
            "age": 3.0,
            "silent": False,
            "fails_in": 27.0,  # STALE_S after the last beat
        }
        assert act["workers"] == 1 and act["queued"] == 0
        s.worker_heartbeat("box:1:abc", 1006.0)  # a beat without news keeps the last progress
        assert round_activity(s, now=1007.0)["running"]["done"] == 3
        late = round_activity(s, now=1030.0)["running"]
        assert late["silent"] and late["age"] == 24.0
        s.finish_round_request(1, round_number=1, error=None, now=1031.0)
        act = round_activity(s, now=1032.0)
        assert act["running"] is None and act["last"]["status"] == "done" and act["last"]["worker"] == "box:1:abc"


def test_the_worker_writes_its_rounds_progress_to_the_store(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker reports the round's progress through the store (for pages on other machines)."""
    seen: list[dict] = []

    def fake_train(self, *, progress=None, **_kw):  # noqa: ANN001, ANN202
        progress("train", 3, 10)
        with Store(self.store.url or self.store.path) as other:  # another connection, as a web server has
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                run = round_activity(other)["running"]
                if run and run["phase"] == "train":
                    seen.append(run)
                    break
                time.sleep(0.05)
        raise RuntimeError("no real training in this test")

    monkeypatch.setattr(Project, "train", fake_train)
    with Project.open(project) as proj:
        request_round(proj.store, epochs=1)
    assert run_worker(project, once=True, heartbeat=2.0) == 1
    assert seen and (seen[0]["done"], seen[0]["total"]) == (3, 10) and not seen[0]["silent"]
    with Project.open(project) as proj:
        act = round_activity(proj.store)
        assert act["last"]["status"] == "failed" and "no real training" in act["last"]["error"]


def test_training_progress_reports_a_failed_round_until_one_succeeds(project: Path) -> None:
    """Project.training_progress: one TrainingStatus for pages, wherever the round runs."""
    with Project.open(project) as proj:
        status = proj.training_progress()
        assert status.running is None and status.last_error is None and not status.waiting
        n = proj.store.start_round("margin")
        proj.store.fail_round(n, "RuntimeError: out of memory")
        assert proj.training_progress().last_error == "RuntimeError: out of memory"
        time.sleep(0.01)
        m = proj.store.start_round("margin")
        proj.store.finish_round(
            m, model_path="m.pt", arch="cnn6", config={}, metrics={}, timings={}, n_labeled=0, n_pseudo=0, n_val=0
        )
        assert proj.training_progress().last_error is None  # a round that succeeded since is the news


def test_a_round_here_and_a_workers_round_come_through_the_same_channel(project: Path) -> None:
    """This machine's round and a worker's both report into ``round_progress``; the status says where it runs. A
    report of this machine's round counts only while its lock is held (a killed round leaves its last row)."""
    from alwb.jobs import READY_PHASE, local_runner, training_lock
    from alwb.progress import RunningRound

    with Project.open(project) as proj:
        s = proj.store
        s.report_progress(local_runner(project), "train", 3, 12, time.time())
        assert proj.training_progress().running is None  # no lock: a leftover of a round that ended
        with training_lock(project):
            assert proj.training_progress().running == RunningRound(where="here", phase="train", done=3, total=12)
            s.report_progress(local_runner(project), READY_PHASE, 0, 0, time.time())
            status = proj.training_progress()
            assert status.running is None and status.waiting
        request_round(s, epochs=1)
        now = time.time()
        s.register_worker("box:1:abc", "box", 1, "cpu", now)
        s.claim_round_request("box:1:abc", now, 1)
        s.report_progress("box:1:abc", "score", 2, 5, now, request_id=1)
        run = proj.training_progress().running
        assert run is not None and (run.where, run.worker, run.phase, run.done, run.total) == (
            "worker",
            "box:1:abc",
            "score",
            2,
            5,
        )
        s.finish_round_request(1, round_number=None, error="RuntimeError: gone", now=time.time())
        status = proj.training_progress()
        assert status.running is None and status.last_error == "RuntimeError: gone"
        assert s.progress_of("box:1:abc") is None  # a finished request's progress goes with it
