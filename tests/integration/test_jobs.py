"""Background training (alwb.jobs): one round at a time per project, decided by a lock that cannot go stale."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import make_shapes

from alwb import jobs
from alwb.jobs import (
    ACTIVE_FILE,
    LOCK_FILE,
    TrainingBusy,
    give_way,
    is_training,
    local_runner,
    mark_active,
    start_training,
    training_lock,
)
from alwb.project import Project


@pytest.fixture
def labeled(tmp_path: Path) -> Path:
    truth = make_shapes(tmp_path / "shapes", 12, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=sorted(set(truth.values()))) as proj:
        proj.add_images(tmp_path / "shapes")
        proj.set_train_config(epochs=2, device="cpu")
        proj.label([(r["id"], truth[r["path"]]) for r in proj.store.items()])
    return root


def _wait_idle(root: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while is_training(root):
        assert time.monotonic() < deadline, "the background round did not finish"
        time.sleep(0.2)


def test_a_second_start_right_after_the_first_is_refused(labeled: Path) -> None:
    """The lock is taken before the child starts: no window in which a second submit starts a second round."""
    assert start_training(labeled)
    assert is_training(labeled)  # at once, while the child is still importing PyTorch
    assert not start_training(labeled)
    assert not start_training(labeled)
    with pytest.raises(TrainingBusy), training_lock(labeled):
        pass
    _wait_idle(labeled)
    with Project.open(labeled) as proj:
        rounds = proj.store.rounds()
    assert [r["status"] for r in rounds] == ["done"]
    assert "already running" not in (labeled / "train.log").read_text()
    with Project.open(labeled) as proj:  # the round's last report, in the store's one progress channel
        assert proj.store.progress_of(local_runner(labeled))["phase"] == "done"
        assert proj.training_progress().running is None


def test_the_lock_goes_with_a_killed_child(labeled: Path) -> None:
    assert start_training(labeled)
    pid = None
    deadline = time.monotonic() + 60
    while pid is None and time.monotonic() < deadline:  # the child writes its pid once it holds the lock itself
        text = (labeled / LOCK_FILE).read_text().strip()
        pid = int(text) if text else None
        time.sleep(0.05)
    assert pid is not None
    if hasattr(os, "SCHED_IDLE"):  # the round only takes CPU time the workbench does not want
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while is_training(labeled):
        assert time.monotonic() < deadline, "a killed round still holds the lock"
        time.sleep(0.05)
    assert start_training(labeled)  # and the next round can start
    _wait_idle(labeled)
    with Project.open(labeled) as proj:
        assert proj.store.rounds()[-1]["status"] == "done"


def test_the_first_round_runs_at_plain_nice_and_the_others_in_the_idle_class(labeled: Path) -> None:
    """A project without a model gets its first round sooner (docs/speed.md): ``start_or_queue`` asks for it with
    ``first``, the child runs at ``nice`` rather than in the idle class and gives way only after submits."""
    from alwb.team.worker import start_or_queue

    def child_pid() -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the child writes its pid once it holds the lock itself
            text = (labeled / LOCK_FILE).read_text().strip()
            if text:
                return int(text)
            time.sleep(0.05)
        raise AssertionError("the child never took the lock")

    with Project.open(labeled) as proj:
        assert start_or_queue(labeled, proj.store) == "started"
    pid = child_pid()
    if hasattr(os, "SCHED_IDLE"):
        assert os.sched_getscheduler(pid) != os.SCHED_IDLE
    assert "--first" in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")
    _wait_idle(labeled)
    (labeled / LOCK_FILE).write_text("")
    with Project.open(labeled) as proj:
        assert [r["status"] for r in proj.store.rounds()] == ["done"]
        assert start_or_queue(labeled, proj.store) == "started"  # a model exists now: an ordinary round
    pid = child_pid()
    if hasattr(os, "SCHED_IDLE"):
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    assert "--first" not in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")
    _wait_idle(labeled)


def test_retrain_if_due_requests_a_round_only_when_one_is_due_and_none_runs(labeled: Path) -> None:
    """Project.retrain_if_due holds the retrain policy the Label page applies after each submit."""
    with Project.open(labeled) as proj:
        proj.set_config(retrain_every=0)
        assert proj.retrain_if_due() is None  # only on request
        proj.set_config(retrain_every=5)
        assert proj.round_due() and proj.retrain_if_due() == "started"
        assert proj.retrain_if_due() is None  # one runs already
    _wait_idle(labeled)
    with Project.open(labeled) as proj:
        assert [r["status"] for r in proj.store.rounds()] == ["done"]
        assert not proj.round_due() and proj.retrain_if_due() is None  # no answer since that round


def test_training_lock_in_one_process_at_a_time(tmp_path: Path) -> None:
    root = tmp_path
    with training_lock(root):
        assert is_training(root)
        assert not start_training(root)
    assert not is_training(root)


# ---------------------------------------------------------------------- giving way to the person
def test_a_round_gives_way_for_a_moment_after_each_action(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``give_way`` sleeps until the last ``mark_active`` is ``window`` seconds old, and not at all otherwise."""
    slept: list[float] = []
    path = tmp_path / ACTIVE_FILE

    def fake_sleep(d: float) -> None:  # time passes: the action is now old
        slept.append(d)
        old = time.time() - 10
        os.utime(path, (old, old))

    monkeypatch.setattr(jobs.time, "sleep", fake_sleep)
    clock = iter(range(0, 10**6, 100))  # the round worked 100 s between looks: its share of pausing is never short
    monkeypatch.setattr(jobs.time, "monotonic", lambda: float(next(clock)))
    pause = give_way(tmp_path, window=1.5)
    pause()
    assert slept == []  # the workbench never marked anything: full speed
    mark_active(tmp_path)
    assert path.is_file()
    pause()
    assert len(slept) == 1 and 1.0 < slept[0] <= 1.5
    pause()
    assert len(slept) == 1  # the moment has passed
    half = time.time() - 1.0
    os.utime(path, (half, half))
    pause()
    assert len(slept) == 2 and 0.2 < slept[1] <= 0.5
    future = time.time() + 3600  # a clock set back never stops the round
    os.utime(path, (future, future))
    pause()
    assert len(slept) == 2


def test_a_round_calls_the_pause_between_training_steps_and_scoring_chunks(labeled: Path) -> None:
    calls = 0

    def pause() -> None:
        nonlocal calls
        calls += 1

    with Project.open(labeled) as proj:
        phases: list[str] = []
        proj.train(pause=pause, progress=lambda phase, done, total: phases.append(phase))
        n_items = proj.store.item_count()
        cfg = proj.train_config
    steps = cfg.epochs * -(-len(proj_labels(labeled)) // cfg.batch_size)
    assert calls >= steps + 1  # every training step, and at least one scoring chunk
    assert {"train", "score"} <= set(phases) and n_items > 0


def proj_labels(root: Path) -> list:
    with Project.open(root) as proj:
        return proj.store.current_labels(split="pool")


def test_steady_labeling_cannot_starve_a_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A person acting before every step (a key a second): the round still pauses at most ``share`` of its time
    plus one window, so its steps go on (before, it slept a window before each of them)."""
    clock = [0.0]
    slept: list[float] = []

    def fake_sleep(d: float) -> None:
        slept.append(d)
        clock[0] += d

    monkeypatch.setattr(jobs.time, "sleep", fake_sleep)
    monkeypatch.setattr(jobs.time, "monotonic", lambda: clock[0])
    pause = give_way(tmp_path, window=1.5, share=0.5)
    for _ in range(200):
        mark_active(tmp_path)  # the person acted just now
        pause()
        clock[0] += 0.1  # one training step
    total = clock[0]
    assert sum(slept) <= 0.5 * total + 1.5 + 1e-9
    assert sum(slept) >= 0.4 * total, "it still gives way about half of the time"
    assert total < 200 * 0.1 * 2.2, "200 steps took at most about twice their work"


def test_a_submit_is_given_its_window_whatever_the_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a submit the next batch is drawn: the round gives way for the window even when its share is used up."""
    clock = [0.0]
    slept: list[float] = []

    def fake_sleep(d: float) -> None:
        slept.append(d)
        clock[0] += d
        old = time.time() - 10  # time passes: the actions are old now
        for name in (ACTIVE_FILE, jobs.SUBMIT_FILE):
            if (tmp_path / name).exists():
                os.utime(tmp_path / name, (old, old))

    monkeypatch.setattr(jobs.time, "sleep", fake_sleep)
    monkeypatch.setattr(jobs.time, "monotonic", lambda: clock[0])
    pause = give_way(tmp_path, window=1.5, share=0.0)
    mark_active(tmp_path)
    pause()
    assert len(slept) == 1, "one window of grace"
    mark_active(tmp_path)
    pause()
    assert sum(slept[1:]) < 0.05, "a key press past the share: (almost) no pause"
    n = len(slept)
    mark_active(tmp_path, submit=True)
    pause()
    assert len(slept) == n + 1 and 1.0 < slept[n] <= 1.5, "a submit: its window whatever the share"


@pytest.fixture
def unlabeled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """A project with no labels yet, and the Label page's early start of the first round allowed."""
    monkeypatch.setenv("ALWB_PRESTART", "1")
    truth = make_shapes(tmp_path / "shapes", 12, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=sorted(set(truth.values()))) as proj:
        proj.add_images(tmp_path / "shapes")
        proj.set_train_config(epochs=2, device="cpu")
        proj.set_config(batch_size=8, retrain_every=50)
    return root, truth


def _mixed(proj: Project, truth: dict[str, str], n: int) -> list[tuple[int, str]]:
    """``n`` answers, the classes in turn (a round needs two classes among the pool's labels)."""
    by_class: dict[str, list[int]] = {}
    for r in proj.store.items():
        by_class.setdefault(truth[r["path"]], []).append(r["id"])
    turns = [(ids[i], c) for i in range(n) for c, ids in sorted(by_class.items())]
    return turns[:n]


def test_a_first_round_started_early_waits_for_the_first_batch_and_trains_on_its_submit(unlabeled) -> None:
    """The Label page starts the first round's process while the first batch is answered; it waits (phase ``ready``,
    the lock held, nothing trained) and the submit that makes a round due wakes it; it trains on those labels."""
    root, truth = unlabeled
    with Project.open(root) as proj:
        assert proj.prepare_first_round()
        assert is_training(root) and jobs.is_waiting(root, proj.store)
        assert not proj.prepare_first_round()  # one at a time
        assert proj.retrain_if_due() is None  # nothing answered yet: it keeps waiting
        time.sleep(2.5)  # longer than its own check of round_due: still waiting, no round recorded
        assert jobs.is_waiting(root, proj.store) and proj.training_progress().waiting
        assert proj.store.rounds() == []
        proj.submit(_mixed(proj, truth, 8), annotator="ann")  # the first batch (batch_size 8 < retrain_every)
        assert proj.round_due()
        assert proj.retrain_if_due() == "started"  # the page says so, and the waiting process trains
    _wait_idle(root)
    with Project.open(root) as proj:
        rounds = proj.store.rounds()
        assert [r["status"] for r in rounds] == ["done"]
        assert rounds[0]["n_labeled"] + len(proj.store.current_labels(split="val")) == 8
        assert not proj.prepare_first_round()  # a model exists: rounds start on submits as before
        assert proj.store.progress_of(local_runner(root))["phase"] == "done"
    assert "round 1:" in (root / "train.log").read_text()


def test_retrain_now_and_alwb_train_wake_a_waiting_first_round(unlabeled) -> None:
    """ "Retrain now" (request_training) and ``alwb train`` on the command line do not meet "already running" from
    a round that only waits: they wake it."""
    from alwb.cli import main

    root, truth = unlabeled
    with Project.open(root) as proj:
        proj.submit(_mixed(proj, truth, 4), annotator="ann")  # not due yet (4 < 8)
        assert not proj.round_due()
        assert proj.prepare_first_round()
        assert proj.request_training() == "started"
    _wait_idle(root)
    with Project.open(root) as proj:
        assert [r["status"] for r in proj.store.rounds()] == ["done"]
    root2 = root.parent / "proj2"
    with Project.create(root2, classes=sorted(set(truth.values()))) as proj:
        proj.add_images(root.parent / "shapes")
        proj.set_train_config(epochs=2, device="cpu")
        proj.set_config(batch_size=8)
        proj.submit(_mixed(proj, truth, 4), annotator="ann")
        assert proj.prepare_first_round()
    assert main(["train", str(root2)]) == 0
    _wait_idle(root2)
    with Project.open(root2) as proj:
        assert [r["status"] for r in proj.store.rounds()] == ["done"]


def test_a_waiting_first_round_ends_when_nobody_labels(unlabeled) -> None:
    """Nobody at the workbench for ``idle_exit`` seconds: the waiting process ends (its memory freed), trains
    nothing, and the next Label page may start another."""
    root, _ = unlabeled
    with Project.open(root) as proj:
        assert start_training(root, first=True, when_due=True, idle_exit=1.0, store=proj.store)
        assert proj.training_progress().waiting
    _wait_idle(root, timeout=60)
    with Project.open(root) as proj:
        assert not proj.training_progress().waiting and proj.training_progress().running is None
        assert proj.store.rounds() == []
        assert proj.prepare_first_round()  # another one, as the Label page would start
    jobs.stop_training(root)
    assert not is_training(root)
