"""Tables of finished simulations: mean ± std over seeds, and gains paired by seed over a baseline.

    python bench/research/compare_curves.py /work/scratch/sim/c10_scratch/curve.csv \\
        /work/scratch/sim/c10_ssl15_head/curve.csv --baseline random/plain --at 200,300,1000

Reads one or more ``curve.csv`` files that ``alwb simulate`` wrote (strategy, setting, seed, round rows), and prints
:func:`label_efficiency.table` and :func:`label_efficiency.paired` (95% t-interval of the mean per-seed
difference) at the label counts ``--at``. ``--csv FILE`` writes the merged rows (for ``bench/results/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from label_efficiency import paired, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("curves", nargs="+", type=Path)
    ap.add_argument("--baseline", default="random/plain", help="STRATEGY/SETTING the gains are measured against")
    ap.add_argument("--at", default="", help="comma-separated label counts (default: every one)")
    ap.add_argument("--metric", default="test_accuracy")
    ap.add_argument("--csv", type=Path, help="write the merged rows here")
    args = ap.parse_args()
    df = pd.concat([pd.read_csv(c) for c in args.curves], ignore_index=True)
    if args.csv:
        df.to_csv(args.csv, index=False)
    at = [int(x) for x in args.at.split(",") if x.strip()]
    pd.set_option("display.width", 200)
    t = table(df, args.metric)
    t = t[t["n_labeled"].isin(at)] if at else t
    print(t[["strategy", "setting", "n_labeled", "count", "value", "round_s"]].round(1).to_string(index=False))
    base = tuple(args.baseline.split("/", 1))
    p = paired(df, base, args.metric)  # type: ignore[arg-type]
    if at:
        p = p[p["n_labeled"].isin(at)]
    print(f"\ngain over {args.baseline}, paired by seed (95% t-interval):")
    print(p.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
