"""Simulated annotators against the store: submit -> next batch latency, PostgreSQL against SQLite.

    python bench/speed/team_latency.py --annotators 20 --batches 15
    python bench/speed/team_latency.py --url postgresql://alwb@db-host/alwb_bench   # an existing, empty database

Each annotator is a process that, BATCHES times: submits its leased batch (``Store.add_labels`` with its name,
which also ends the leases), then takes its next batch (``leases.claim`` of BATCH items over the unlabeled pool, the
overlap share at its default 10%). The time from the submit to the next batch in hand is one sample; p50 / p95 /
max over every sample are printed per backend. This is the store's part of a submit (one transaction, the leases,
the pool read); the query's scoring of the pool (numpy over the cached scores) comes on top of it and is the same
for both backends. Without ``--url`` a throw-away PostgreSQL server is started as the tests do
(tests/_postgres.py). Each annotator waits THINK seconds between batches (default 0: a stress test).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alwb import leases
from alwb.store import LabelRow, Store

CLASSES = ("a", "b", "c", "d")


def _annotator(location: str, me: str, batches: int, batch: int, think: float, out: mp.Queue) -> None:
    samples: list[float] = []
    with Store(location) as s:
        held = leases.claim(s, me, s.unlabeled_item_ids(), batch)
        for b in range(batches):
            if not held:
                break
            if think:
                time.sleep(think)
            t = time.perf_counter()
            s.add_labels([LabelRow(i, CLASSES[(i + b) % len(CLASSES)]) for i in held], annotator=me)
            held = leases.claim(s, me, s.unlabeled_item_ids(), batch)
            samples.append(time.perf_counter() - t)
    out.put(samples)


def _prepare(location: str | Path, n_items: int) -> None:
    with Store(location, create=True) as s:
        s.add_classes(CLASSES)
        with s.transaction():
            s.con.executemany(
                "INSERT INTO items(path, sha256, size, width, height, status, added_at)"
                " VALUES(?, ?, 1, 28, 28, 'ok', 0)",
                [(f"/img/{i:06d}.png", f"{i:064x}") for i in range(n_items)],
            )


def run(location: str, annotators: int, batches: int, batch: int, think: float) -> np.ndarray:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_annotator, args=(location, f"ann{k:02d}", batches, batch, think, out))
        for k in range(annotators)
    ]
    for p in procs:
        p.start()
    samples = [x for _ in procs for x in out.get(timeout=900)]
    for p in procs:
        p.join(60)
    return np.asarray(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--batches", type=int, default=15, help="batches per annotator")
    ap.add_argument("--batch", type=int, default=16, help="items per batch")
    ap.add_argument("--items", type=int, default=20_000, help="items in the pool")
    ap.add_argument("--think", type=float, default=0.0, help="seconds each annotator waits between batches")
    ap.add_argument("--url", help="an empty PostgreSQL database (default: a throw-away server)")
    args = ap.parse_args()

    cluster = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
        from _postgres import Cluster, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("no PostgreSQL server binaries: give --url")
        cluster = Cluster(bindir)
        cluster.start()
        url = cluster.new_database("bench")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, location in (("postgresql", url), ("sqlite", str(Path(tmp) / "bench.sqlite"))):
                _prepare(location, args.items)
                t0 = time.perf_counter()
                s = run(location, args.annotators, args.batches, args.batch, args.think)
                wall = time.perf_counter() - t0
                with Store(location) as st:
                    n_labels = st.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
                print(
                    f"{name:10s} {args.annotators} annotators x {args.batches} batches of {args.batch}: "
                    f"submit -> next batch p50 {np.percentile(s, 50) * 1000:.0f} ms, "
                    f"p95 {np.percentile(s, 95) * 1000:.0f} ms, max {s.max() * 1000:.0f} ms "
                    f"({len(s)} samples, {n_labels} labels in {wall:.1f} s)",
                    flush=True,
                )
    finally:
        if cluster is not None:
            cluster.remove()


if __name__ == "__main__":
    main()
