"""Time of a typical batch (the `auto` strategy's first batches): ``Project.query(n, "typiclust")`` on a project.

    python bench/speed/typical_query.py PROJECT [PROJECT ...] [-n 16] [--repeat 3]

Prints the median of ``--repeat`` queries per project, with the large-pool clustering of E56 (k-means and typicality
on a 64-d PCA of a 10,000-row sample, the product's) and without it (every row at full width, as before E56). The
query is read-only, so any project with an embedding cache (a head round, the insight job) or a finished round can be
timed, e.g. a run folder of ``alwb simulate`` on CIFAR-10.
"""

from __future__ import annotations

import argparse
import statistics
import time

import alwb.learning.typicality as typicality
from alwb.project import Project


def timed(root: str, n: int, repeat: int) -> float:
    """Median seconds of ``repeat`` typical queries of ``n`` items."""
    out = []
    with Project.open(root) as proj:
        for _ in range(repeat):
            t = time.perf_counter()
            res = proj.query(n, "typiclust")
            out.append(time.perf_counter() - t)
            if res.note:
                print(f"  note: {res.note}")
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("projects", nargs="+")
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    product = typicality.FIT_ROWS
    for root in args.projects:
        with Project.open(root) as proj:
            pool = len(proj.store.unlabeled_item_ids(split="pool"))
        typicality.FIT_ROWS = product
        sampled = timed(root, args.n, args.repeat)
        typicality.FIT_ROWS = 10**12
        full = timed(root, args.n, args.repeat)
        print(
            f"{root}: {pool:,} unlabeled pool items; typical batch of {args.n}: {sampled:.1f} s (product) against "
            f"{full:.1f} s (full width, every row)"
        )
    typicality.FIT_ROWS = product


if __name__ == "__main__":
    main()
