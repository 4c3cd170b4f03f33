"""Background training (alwb.jobs): one round at a time per project, decided by a lock that cannot go stale."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import make_shapes

from alwb.jobs import LOCK_FILE, TrainingBusy, is_training, read_progress, start_training, training_lock
from alwb.loop import Project


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
    assert read_progress(labeled)["phase"] == "done"
    assert not read_progress(labeled)["running"]


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


def test_training_lock_in_one_process_at_a_time(tmp_path: Path) -> None:
    root = tmp_path
    with training_lock(root):
        assert is_training(root)
        assert not start_training(root)
    assert not is_training(root)
