"""The Settings page's "Features from these images" panel: start, watch and stop ``alwb pretrain`` (a process of
its own, so it outlives the page), then train on the backbone it made."""

from __future__ import annotations

import time

import streamlit as st

from alwb.errors import AlwbError
from alwb.learning import pretrain
from ui import state
from ui.text import md_escape
from ui.views import signin


def render(root: str) -> None:
    """Draw the panel for the project at ``root``."""
    st.subheader("Features from these images")
    st.caption(
        "Without pretrained weights, alwb can learn features from this project's own images (no label is read); "
        "rounds can then train on them. On a processor it takes many minutes and may help little: compare the "
        "Progress curves before and after."
    )
    _status(root)


@st.fragment(run_every=2.0)
def _status(root: str) -> None:
    if not signin.still_allowed("settings"):  # a fragment's rerun (its buttons too) skips app.py's gate
        return
    job = pretrain.job_status(root)
    s = job["state"]
    if s in pretrain.ACTIVE_STATES:
        total, step = int(job.get("total_steps") or 0), int(job.get("step") or 0)
        what = {"decoding": "reading the images", "embedding": "embedding every image"}.get(s, "training")
        loss = f", loss {job['loss']:.3f}" if job.get("loss") is not None else ""
        steps = f", step {step} of {total}" if total else " (getting ready)"
        st.progress(min(1.0, step / total) if total else 0.0, text=f"Pretraining: {what}{steps}{loss}")
        st.caption(f"Updated {time.time() - float(job.get('updated_at', 0)):.0f} s ago.")
        if st.button("Stop (keeps a checkpoint; start again to resume)"):
            pretrain.stop_background(root)
        return
    if s == "finished":
        st.success(
            f"pool-simclr is ready: {job.get('step')} steps in {float(job.get('seconds', 0)) / 60:.1f} min on "
            f"{job.get('images')} images (loss {job.get('loss')}). Choose it as the pretrained backbone with mode "
            "finetune (the whole small CNN trains, about as fast as from scratch) or head (a classifier on its "
            "features: under a second a round, but far weaker on CIFAR-10)."
        )
        c = st.columns(2)
        if c[0].button("Train on it: finetune mode", type="primary"):
            _use(root, "finetune")
        if c[1].button("Train on it: head mode"):
            _use(root, "head")
    elif s in ("failed", "lost"):
        st.error(md_escape(f"The last pretraining job {s}: {job.get('error', 'its process is gone')}"))
    elif s == "stopped":
        st.warning("The last pretraining job was stopped; starting it again resumes from its checkpoint.")
    with st.form("pretrain"):
        minutes = st.number_input("Minutes of training", min_value=0.05, max_value=1440.0, value=15.0, step=5.0)
        restart = st.checkbox("Start from scratch (discard the checkpoint)", value=s in ("finished", "failed"))
        if st.form_submit_button("Learn features from these images"):
            try:
                pretrain.start_background(root, minutes=float(minutes), restart=restart)
            except AlwbError as exc:
                st.error(md_escape(str(exc)))
            else:
                st.rerun()


def _use(root: str, mode: str) -> None:
    with state.open_project() as proj:
        if proj is None:
            return
        proj.set_train_config(mode=mode, backbone=pretrain.POOL_BACKBONE)
    state.flash(f"The next rounds train in {mode} mode on pool-simclr.")
    st.rerun()
