"""Pieces shared by pages: project guard, one-time messages, training status."""

from __future__ import annotations

import time

import streamlit as st

from alwb.errors import AlwbError
from alwb.progress import RunningRound, TrainingStatus
from alwb.project import Project
from ui import state
from ui.text import md_escape


def show_flash() -> tuple[str, str] | None:
    """Show the one-time message (and return it) in a slot that is on the page whether or not there is one.

    Streamlit places elements by position: a message that shows on one run and not the next would shift every
    element after it, and an open expander or a chosen tab after it would close (an upload inside it seemed lost).
    """
    slot = st.container()
    msg = state.flash()
    if msg:
        kinds = {"success": slot.success, "error": slot.error, "info": slot.info, "warning": slot.warning}
        kinds.get(msg[0], slot.info)(md_escape(msg[1]))
    return msg


def need_project(proj: Project | None) -> Project:
    """Stop the page with a pointer to Start when no project is open."""
    if proj is None:
        st.info("No project is open. Open or create one on the Start page.")
        st.stop()
    return proj


PHASES = {
    "train": "training",
    "score": "scoring the pool",
    "preparing": "preparing data",
    "starting": "starting",
    "embedding": "embedding the images",
    "waiting": "waiting for another job embedding the same images",
}


def show_training(status: TrainingStatus, root: str | None = None, device: str | None = None) -> None:
    """A progress bar while a round runs (here or on a training worker: one channel, :mod:`alwb.progress`); the error
    of a failed round. With ``root``, a project trained by workers that has none alive offers to train here instead
    ("Train here now")."""
    for r in status.reaped:  # failed by this very look: say so once, here
        st.warning(md_escape(f"Round request {r['id']} failed: {r['error']}"), icon="⚠️")
    run = status.running
    if run is not None and run.where == "worker":
        _show_remote(run)
    elif run is not None:
        frac = run.done / run.total if run.total else 0.0
        words = PHASES.get(run.phase, run.phase)
        st.progress(
            min(1.0, frac),
            text=f"Round in progress: {words} {run.done}/{run.total}" if run.total else f"Round in progress: {words}…",
        )
    elif status.waiting:  # a first round, started early, waits
        st.caption("The first model trains as soon as this batch is submitted (it is ready and waiting).")
    elif status.queued:
        n = status.workers
        st.info(
            f"Round queued for a training worker ({n} worker(s) running)."
            if n
            else "Round queued, but no training worker is running: the administrator starts one, or train it here "
            "in this web server's background process.",
            icon="⏳",
        )
        if not n and root is not None:
            _offer_here(root, device)
    last = status.last
    if run is not None:
        return
    if last is not None and last["status"] == "done":
        when = ago(last["finished_at"])
        st.caption(md_escape(f"Round {last['round']} trained by worker {last['worker']}, {when}."))
    if status.last_error:
        st.error(
            md_escape(
                f"The last training round failed; the previous model is still in use. Error: {status.last_error}"
            ),
            icon="⚠️",
        )
    if last is not None and last["worker"] and not status.queued and not status.workers:
        st.info(
            "No training worker is running now: the next round trains in this web server's background process.",
            icon="🛠️",
        )
        if root is not None:
            _offer_here(root, device)


def _offer_here(root: str, device: str | None) -> None:
    st.button("Train here now", key="train_here", on_click=_train_here, args=(root, device))


def _train_here(root: str, device: str | None) -> None:
    """Button callback: the round (a queued one, withdrawn from the queue) trains in this server's background."""
    from alwb.errors import AlwbError

    try:
        with Project.open(root) as proj:
            started = proj.request_training(device=device, requested_by=state.annotator(), take_queued=True)
    except AlwbError as exc:  # the store is unavailable
        state.flash(f"No round was started: {exc}", "error")
        return
    if started == "started":
        state.flash("Training started in this web server's background process; keep labeling.", "info")
    elif started == "queued":
        state.flash("A training worker is running again: the round is queued for it.", "info")
    else:
        state.flash("A training round is already running.", "info")


def _show_remote(run: RunningRound) -> None:
    """The round a training worker runs: phase, share done, which worker, how long since it was heard from."""
    words = PHASES.get(run.phase, run.phase)
    done, total = run.done, run.total
    step = f"{words} {done}/{total} ({done / total:.0%})" if total else f"{words}…"
    who = f"worker {run.worker}, heard from {run.age:.0f} s ago"
    st.progress(
        min(1.0, done / total if total else 0.0), text=md_escape(f"Round {run.round} in progress: {step} · {who}")
    )
    if run.silent:
        st.warning(
            md_escape(
                f"Worker {run.worker} has not been heard from for {run.age:.0f} s: if it stopped, its round "
                f"is failed in {run.fails_in or 0:.0f} s and the previous model stays in use."
            ),
            icon="⚠️",
        )


def ago(t: float | None) -> str:
    """'12 s ago' style."""
    if not t:
        return "never"
    d = max(0, time.time() - t)
    return f"{d:.0f} s ago" if d < 120 else f"{d / 60:.0f} min ago" if d < 7200 else f"{d / 3600:.0f} h ago"


#: Backbone names as a person reads them.
_BACKBONE_NAMES = {
    "dinov2_vits14": "DINOv2 ViT-S/14",
    "efficientnet_lite0": "EfficientNet-Lite0",
    "efficientnet_lite1": "EfficientNet-Lite1",
    "efficientnet_lite2": "EfficientNet-Lite2",
    "resnet18": "ResNet-18",
    "pool-simclr": "the features learned from these images",
}


def median_side(proj: Project) -> int | None:
    """The images' median shorter side in pixels (None without images), as the training plan reads it."""
    return proj.image_shape()[0]


def plan_sentence(proj: Project) -> tuple[str, str | None]:
    """What trains and why, in one plain sentence from the training plan (:meth:`alwb.project.Project.plan`), and what
    the person can do about it (None: nothing to do). No file names, commands, URLs or raw errors."""
    from alwb.learning.plan import SMALL_IMAGE_PX

    try:
        plan, _ = proj.plan()
    except AlwbError:
        return "How the model trains is decided at the first round.", None
    side, grey = proj.image_shape()
    if plan.mode is None or side is None:
        return "How the model trains is decided once the project has images.", None
    bb = _BACKBONE_NAMES.get(plan.backbone or "", plan.backbone or "")
    if plan.mode == "head":
        return (
            f"Each round fits a classifier on the features of the pretrained {bb} ({plan.input_size} px): a few "
            "seconds on this computer's processor, and good with few labels.",
            None,
        )
    if plan.mode == "finetune":
        return f"Each round fine-tunes the pretrained {bb} on your labels ({plan.input_size} px).", None
    if plan.weights_missing:
        what = "small colour images" if side <= SMALL_IMAGE_PX else "photos"
        return (
            f"These are {what} ({side} px), but no pretrained model is on this machine, so each round trains a "
            "small network from scratch: it needs many more labels to become good.",
            "An administrator can import a weights file on the Settings page.",
        )
    if side <= SMALL_IMAGE_PX and grey and plan.requested_mode == "auto":
        return (
            f"These images are small and greyscale ({side} px), so each round trains a small network from scratch "
            "on your labels: it learns them better than pretrained photo models do.",
            None,
        )
    return f"Each round trains a small network from scratch on your labels ({side} px images).", None
