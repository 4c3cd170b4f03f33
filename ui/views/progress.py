"""Progress: the honest accuracy curve, labels per class, confusion matrix, pseudo-labels, time per round."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from alwb.report import round_decisions
from ui import state
from ui.views import disagreements, signin
from ui.views.common import need_project, show_training, training_status

#: Axes of counts: whole numbers only (Vega-Lite would otherwise print ticks such as 0.5 or 18.000000).
INT_AXIS = alt.Axis(format="d", tickMinStep=1)


def rounds_frame(rounds: list[dict]) -> pd.DataFrame:
    """One row per finished round with the plotted figures."""
    rows = []
    for r in rounds:
        if r["status"] != "done":
            continue
        val = r["metrics"].get("val") or {}
        t = r["timings"] or {}
        rows.append(
            {
                "round": r["number"],
                "labels": r["n_labeled"],
                "pseudo": r["n_pseudo"] or 0,
                "val_accuracy": val.get("accuracy"),
                "low": val.get("accuracy_low"),
                "high": val.get("accuracy_high"),
                "macro_f1": val.get("macro_f1"),
                "val_n": val.get("n") or 0,
                "train_s": t.get("train_seconds"),
                "score_s": t.get("score_seconds"),
                "round_s": t.get("round_seconds"),
            }
        )
    return pd.DataFrame(rows)


#: What the accuracy chart's legend says for each plotted column.
SCORES = {"val_accuracy": "accuracy", "macro_f1": "macro-F1"}
#: What the time chart's legend says for each part of a round.
PARTS = {"train_s": "train", "score_s": "score"}


def score_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The accuracy chart's lines, long form: ``labels``, ``round``, ``score`` (the legend's word), ``value``, and the
    round's ``low``, ``high`` and ``val_n``."""
    keep = ["round", "labels", "low", "high", "val_n"]
    long = df.melt(id_vars=keep, value_vars=list(SCORES), var_name="score", value_name="value")
    long["score"] = long["score"].map(SCORES)
    return long.dropna(subset=["value"])


def time_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The time chart's bars, long form: ``round``, ``part`` (``train`` or ``score``), ``seconds``."""
    long = df.melt(id_vars=["round"], value_vars=list(PARTS), var_name="part", value_name="seconds").dropna()
    long["part"] = long["part"].map(PARTS)
    return long


def score_domain(df: pd.DataFrame, *, pad: float = 0.02) -> list[float]:
    """The y-axis range of the accuracy chart: the plotted scores and intervals with a little room, within 0–1."""
    values = pd.concat([df[c] for c in ("low", "high", *SCORES) if c in df]).dropna()
    if values.empty:
        return [0.0, 1.0]
    low, high = float(values.min()) - pad, float(values.max()) + pad
    if high - low < 0.1:  # a single round or a flat curve: show ±5 points rather than one pixel
        mid = (low + high) / 2
        low, high = mid - 0.05, mid + 0.05
    return [round(max(0.0, low), 3), round(min(1.0, high), 3)]


@st.fragment(run_every=3)
def _training_panel(root: str) -> None:
    """The round in progress (here or on a training worker), redrawn every few seconds."""
    from alwb.loop import Project

    if not signin.still_allowed("progress"):  # a fragment's rerun skips app.py's gate
        return

    with Project.open(root) as proj:
        show_training(training_status(proj), root, proj.train_config.device)


def render() -> None:
    """Draw the page."""
    with state.open_project() as proj:
        proj = need_project(proj)
        st.title("Progress")
        _training_panel(str(proj.root))
        rounds = proj.store.rounds()
        counts = proj.store.label_counts()
        classes = proj.classes
        n_pseudo_now = len(proj.store.pseudo_labels())
        val_size = len(proj.store.val_item_ids())
        val_done = len(proj.store.current_labels(split="val", include_none=True))
    df = rounds_frame(rounds)
    st.caption(
        f"Validation sample: {val_done} of {val_size} item(s) labeled. The accuracy is measured on these; they "
        "are mixed into every batch (a team's too) until labeled and never trained on."
    )
    if df.empty:
        st.info("No round has finished yet: label a batch, then train (Label page).")
    else:
        last = df.iloc[-1]
        c = st.columns(4)
        c[0].metric(
            "Validation accuracy",
            "n/a" if pd.isna(last.val_accuracy) else f"{last.val_accuracy:.1%}",
            delta=None
            if len(df) < 2 or pd.isna(df.iloc[-2].val_accuracy) or pd.isna(last.val_accuracy)
            else f"{(last.val_accuracy - df.iloc[-2].val_accuracy) * 100:+.1f} pts",
        )
        c[1].metric("95% interval", "n/a" if pd.isna(last.low) else f"{last.low:.1%} – {last.high:.1%}")
        c[2].metric("Training labels", int(last.labels))
        c[3].metric("Validation labels", int(last.val_n))
        done = [r for r in rounds if r["status"] == "done"]
        for line in round_decisions(done[-1]["metrics"]) if done else []:  # what the round chose by itself, and why
            st.caption(f"Round {done[-1]['number']}: {line}")
        st.subheader("Accuracy by labels given")
        st.caption(
            "Validation accuracy on a random sample of the pool that is never trained on; the band is its "
            "95% Wilson interval. Macro-F1 dashed. Hover a point for its round."
        )
        x = alt.X("labels:Q", title="training labels", axis=INT_AXIS)
        y_scale = alt.Scale(domain=score_domain(df), zero=False)
        band = (
            alt.Chart(df)
            .mark_area(opacity=0.2)
            .encode(x=x, y=alt.Y("low:Q", title="validation score", scale=y_scale), y2="high:Q")
        )
        lines = (
            alt.Chart(score_frame(df))
            .mark_line(point=True)
            .encode(
                x=x,
                y=alt.Y("value:Q", title="validation score", scale=y_scale),
                color=alt.Color("score:N", title=None, sort=list(SCORES.values())),
                strokeDash=alt.StrokeDash("score:N", legend=None, sort=list(SCORES.values())),
                tooltip=[
                    alt.Tooltip("round:Q", title="round"),
                    alt.Tooltip("labels:Q", title="training labels"),
                    alt.Tooltip("score:N", title="score"),
                    alt.Tooltip("value:Q", title="value", format=".3f"),
                    alt.Tooltip("low:Q", title="accuracy 95% low", format=".3f"),
                    alt.Tooltip("high:Q", title="accuracy 95% high", format=".3f"),
                    alt.Tooltip("val_n:Q", title="validation labels"),
                ],
            )
        )
        st.altair_chart(band + lines, width="stretch")

        cols = st.columns(2)
        with cols[0]:
            st.subheader("Time per round")
            st.altair_chart(
                alt.Chart(time_frame(df))
                .mark_bar()
                .encode(
                    x=alt.X("round:O", axis=alt.Axis(labelAngle=0)),
                    y="seconds:Q",
                    color=alt.Color("part:N", title="step", sort=list(PARTS.values())),
                    tooltip=["round", "part", alt.Tooltip("seconds:Q", format=".1f")],
                ),
                width="stretch",
            )
        with cols[1]:
            st.subheader("Pseudo-labels per round")
            st.altair_chart(
                alt.Chart(df)
                .mark_bar()
                .encode(
                    x=alt.X("round:O", axis=alt.Axis(labelAngle=0)),
                    y=alt.Y("pseudo:Q", title="pseudo-labels", axis=INT_AXIS),
                ),
                width="stretch",
            )
            st.caption(f"{n_pseudo_now} pseudo-label(s) in use now.")
        done = [r for r in rounds if r["status"] == "done"]
        conf = (done[-1]["metrics"].get("val") or {}).get("confusion") if done else None
        if conf and len(conf) == len(classes):
            st.subheader("Confusion matrix (validation, last round)")
            cm = pd.DataFrame(
                [(t, p, conf[i][j]) for i, t in enumerate(classes) for j, p in enumerate(classes)],
                columns=["true", "predicted", "count"],
            )
            heat = (
                alt.Chart(cm)
                .mark_rect()
                .encode(
                    x=alt.X("predicted:N", sort=classes, axis=alt.Axis(labelAngle=0)),
                    y=alt.Y("true:N", sort=classes),
                    color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), legend=alt.Legend(format="d")),
                    tooltip=["true", "predicted", "count"],
                )
            )
            text = (
                alt.Chart(cm)
                .mark_text()
                .encode(x=alt.X("predicted:N", sort=classes), y=alt.Y("true:N", sort=classes), text="count:Q")
            )
            st.altair_chart((heat + text).properties(height=alt.Step(36)), width="stretch")
    st.subheader("Labels per class")
    lc = pd.DataFrame(
        [(c, src, n) for c, by in counts.items() for src, n in by.items()], columns=["class", "source", "labels"]
    )
    if lc.empty:
        st.caption("No labels yet.")
    else:
        st.altair_chart(
            alt.Chart(lc)
            .mark_bar()
            .encode(
                y=alt.Y("class:N", sort=classes),
                x=alt.X("labels:Q", axis=INT_AXIS),
                color="source:N",
                tooltip=["class", "source", "labels"],
            ),
            width="stretch",
        )
    disagreements.render_team_progress()
