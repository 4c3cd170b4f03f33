"""The Progress page and `alwb status` say what a round decided by itself and why: pseudo-labels turned off by their
validation check, and the strategy the budget-aware default (`auto`) chose next."""

from __future__ import annotations

from pathlib import Path

from test_apptest import _fresh_streamlit, _project, page  # noqa: F401 (_fresh_streamlit: autouse)

from alwb.io.report import format_status, round_decisions
from alwb.project import Project


def test_round_decisions_read_the_recorded_metrics() -> None:
    m = {
        "pseudo_check": {"use": False, "reason": "12/40 confident guesses right on the validation sample (19%–45%)"},
        "handover": {"use": "margin", "reason": "margin sampling since round 2", "since": 2},
    }
    assert round_decisions(m) == [
        "pseudo-labels off this round: 12/40 confident guesses right on the validation sample (19%–45%)",
        "auto strategy: margin sampling next; margin sampling since round 2",
    ]
    assert round_decisions({"val": {"n": 3}}) == []


def test_progress_page_says_why_pseudo_labels_were_off_and_what_auto_chose(tmp_path: Path) -> None:
    root, truth = _project(tmp_path)
    with Project.open(root) as proj:
        proj.set_config(strategy="auto", val_size=10)
        # on a backbone's features, where auto starts with typical items and probes when to hand over (E54)
        proj.set_train_config(pseudo=True, epochs=2, device="cpu", mode="head")
        proj.ensure_validation()
        val = proj.store.val_item_ids()
        pool = proj.store.unlabeled_item_ids(split="pool")[:15]
        proj.label([(i, truth[proj.store.item(i)["path"]]) for i in [*val, *pool]], annotator="t")
        proj.train()
        q = proj.query(9)
        proj.label([(it.id, truth[proj.store.item(it.id)["path"]]) for it in q.items], annotator="t")
        second = proj.train()
        metrics = second.metrics
        status = format_status(proj.status())
    assert metrics["pseudo_check"]["use"] is False and "the check needs" in metrics["pseudo_check"]["reason"]
    assert metrics["handover"]["use"] in ("margin", "typiclust")
    lines = round_decisions(metrics)
    assert len(lines) == 2 and all(line in status for line in lines)
    at = page("progress", root)
    captions = [c.value for c in at.caption]
    for line in lines:
        assert f"Round 2: {line}" in captions, captions
