"""A 1,000-label session through the workbench's loop (query → label in batches of 20 by an oracle, a training round
every 250 labels): memory does not grow and the time from submitting a batch to seeing the next one does not drift.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
from conftest import make_shapes
from reliability_figures import report_figures

from alwb.project import Project

N_PER_CLASS = 400  # 1,200 images
BATCH = 20
TARGET_LABELS = 1000
TRAIN_EVERY = 250
RSS_GROWTH_LIMIT = 0.10
DRIFT_LIMIT = 1.5
DRIFT_SLACK_S = 0.02  # scheduling noise on a busy 2-core runner, far below anything a person notices (target 1 s)
TIME_BUDGET_S = 90.0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _settled_rss() -> int:
    gc.collect()
    return _rss_bytes()


def test_thousand_label_session(tmp_path: Path) -> None:
    t_start = time.monotonic()
    truth = make_shapes(tmp_path / "img", N_PER_CLASS, size=16, layout="flat", seed=21)
    p = Project.create(tmp_path / "proj", classes=["circle", "square", "triangle"])
    try:
        p.add_images(tmp_path / "img", progress=False, workers=1)
        p.set_train_config(num_threads=2)
        p.set_config(batch_size=BATCH)

        labelled = 0
        next_train = TRAIN_EVERY
        rounds = 0
        latencies: list[float] = []  # label() + query() per batch, after the first round
        train_seconds: list[float] = []
        rss_warm = None
        batch = p.query()
        while labelled < TARGET_LABELS:
            assert time.monotonic() - t_start < TIME_BUDGET_S, f"soak too slow: {labelled} labels"
            answers = [(it.id, truth[it.path]) for it in batch.items]
            t = time.perf_counter()
            _, written = p.label(answers)
            labelled += len(answers)
            if labelled >= next_train:  # a round between batches, as the workbench's "retrain every" does
                t_train = time.perf_counter()
                p.train(epochs=1, device="cpu")
                train_seconds.append(time.perf_counter() - t_train)
                rounds += 1
                next_train += TRAIN_EVERY
                if rss_warm is None:
                    rss_warm = _settled_rss()
                batch = p.query()
                continue  # the round is not part of the submit-to-next-batch time
            batch = p.query()
            if rss_warm is not None:
                latencies.append(time.perf_counter() - t)
            assert written == len(answers) and len(batch.items) == BATCH
        rss_end = _settled_rss()
        status = p.status()
    finally:
        p.close()

    assert status["items"]["labeled"] == TARGET_LABELS
    assert [r["status"] for r in status["rounds"]] == ["done"] * rounds and rounds == TARGET_LABELS // TRAIN_EVERY
    growth = (rss_end - rss_warm) / rss_warm
    lat = np.asarray(latencies)
    early = lat[5:15]
    late = lat[-10:]
    from scipy.stats import theilslopes

    slope = float(theilslopes(lat)[0])  # seconds per batch; robust to the odd slow batch on a shared runner
    figures = {
        "labels": TARGET_LABELS,
        "images": 3 * N_PER_CLASS,
        "rounds": rounds,
        "train_seconds": [round(s, 2) for s in train_seconds],
        "rss_mb_after_warmup": round(rss_warm / 2**20, 1),
        "rss_mb_end": round(rss_end / 2**20, 1),
        "rss_growth_pct": round(100 * growth, 2),
        "batches_timed": int(lat.size),
        "latency_ms_mean_batches_5_15": round(1000 * float(early.mean()), 2),
        "latency_ms_mean_last_10": round(1000 * float(late.mean()), 2),
        "latency_ms_median": round(1000 * float(np.median(lat)), 2),
        "latency_ms_max": round(1000 * float(lat.max()), 2),
        "latency_slope_ms_per_batch": round(1000 * slope, 4),
        "seconds": round(time.monotonic() - t_start, 1),
    }
    report_figures(tmp_path, "soak", figures)
    assert growth < RSS_GROWTH_LIMIT, figures
    assert np.median(late) <= DRIFT_LIMIT * np.median(early) + DRIFT_SLACK_S, figures
    # over the whole session the trend adds less than half the early mean
    assert slope * lat.size <= 0.5 * early.mean() + DRIFT_SLACK_S, figures
