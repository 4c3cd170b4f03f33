"""The Settings page's pretraining panel starts a real `alwb pretrain` process, shows its progress, stops it (a
checkpoint is kept), and turns the finished backbone into the project's training setting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_apptest import _fresh_streamlit, _project, ok, page  # noqa: F401 (_fresh_streamlit: autouse)

from alwb.learning import backbones
from alwb.learning.pretrain import POOL_BACKBONE, job_status
from alwb.project import Project


@pytest.fixture(autouse=True)
def _forget_the_backbone():
    yield
    backbones.unregister(POOL_BACKBONE)


def wait_for(root: Path, states: tuple[str, ...], timeout: float = 120.0) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        job = job_status(root)
        if job["state"] in states:
            return job
        time.sleep(0.5)
    log = (root / "backbones" / "pretrain.log").read_text() if (root / "backbones" / "pretrain.log").exists() else ""
    raise AssertionError(f"pretraining did not reach {states}: {job_status(root)}\n{log}")


def start(root: Path, minutes: float) -> None:
    at = page("settings", root)
    box = next(n for n in at.number_input if n.label == "Minutes of training")
    box.set_value(minutes)
    submit = next(b for b in at.button if b.label == "Learn features from these images")
    ok(submit.click().run())


def test_start_watch_and_use_the_pretrained_backbone(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    start(root, 0.05)
    job = wait_for(root, ("finished", "failed", "lost"))
    assert job["state"] == "finished", job
    at = page("settings", root)
    assert any("pool-simclr is ready" in s.value for s in at.success)
    ok(next(b for b in at.button if b.label == "Train on it: finetune mode").click().run())
    with Project.open(root) as proj:
        cfg = proj.train_config
        assert (cfg.mode, cfg.backbone) == ("finetune", POOL_BACKBONE)
        assert backbones.resolve_weights(POOL_BACKBONE, download=False).kind == "project"


def test_stop_keeps_a_checkpoint_that_a_new_start_resumes(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    start(root, 30)
    wait_for(root, ("running",))
    at = page("settings", root)
    assert at.get("progress"), "no progress bar while the job runs"
    ok(next(b for b in at.button if b.label.startswith("Stop")).click().run())
    job = wait_for(root, ("stopped", "failed", "lost"), timeout=60)
    assert job["state"] == "stopped", job
    assert (root / "backbones" / "pool-simclr.ckpt.pt").is_file()
    at = page("settings", root)
    assert any("resumes from its checkpoint" in w.value for w in at.warning)
