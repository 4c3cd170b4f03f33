"""Crash safety of the label store: a writer killed with SIGKILL at random moments never loses an acknowledged
batch, never leaves half a batch behind, and never corrupts the SQLite file.

A child process (importing only ``alwb.store``) commits label batches in a loop with ``Store.add_labels`` and prints
each batch's sequence number AFTER the commit returned. The parent kills it at a random moment (seeded), re-opens the
store (WAL recovery) and checks it, then restarts the child on the same store: at least 200 kills.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import make_label_store
from reliability_figures import REPO, report_figures
from store_checks import integrity_ok

from alwb.store import Store

KILLS = 200
BATCH = 10
N_ITEMS = 2000  # 200 slots of 10 items, labelled round-robin
SLOTS = N_ITEMS // BATCH
CLASSES = ("a", "b")
MAX_BATCHES_PER_CHILD = 20_000  # bounded even if a kill never came
TIME_BUDGET_S = 85.0

# The child: no site-packages (-S), only the standard library and alwb.store. Batch ``g`` labels slot ``g % SLOTS``
# with class ``(g // SLOTS) % 2``, so every batch changes every item it touches and writes exactly BATCH rows.
CHILD = f"""
import sys
from alwb.store import LabelRow, Store
path, start, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
slots, bs, classes = {SLOTS}, {BATCH}, {CLASSES!r}
store = Store(path)
out = sys.stdout
for g in range(start, start + limit):
    slot, cls = g % slots, classes[(g // slots) % 2]
    rows = [LabelRow(1 + slot * bs + j, cls) for j in range(bs)]
    store.add_labels(rows, batch_id="g%08d" % g)
    out.write("%d\\n" % g)
    out.flush()
"""


def _start_child(db: Path, start: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-S", "-c", CHILD, str(db), str(start), str(MAX_BATCHES_PER_CHILD)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _wait_for_acks(proc: subprocess.Popen[bytes], n: int, deadline: float) -> bytes:
    """Read the child's stdout until ``n`` complete lines arrived (or the deadline); return what was read."""
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while buf.count(b"\n") < n and time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
    finally:
        sel.close()
    return buf


def _check(db: Path, acked: set[int]) -> tuple[int, int]:
    """Re-open the store after a kill and check it; returns (batches committed, label rows checked)."""
    with Store(db) as s:
        assert integrity_ok(s), s.con.execute("PRAGMA integrity_check").fetchall()
        per_batch = dict(s.con.execute("SELECT batch_id, COUNT(*) FROM labels GROUP BY batch_id").fetchall())
        half = {b: n for b, n in per_batch.items() if n != BATCH}
        assert not half, f"half-written batches: {half}"
        committed = sorted(int(b[1:]) for b in per_batch)
        # batches are committed in order: no holes
        assert committed == list(range(len(committed))), "a batch is missing in the middle of the sequence"
        missing = acked - set(committed)
        assert not missing, f"acknowledged batches lost: {sorted(missing)[:10]}"
        n_rows = s.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        assert n_rows == BATCH * len(committed)
        dup = s.con.execute(
            "SELECT COUNT(*) FROM (SELECT item_id FROM labels WHERE superseded_at IS NULL"
            " GROUP BY item_id HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        assert dup == 0, "an item has two current labels"
        # each touched slot's current label is its last committed batch's
        if committed:
            last = committed[-1]
            slot = last % SLOTS
            cur = s.con.execute(
                "SELECT DISTINCT batch_id FROM labels WHERE superseded_at IS NULL AND item_id BETWEEN ? AND ?",
                (1 + slot * BATCH, (slot + 1) * BATCH),
            ).fetchall()
            assert [r[0] for r in cur] == [f"g{last:08d}"]
        return len(committed), n_rows


def test_sigkill_never_loses_or_tears_a_batch(tmp_path: Path) -> None:
    db = tmp_path / "alwb.sqlite"
    make_label_store(db, N_ITEMS, CLASSES)
    rng = np.random.default_rng(1234)
    acked: set[int] = set()
    kills = rows_checked = killed_before_first_ack = 0
    next_start = 0
    t0 = time.monotonic()
    while kills < KILLS:
        assert time.monotonic() - t0 < TIME_BUDGET_S, f"only {kills} kills in {TIME_BUDGET_S} s"
        proc = _start_child(db, next_start)
        try:
            if rng.random() < 0.5:  # a random moment after start (often during start-up)
                time.sleep(float(rng.uniform(0.0, 0.150)))
                out = b""
            else:  # a random moment after N acknowledgements
                out = _wait_for_acks(proc, int(rng.integers(1, 40)), time.monotonic() + 10.0)
                time.sleep(float(rng.uniform(0.0, 0.004)))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()  # no-op when already dead
            rest, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, f"child ended on its own ({proc.returncode}): {err.decode()[-2000:]}"
        out += rest
        lines = out.split(b"\n")[:-1]  # only complete lines: a batch is acknowledged once its line is whole
        got = {int(x) for x in lines}
        if not got:
            killed_before_first_ack += 1
        acked |= got
        kills += 1
        n_batches, n_rows = _check(db, acked)
        rows_checked += n_rows
        next_start = n_batches
    report_figures(
        tmp_path,
        "crash_safety",
        {
            "kills_survived": kills,
            "kills_before_first_ack": killed_before_first_ack,
            "batches_acknowledged": len(acked),
            "batches_committed": next_start,
            "label_rows_final": next_start * BATCH,
            "label_rows_checked_total": rows_checked,
            "seconds": round(time.monotonic() - t0, 1),
        },
    )
    assert kills >= KILLS and len(acked) > 0
