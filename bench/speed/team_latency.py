"""Simulated annotators against one project: submit -> next batch latency, PostgreSQL against SQLite.

    python bench/speed/team_latency.py --annotators 20 --batches 15
    python bench/speed/team_latency.py --url postgresql://alwb@db-host/alwb_bench   # an existing, empty database
    python bench/speed/team_latency.py --path team                                   # the workbench's path only

Each annotator is a process that, BATCHES times, submits its leased batch and takes its next one; the time from the
submit to the next batch in hand is one sample, and p50 / p95 / max over every sample are printed per backend and
path. Two paths:

- ``store``: the store's part alone: ``Store.add_labels`` with the annotator's name (which also ends the leases),
  then ``leases.claim`` of BATCH items over the unlabeled pool.
- ``team``: what the Label page of a team does: ``leases.submit`` (the answers checked against the leases, one
  transaction), then ``leases.team_batch`` (the query: before any model a random ranking of the pool; the
  validation share leased first; overlap items waiting for a second answer). It also counts the validation items
  served and labeled per 100 answers, against one person's batch (``val_share`` of it: 25 per 100 by default).

The overlap share is at its default 10%. The validation sample is VAL_SIZE items (default 2,000: 10% of the pool,
beyond the 200 a project draws by itself, so that it lasts the whole run and the share can be read off every
batch). Without ``--url`` a throw-away PostgreSQL server is started as the tests do (tests/_postgres.py). Each
annotator waits THINK seconds between batches (default 0: a stress test).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alwb.project import Project
from alwb.store import LabelRow
from alwb.team import leases

CLASSES = ("a", "b", "c", "d")


def _store_annotator(root: str, me: str, batches: int, batch: int, think: float, out: mp.Queue) -> None:
    samples: list[float] = []
    with Project.open(root) as p:
        s = p.store
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
    out.put((samples, 0, 0, 0))


def _team_annotator(root: str, me: str, batches: int, batch: int, think: float, out: mp.Queue) -> None:
    from alwb.errors import EmptyPoolError

    samples: list[float] = []
    answers = served_val = refused = 0
    with Project.open(root) as p:
        res = leases.team_batch(p, me, batch)
        for b in range(batches):
            if think:
                time.sleep(think)
            served_val += sum(it.reason == "validation" for it in res.items)
            t = time.perf_counter()
            done = leases.submit(p, me, [(it.id, CLASSES[(it.id + b) % len(CLASSES)]) for it in res.items])
            answers += len(res.items)
            refused += len(done.refused)
            try:
                res = leases.team_batch(p, me, batch)
            except EmptyPoolError:
                break
            finally:
                samples.append(time.perf_counter() - t)
    out.put((samples, answers, served_val, refused))


def _prepare(root: Path, location: str | None, n_items: int, val_size: int) -> None:
    with Project.create(root, classes=list(CLASSES), store_url=location) as p:
        with p.store.transaction():
            p.store.con.executemany(
                "INSERT INTO items(path, sha256, size, width, height, status, added_at)"
                " VALUES(?, ?, 1, 28, 28, 'ok', 0)",
                [(f"/img/{i:06d}.png", f"{i:064x}") for i in range(n_items)],
            )
        p.set_config(val_size=val_size)
        p.ensure_validation()


def run(root: str, path: str, annotators: int, batches: int, batch: int, think: float) -> tuple[np.ndarray, ...]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    target = _team_annotator if path == "team" else _store_annotator
    procs = [
        ctx.Process(target=target, args=(root, f"ann{k:02d}", batches, batch, think, out)) for k in range(annotators)
    ]
    for p in procs:
        p.start()
    got = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join(60)
    samples = np.asarray([x for g in got for x in g[0]])
    return samples, *(np.asarray([g[k] for g in got]).sum() for k in (1, 2, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--batches", type=int, default=15, help="batches per annotator")
    ap.add_argument("--batch", type=int, default=16, help="items per batch")
    ap.add_argument("--items", type=int, default=20_000, help="items in the pool")
    ap.add_argument("--val-size", type=int, default=2_000, help="items in the validation sample")
    ap.add_argument("--think", type=float, default=0.0, help="seconds each annotator waits between batches")
    ap.add_argument("--path", choices=("store", "team", "both"), default="both")
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
    paths = ("store", "team") if args.path == "both" else (args.path,)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for path in paths:
                for name in ("postgresql", "sqlite"):
                    if name == "postgresql":
                        location = url if cluster is None else cluster.new_database("bench")
                        if cluster is None and path != paths[0]:
                            raise SystemExit("--url holds one run: give --path store or --path team")
                    else:
                        location = None
                    root = Path(tmp) / f"{path}-{name}"
                    _prepare(root, location, args.items, args.val_size)
                    t0 = time.perf_counter()
                    s, answers, served_val, refused = run(
                        str(root), path, args.annotators, args.batches, args.batch, args.think
                    )
                    wall = time.perf_counter() - t0
                    with Project.open(root) as p:
                        n_labels = p.store.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
                        val_labeled = len(p.store.current_labels(split="val", include_none=True))
                        one = math.ceil(args.batch * p.config.val_share)
                    line = (
                        f"{name:10s} {path:5s} {args.annotators} annotators x {args.batches} batches of {args.batch}: "
                        f"submit -> next batch p50 {np.percentile(s, 50) * 1000:.0f} ms, "
                        f"p95 {np.percentile(s, 95) * 1000:.0f} ms, max {s.max() * 1000:.0f} ms "
                        f"({len(s)} samples, {n_labels} labels in {wall:.1f} s)"
                    )
                    if path == "team":
                        line += (
                            f"; validation items per 100 answers: {100 * served_val / max(1, answers):.1f} served,"
                            f" {100 * val_labeled / max(1, answers):.1f} newly labeled"
                            f" (one person's batch: {100 * one / args.batch:.1f}); {refused} answers refused"
                        )
                    print(line, flush=True)
    finally:
        if cluster is not None:
            cluster.remove()


if __name__ == "__main__":
    main()
