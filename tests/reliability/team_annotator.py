"""One annotator of tests/reliability/test_team_postgres.py, run as its own process through the library:
``python team_annotator.py PROJECT NAME LABELS BATCH OUT [--retry]``.

It takes a leased batch (:func:`alwb.team.leases.team_batch`), answers it with the class in each file's name, saves it
in
one transaction (:meth:`alwb.project.Project.label`) and only after that call returned appends the acknowledged rows to
``OUT`` (JSON lines, flushed): ``{"kind": "lease", ...}`` before, ``{"kind": "ack", ...}`` after. With ``--retry`` a
call that raises :class:`~alwb.errors.StoreUnavailable` is written as ``{"kind": "unavailable", ...}`` and tried
again until the store is back; any other error ends the process with status 1. Stays light: no test imports.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    from alwb.errors import EmptyPoolError, StoreUnavailable
    from alwb.project import Project
    from alwb.team.leases import team_batch

    root, name, labels, batch, out = argv[0], argv[1], int(argv[2]), int(argv[3]), Path(argv[4])
    retry = "--retry" in argv
    log = out.open("a", encoding="utf-8")

    def write(kind: str, **data: Any) -> None:
        log.write(json.dumps({"kind": kind, "t": time.time(), **data}) + "\n")
        log.flush()

    def call(what: str, fn: Any) -> Any:
        """``fn()``; with ``--retry``, again after every StoreUnavailable (each one written down)."""
        while True:
            try:
                return fn()
            except StoreUnavailable as exc:
                if not retry:
                    raise
                write("unavailable", call=what, error=str(exc), type=type(exc).__name__)
                time.sleep(0.2)

    try:
        proj = call("open", lambda: Project.open(root))
        write("ready")
        done = k = 0
        while done < labels:
            t0 = time.time()
            try:
                res = call("batch", lambda n=min(batch, labels - done): team_batch(proj, name, n))
            except EmptyPoolError:
                write("empty")
                break
            ids = [it.id for it in res.items]
            write("lease", t0=t0, t1=time.time(), items=ids)
            rows = [(it.id, Path(it.path).name.split("_")[0]) for it in res.items]
            bid = f"{name}-{k:03d}"
            t2 = time.time()
            call("label", lambda rows=rows, bid=bid: proj.label(rows, annotator=name, batch_id=bid))
            write("ack", t2=t2, t3=time.time(), batch=bid, rows=rows)
            done += len(rows)
            k += 1
        proj.close()
        write("done", labels=done)
        return 0
    except BaseException as exc:
        write("error", error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
