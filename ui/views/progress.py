"""Progress: the honest accuracy curve, labels per class, confusion matrix, pseudo-labels, time per round."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from alwb.io.report import round_decisions
from alwb.learning.advice import LEVEL, Costs, advice_settings, advise, set_advice_settings
from ui import state
from ui.text import md_escape
from ui.views import disagreements, insight, signin
from ui.views.common import need_project, show_training

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
    from alwb.project import Project

    if not signin.still_allowed("progress"):  # a fragment's rerun skips app.py's gate
        return

    with Project.open(root) as proj:
        show_training(proj.training_progress(), root, proj.train_config.device)


@st.cache_data(max_entries=16, show_spinner=False)
def _advice(rounds_json: str, label_cost: float, point_value: float, target: float) -> dict:
    """:func:`alwb.learning.advice.advise` with the forecast's curve (cached: the bootstrap fit takes about a
    second)."""
    rounds = json.loads(rounds_json)
    return advise(rounds, costs=Costs(label_cost, point_value), target=target or None, band=True)


def _stop_advice(adv: dict, rounds_json: str, root: str, settings: dict, labeled: int) -> None:
    """What more labels would buy, whether the predictions have settled, the recommendation, labels to a target."""
    st.subheader("Label more?")
    say = st.success if adv["stop"] else st.info
    say(md_escape(adv["recommendation"][:1].upper() + adv["recommendation"][1:] + "."))
    if adv["forecast"]:
        rows = [
            {
                "labels": f"{r['labels']:,} (+{r['labels'] - labeled:,})",
                "validation accuracy (forecast)": f"{r['accuracy']:.1%}",
                f"{LEVEL:.0%} interval": f"{r['low']:.1%} – {r['high']:.1%}",
            }
            for r in adv["forecast"]
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        st.caption(
            "A learning curve fitted to the rounds above (dashed, with its band): the interval carries the fit's "
            "uncertainty and the validation sample's own noise. On recorded runs it held the test accuracy five "
            "rounds ahead in 77% of cases (89% on the packaged ImageNet features), but only about 30% on colour "
            "images trained from scratch while their curves still rose steeply (forecast too low), and it cannot "
            "see a test set that differs from the pool (docs/results.md)."
        )
    known = [k for k in adv["kappa"] if k is not None]
    if known:
        changed = [c for c in adv["changed"] if c is not None]
        st.caption(
            "Predictions on a fixed set of unlabeled items, round to round: Cohen's kappa "
            + ", ".join(f"{k:.3f}" for k in known[-5:])
            + (f"; {changed[-1]:.1%} of them changed last round." if changed else ".")
        )
    target = st.number_input(
        "Target validation accuracy (%)",
        min_value=0.0,
        max_value=99.9,
        value=round(settings["target"] * 100, 1),
        step=0.5,
        help="how many labels the fitted curve needs to reach it (0: none)",
    )
    if round(target / 100, 4) != round(settings["target"], 4):  # kept for the next visit and 'alwb status'
        from alwb.project import Project

        with Project.open(root) as proj:
            set_advice_settings(proj, target=target / 100)
    if target:
        res = _advice(rounds_json, 0.0, 0.0, target / 100)["target"]
        st.write(md_escape(f"Target: {res['sentence']}."))


def render() -> None:
    """Draw the page."""
    with state.open_project() as proj:
        proj = need_project(proj)
        st.title("Progress")
        _training_panel(str(proj.root))
        rounds = proj.reads.rounds()
        tally = proj.reads.counts()
        counts = tally.per_class
        classes = proj.classes
        n_pseudo_now, val_size, val_done = tally.pseudo, tally.val_size, tally.val_answered
        settings = advice_settings(proj)
    df = rounds_frame(rounds)
    st.caption(
        f"Validation sample: {val_done} of {val_size} item(s) labeled. The accuracy is measured on these; they "
        "are mixed into every batch (a team's too) until labeled and never trained on."
    )
    if df.empty:
        st.info("No round has finished yet: label a batch, then train (Label page).")
    else:
        _headline(df, rounds)
        _accuracy_chart(df, rounds, settings, str(proj.root))
        _time_and_pseudo_labels(df, n_pseudo_now)
        _confusion(rounds, classes)
    insight.leakage_panel(str(proj.root))
    _labels_per_class(counts, classes)
    disagreements.render_team_progress()


def _headline(df: pd.DataFrame, rounds: list) -> None:
    """The last round's figures, and what it chose by itself."""
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


def _accuracy_chart(df: pd.DataFrame, rounds: list, settings: dict, root: str) -> None:
    """Validation accuracy and macro-F1 by labels given, with the forecast and the stopping advice."""
    last = df.iloc[-1]
    st.subheader("Accuracy by labels given")
    st.caption(
        "Validation accuracy on a random sample of the pool that is never trained on; the band is its "
        "95% Wilson interval. Macro-F1 dashed. Hover a point for its round."
    )
    rounds_json = json.dumps(rounds, default=str)
    adv = _advice(rounds_json, settings["label_cost"], settings["point_value"], 0.0)
    fore = pd.DataFrame(adv["curve"], columns=["labels", "accuracy", "low", "high"])
    x = alt.X("labels:Q", title="training labels", axis=INT_AXIS)
    y_scale = alt.Scale(domain=score_domain(pd.concat([df, fore[["low", "high"]]])), zero=False)
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
    chart = band + lines
    if not fore.empty:  # the forecast: a dashed continuation of the curve with its band
        y = alt.Y("accuracy:Q", title="validation score", scale=y_scale)
        tip = [
            alt.Tooltip("labels:Q", title="training labels", format=",.0f"),
            alt.Tooltip("accuracy:Q", title="forecast accuracy", format=".3f"),
            alt.Tooltip("low:Q", title=f"{LEVEL:.0%} low", format=".3f"),
            alt.Tooltip("high:Q", title=f"{LEVEL:.0%} high", format=".3f"),
        ]
        chart += (
            alt.Chart(fore)
            .mark_area(opacity=0.12, color="gray")
            .encode(x=x, y=alt.Y("low:Q", title="validation score", scale=y_scale), y2="high:Q")
        )
        chart += alt.Chart(fore).mark_line(strokeDash=[6, 4], color="gray").encode(x=x, y=y, tooltip=tip)
    st.altair_chart(chart, width="stretch")
    _stop_advice(adv, rounds_json, root, settings, int(last.labels))


def _time_and_pseudo_labels(df: pd.DataFrame, n_pseudo_now: int) -> None:
    """Seconds per round by step, and pseudo-labels per round (no empty chart when there are none)."""
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
        if int(df["pseudo"].fillna(0).sum()) or n_pseudo_now:
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
        else:  # no empty chart
            st.caption("No pseudo-labels so far: they are off (Settings), or no image was confident enough.")


def _confusion(rounds: list, classes: list[str]) -> None:
    """The last finished round's confusion matrix on the validation sample."""
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


def _labels_per_class(counts: dict, classes: list[str]) -> None:
    """Labels per class by source."""
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
