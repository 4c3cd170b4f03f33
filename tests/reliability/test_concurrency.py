"""Concurrent use of one store: 8 writer processes and a reader holding read transactions, and two browser "tabs"
labeling the same items.

This module stays light (no torch, numpy or pandas at import): the spawned processes import it to find their target.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
import traceback
from pathlib import Path

from conftest import make_label_store
from reliability_figures import report_figures
from store_checks import integrity_ok, label_history

from alwb.store import LabelRow, Store

WRITERS = 8
BATCHES = 50
BATCH = 10
PER_WRITER = BATCHES * BATCH
CLASSES = ("cat", "dog", "bird")
DEADLINE_S = 120.0


def _writer(db: str, w: int, go: mp.synchronize.Event, out: mp.Queue) -> None:
    """Label items ``w*500+1 .. (w+1)*500`` in 50 batches of 10, each through ``Store.add_labels``."""
    worst = 0.0
    try:
        go.wait(60)
        with Store(db) as s:
            for b in range(BATCHES):
                first = 1 + w * PER_WRITER + b * BATCH
                rows = [LabelRow(first + j, CLASSES[(first + j) % len(CLASSES)]) for j in range(BATCH)]
                t = time.perf_counter()
                n = s.add_labels(rows, batch_id=f"w{w}-b{b:02d}", annotator=f"writer{w}")
                worst = max(worst, time.perf_counter() - t)
                if n != BATCH:
                    raise AssertionError(f"writer {w} batch {b} wrote {n} rows")
        out.put(("done", w, worst))
    except BaseException as exc:  # every error goes back to the test, "database is locked" included
        out.put(("error", w, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def _reader(db: str, go: mp.synchronize.Event, stop: mp.synchronize.Event, out: mp.Queue) -> None:
    """Hold read transactions (full scans + ``current_labels``) until told to stop; check batch atomicity."""
    scans = longest = 0
    seen: list[int] = []
    try:
        go.wait(60)
        t_end = time.monotonic() + DEADLINE_S
        with Store(db) as s:
            while not stop.is_set() and time.monotonic() < t_end:
                t = time.perf_counter()
                s.con.execute("BEGIN")  # a read transaction: one snapshot for every statement inside
                try:
                    n = s.con.execute(
                        "SELECT COUNT(*) FROM labels l JOIN items i ON i.id = l.item_id"
                        " LEFT JOIN classes c ON c.id = l.class_id"
                    ).fetchone()[0]
                    current = s.current_labels()
                    time.sleep(0.3 if scans % 5 == 0 else 0.02)  # keep the snapshot open while writers commit
                    again = s.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
                finally:
                    s.con.execute("COMMIT")
                if n != again or len(current) != n:
                    raise AssertionError(f"snapshot moved inside a read transaction: {n}, {again}, {len(current)}")
                if n % BATCH:
                    raise AssertionError(f"a reader saw half a batch: {n} label rows")
                if seen and n < seen[-1]:
                    raise AssertionError(f"label count went down: {seen[-1]} -> {n}")
                seen.append(n)
                scans += 1
                longest = max(longest, time.perf_counter() - t)
        out.put(("reader", scans, longest, len(set(seen))))
    except BaseException as exc:
        out.put(("error", "reader", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def test_eight_writers_and_a_reader(tmp_path: Path) -> None:
    db = tmp_path / "alwb.sqlite"
    make_label_store(db, WRITERS * PER_WRITER, CLASSES)
    ctx = mp.get_context("spawn")
    go, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(db), go, stop, out))
    writers = [ctx.Process(target=_writer, args=(str(db), w, go, out)) for w in range(WRITERS)]
    procs = [reader, *writers]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    try:
        go.set()
        results: list[tuple] = []
        while sum(1 for r in results if r[0] in ("done", "error") and r[1] != "reader") < WRITERS:
            results.append(out.get(timeout=DEADLINE_S))
        writing_s = time.monotonic() - t0
        stop.set()
        results.append(out.get(timeout=30))
        for p in procs:
            p.join(30)
            assert p.exitcode == 0, f"{p.name} exit code {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    errors = [r for r in results if r[0] == "error"]
    assert not errors, "\n".join(str(e) for e in errors)
    locked = [r for r in results if "locked" in str(r).lower()]
    assert not locked
    (reader_result,) = [r for r in results if r[0] == "reader"]
    _, scans, longest_read, distinct_counts = reader_result
    assert scans > 0

    with Store(db) as s:
        assert integrity_ok(s)
        assert s.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == WRITERS * PER_WRITER
        assert len(s.current_labels()) == WRITERS * PER_WRITER
        per_batch = s.con.execute(
            "SELECT COUNT(DISTINCT batch_id), MIN(c), MAX(c) FROM "
            "(SELECT batch_id, COUNT(*) AS c FROM labels GROUP BY batch_id)"
        ).fetchone()
        assert tuple(per_batch) == (WRITERS * BATCHES, BATCH, BATCH)
        for w in range(WRITERS):
            got = s.con.execute("SELECT COUNT(*) FROM labels WHERE annotator=?", (f"writer{w}",)).fetchone()[0]
            assert got == PER_WRITER
    report_figures(
        tmp_path,
        "concurrency",
        {
            "writers": WRITERS,
            "label_rows": WRITERS * PER_WRITER,
            "writing_seconds": round(writing_s, 2),
            "worst_commit_seconds": round(max(r[2] for r in results if r[0] == "done"), 3),
            "reader_scans": scans,
            "reader_distinct_counts_seen": distinct_counts,
            "longest_read_transaction_seconds": round(longest_read, 3),
        },
    )


# ---------------------------------------------------------------------------- two tabs
def _current(s: Store) -> dict[int, str | None]:
    return {r["item_id"]: r["class"] for r in s.current_labels(include_none=True)}


def _max_current_per_item(s: Store) -> int:
    return s.con.execute(
        "SELECT COALESCE(MAX(c), 0) FROM (SELECT COUNT(*) AS c FROM labels WHERE superseded_at IS NULL"
        " GROUP BY item_id)"
    ).fetchone()[0]


def test_two_tabs_labeling_the_same_items_alternately(tmp_path: Path) -> None:
    db = tmp_path / "alwb.sqlite"
    make_label_store(db, 20, CLASSES)
    items = list(range(1, 21))
    with Store(db) as tab_a, Store(db) as tab_b:
        # each tab shows the items before anything is saved, then both answer them, one after the other
        tab_a.add_labels([LabelRow(i, "cat") for i in items], batch_id="a1")
        tab_b.add_labels([LabelRow(i, "dog") for i in items], batch_id="b1")
        assert _current(tab_a) == dict.fromkeys(items, "dog") == _current(tab_b)
        tab_a.add_labels([LabelRow(i, "bird") for i in items[:10]], batch_id="a2")
        tab_b.add_labels([LabelRow(i, None) for i in items[5:15]], batch_id="b2")  # "none of these"
        expect = {i: "bird" for i in items[:5]} | dict.fromkeys(items[5:15]) | dict.fromkeys(items[15:], "dog")
        assert _current(tab_a) == expect == _current(tab_b)
        assert _max_current_per_item(tab_a) == 1
        # the earlier answers stay in the history, in order
        assert [r["class"] for r in label_history(tab_a, 1)] == ["cat", "dog", "bird"]
        assert [r["class"] for r in label_history(tab_b, 7)] == ["cat", "dog", "bird", None]
        assert [r["batch_id"] for r in label_history(tab_b, 20)] == ["a1", "b1"]
        assert tab_a.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 20 + 20 + 10 + 10
        assert integrity_ok(tab_a)


def test_two_tabs_racing_on_the_same_items(tmp_path: Path) -> None:
    """Two connections (threads) answer the same 20 items 40 times each, at the same time."""
    db = tmp_path / "alwb.sqlite"
    make_label_store(db, 20, CLASSES)
    items = list(range(1, 21))
    errors: queue.Queue[str] = queue.Queue()
    start = threading.Barrier(2)

    def tab(cls: str, rounds: int) -> None:
        try:
            with Store(db) as s:
                start.wait(10)
                for k in range(rounds):
                    s.add_labels([LabelRow(i, cls) for i in items], batch_id=f"{cls}-{k}")
        except BaseException as exc:
            errors.put(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=tab, args=(c, 40)) for c in ("cat", "dog")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert errors.empty(), errors.get()
    with Store(db) as s:
        assert integrity_ok(s)
        assert _max_current_per_item(s) == 1 and len(_current(s)) == 20
        # the current label of each item is its newest row, every older row is superseded
        for i in items:
            hist = label_history(s, i)
            assert hist[-1]["superseded_at"] is None
            assert all(h["superseded_at"] is not None for h in hist[:-1])
            assert _current(s)[i] == hist[-1]["class"]
