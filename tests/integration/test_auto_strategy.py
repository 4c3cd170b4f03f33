"""The typicality strategy, ``auto`` and its hand-over, and pseudo-labels that check themselves, on real projects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_shapes

import alwb.learning.round
import alwb.learning.typicality
from alwb.io.report import format_status, query_status
from alwb.learning.round import check_pseudo, handover
from alwb.project import Project


def shapes_project(tmp_path: Path, n_per_class: int = 20, **train: object) -> tuple[Project, dict[int, str]]:
    truth = make_shapes(tmp_path / "shapes", n_per_class, layout="flat")
    proj = Project.create(tmp_path / "p", classes=["circle", "square", "triangle"])
    proj.add_images(tmp_path / "shapes")
    proj.set_train_config(epochs=1, device="cpu", **train)
    by_id = {int(r["id"]): truth[r["path"]] for r in proj.store.items()}
    return proj, by_id


def label_start(proj: Project, by_id: dict[int, str], n_pool: int = 12) -> None:
    val = proj.store.val_item_ids()
    first = proj.store.unlabeled_item_ids()[::4][:n_pool]
    proj.label([(i, by_id[i]) for i in [*val, *first]])


def test_typiclust_without_features_falls_back_to_random_and_says_so(tmp_path: Path) -> None:
    proj, _ = shapes_project(tmp_path)
    with proj:
        res = proj.query(6, "typiclust")
        pool = [it for it in res.items if it.reason != "validation"]
        assert pool and {it.reason for it in pool} == {"random"}
        assert res.note is not None and "no features yet" in res.note and "typiclust" in res.note


def test_typiclust_before_any_round_reads_what_the_insight_job_embedded(tmp_path: Path) -> None:
    """The dataset-insight job embeds the pool with the backbone and framing the first round will use, so a
    typical first batch needs no round (issue 35: E38's figures assumed a pool embedded before the first label)."""
    from alwb.insight import ensure_embeddings

    proj, _ = shapes_project(tmp_path, mode="head")
    with proj:
        assert proj.stored_geometry() is None
        plan, _ = proj.plan()
        assert plan.mode == "head" and plan.framing == "whole"  # 20 px shapes on the packaged backbone
        report = ensure_embeddings(proj)
        assert report is not None and report.embedded == len(proj.store.item_ids())
        res = proj.query(6, "typiclust")
        pool = [it for it in res.items if it.reason != "validation"]
        assert pool and {it.reason for it in pool} == {"typiclust"} and res.note is None


def test_typiclust_after_a_round_picks_distinct_unlabeled_pool_items_from_the_model_features(tmp_path: Path) -> None:
    proj, by_id = shapes_project(tmp_path)
    with proj:
        label_start(proj, by_id)
        proj.train()
        labeled = {r["item_id"] for r in proj.store.current_labels()}
        val = set(proj.store.val_item_ids())
        res = proj.query(8, "typiclust")
        pool = [it for it in res.items if it.reason != "validation"]
        assert pool and {it.reason for it in pool} == {"typiclust"} and res.note is None
        ids = [it.id for it in pool]
        assert len(set(ids)) == len(ids) and not set(ids) & (labeled | val)
        assert all(it.score is not None and it.score > 0 for it in pool)  # the typicality of each
        assert [it.id for it in proj.query(8, "typiclust").items] == [it.id for it in res.items]  # read-only


def test_auto_records_its_decision_with_each_round_and_queries_by_it(tmp_path: Path) -> None:
    proj, by_id = shapes_project(tmp_path, mode="head")
    with proj:
        assert proj.config.strategy == "auto"  # a new project's default (docs/experiments.md E54)
        label_start(proj, by_id)
        summary = proj.train()
        h = summary.metrics["handover"]
        # a handful of validation items: too few for the probe, so typical items go on
        assert h["use"] == "typiclust" and "needs" in h["reason"]
        assert any(n.startswith("auto strategy:") for n in summary.notes)
        assert proj.store.rounds()[-1]["metrics"]["handover"] == h
        assert proj.auto_strategy() == "typiclust"
        # `alwb status` says what auto uses now and why (the round's own reason)
        assert query_status(proj) == {"strategy": "auto", "uses": "typiclust", "why": h["reason"]}
        res = proj.query(6)
        assert res.strategy == "auto"
        assert {it.reason for it in res.items if it.reason != "validation"} == {"typiclust"}


def test_auto_is_margin_sampling_when_training_from_scratch(tmp_path: Path) -> None:
    """From scratch a typical first batch measured no better than random (E25, E30): ``auto`` is margin sampling
    there, with no probe in the rounds."""
    proj, by_id = shapes_project(tmp_path, mode="scratch")
    with proj:
        assert proj.config.strategy == "auto" and proj.auto_strategy() == "margin"
        first = proj.query(6)
        assert first.note is not None and "no model yet" in first.note
        assert {it.reason for it in first.items if it.reason != "validation"} == {"random"}
        label_start(proj, by_id)
        summary = proj.train()
        assert "handover" not in summary.metrics
        assert not any(n.startswith("auto strategy:") for n in summary.notes)
        res = proj.query(6)
        assert res.strategy == "auto" and res.note is None
        assert {it.reason for it in res.items if it.reason != "validation"} == {"margin"}
        st = {**proj.status(), "query": query_status(proj)}
        assert st["query"]["uses"] == "margin" and "trains from scratch" in st["query"]["why"]
        assert "query: auto, now margin: the model trains from scratch" in format_status(st)
        proj.set_config(strategy="entropy")
        assert query_status(proj) == {"strategy": "entropy", "uses": "entropy", "why": "highest predictive entropy"}


def test_handover_to_margin_is_measured_once_then_kept(tmp_path: Path) -> None:
    # 100 validation items (the probe's minimum) so that the probe runs on the round's own embeddings
    proj, by_id = shapes_project(tmp_path, n_per_class=50, mode="head")
    with proj:
        proj.set_config(val_size=alwb.learning.typicality.MIN_PROBE_VAL)
        proj.ensure_validation()
        label_start(proj, by_id, n_pool=15)
        summary = proj.train()
        h = summary.metrics["handover"]
        assert h["n_val"] == alwb.learning.typicality.MIN_PROBE_VAL
        assert h["typical_gain"] is not None and h["margin_gain"] is not None
        assert (h["use"] == "margin") == (h["margin_gain"] >= h["typical_gain"])
        # a round that handed over: later rounds keep margin sampling without probing again
        rnd = proj.store.rounds()[-1]
        number = proj.store.start_round("auto")
        proj.store.finish_round(
            number,
            model_path=rnd.get("model_path", "m"),
            arch="cnn6",
            config={},
            metrics={**rnd["metrics"], "handover": {**h, "use": "margin", "since": number}},
            timings={},
            n_labeled=rnd["n_labeled"],
            n_pseudo=0,
            n_val=rnd["n_val"],
        )
        assert proj.auto_strategy() == "margin"
        sc = proj.scores(rnd["number"])
        assert sc is not None
        ids = np.asarray(sorted(r["item_id"] for r in proj.store.current_labels(split="pool")), np.int64)
        y = np.asarray([proj.classes.index(by_id[int(i)]) for i in ids], np.int64)
        kept = handover(proj.round_inputs(), sc, ids, y, 3, number + 1)
        assert kept["use"] == "margin" and kept["since"] == number and f"since round {number}" in kept["reason"]


def test_pseudo_labels_are_off_until_the_validation_sample_trusts_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj, by_id = shapes_project(tmp_path, pseudo=True, pseudo_threshold=0.34, score_limit=0)
    with proj:
        label_start(proj, by_id)
        first = proj.train()
        assert first.metrics["pseudo_check"] == {"use": False, "reason": "no previous model to take them from"}
        assert any("pseudo-labels off this round: no previous model" in n for n in first.notes)
        # the check counts the previous model's confident guesses on the validation items and how many are right
        check = check_pseudo(proj.round_inputs(), proj.train_config)
        sc = proj.scores()
        assert sc is not None
        val = proj.store.current_labels(split="val")
        probs = sc.probs_at(sc.rows(np.asarray([r["item_id"] for r in val], np.int64)))
        truth = np.asarray([r["position"] for r in val])
        conf = probs.max(1) >= 0.34
        assert check["n"] == int(conf.sum()) and check["right"] == int((probs[conf].argmax(1) == truth[conf]).sum())
        assert not check["use"]  # a one-epoch model on a few shapes: too few confident guesses, or too often wrong
        second = proj.train()
        assert second.metrics["pseudo_check"]["use"] is False and proj.store.rounds()[-1]["n_pseudo"] == 0
        # the same project once the bar is low enough for this model: pseudo-labels join the round
        monkeypatch.setattr(alwb.learning.round, "PSEUDO_CHECK_MIN", 1)
        monkeypatch.setattr(alwb.learning.round, "PSEUDO_PRECISION", 0.0)
        third = proj.train()
        assert third.metrics["pseudo_check"]["use"] is True
        assert proj.store.rounds()[-1]["n_pseudo"] == len(proj.store.pseudo_labels()) > 0
